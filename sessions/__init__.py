"""VidXAI session files (`.vxs`, HDF5): the schema, crash-safe writing, annotations and exports.

Imports only the standard library, numpy and h5py, so the CLI and tests can read sessions without
torch or Qt. The schema is documented in sessions/SCHEMA.md.
"""

from sessions.export import export_csv, export_eaf, export_json
from sessions.store import (
    FORMAT_VERSION,
    Annotations,
    FaceTrack,
    Segment,
    Session,
    SessionError,
    SprayResult,
    Stage,
    Tier,
    Waveform,
)

__all__ = [
    "FORMAT_VERSION",
    "Annotations",
    "FaceTrack",
    "Segment",
    "Session",
    "SessionError",
    "SprayResult",
    "Stage",
    "Tier",
    "Waveform",
    "export_csv",
    "export_eaf",
    "export_json",
]

"""Files other tools read and write: OpenFace CSVs both ways, ELAN .eaf both ways, the corpus table.

Read back with the readers those tools' users have: pandas, pympi-ling (ELAN), xmlschema against ELAN's
own EAFv3.0 schema."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA
from test_cli import vidxai
from test_exports import CLASSES, CONDITIONS, TIMES, session  # noqa: F401  (the synthetic session fixture)

from sessions import Segment, Session, Tier, export_eaf
from sessions.elan import EafError, import_eaf, snap
from sessions.openface import OPENFACE_COLUMNS, OpenFaceError, export_openface, read_openface
from sessions.summary import session_row, write_summary

EAF_XSD = SHARED_DATA / "formats" / "EAFv3.0.xsd"


def eaf_schema():
    xmlschema = pytest.importorskip("xmlschema")
    if not EAF_XSD.exists():
        pytest.skip(f"ELAN schema not found at {EAF_XSD} (clone with ../shared/data beside the repo)")
    return xmlschema.XMLSchema(str(EAF_XSD))


# ------------------------------------------------------------------------------------------- OpenFace


def test_openface_csv_reads_as_openface_in_pandas(session: Session, tmp_path: Path) -> None:  # noqa: F811
    lm = np.random.default_rng(0).uniform(0, 300, (len(TIMES), 68, 2)).astype(np.float32)
    f = session.faces()  # the fixture's landmarks are zeros: give every frame distinct ones
    found = f.found
    session.write_faces(0, found, f.box, lm, f.confidence, f.n_faces, f.detected)
    session.commit()
    out = export_openface(session, tmp_path / "of.csv")
    head = out.read_text().splitlines()[0]
    assert head.startswith("frame, face_id, timestamp, confidence, success, x_0, x_1")  # OpenFace's spelling
    # the way OpenFace files are read: pandas with skipinitialspace (R: strip.white), or stripped names
    df = pd.read_csv(out, skipinitialspace=True)
    assert list(df.columns[:len(OPENFACE_COLUMNS)]) == OPENFACE_COLUMNS
    raw = pd.read_csv(out)
    raw.columns = raw.columns.str.strip()
    assert list(raw.columns) == list(df.columns)
    np.testing.assert_allclose(raw["x_67"], df["x_67"])
    assert len(df) == len(TIMES)
    assert list(df["frame"]) == list(range(1, len(TIMES) + 1))  # 1-based, as OpenFace
    np.testing.assert_allclose(df["timestamp"], np.round(TIMES, 3), atol=1e-9)
    assert list(df["success"]) == [int(f) for f in found]
    xs = df[[f"x_{i}" for i in range(68)]].to_numpy()
    ys = df[[f"y_{i}" for i in range(68)]].to_numpy()
    np.testing.assert_allclose(xs[found], lm[found, :, 0], atol=0.01)
    np.testing.assert_allclose(ys[found], lm[found, :, 1], atol=0.01)
    assert (xs[~found] == 0).all()  # OpenFace writes zeros where tracking failed
    # then ours: person, probabilities, EWMA, stage, occlusion deltas
    assert list(df.columns[len(OPENFACE_COLUMNS):]) == (
        ["person"] + [f"prob_{c}" for c in CLASSES] + [f"ewma_{c}" for c in CLASSES] + ["stage"]
        + [f"occlusion_delta_{c}" for c in CONDITIONS])
    assert df["prob_happy"][35] == pytest.approx(0.8) and np.isnan(df["prob_happy"][65])
    assert df["stage"][40] == "onset" and df["stage"][50] == "apex"
    assert df["occlusion_delta_eyes+nose"][5] == pytest.approx(-0.04, abs=1e-6)
    back = read_openface(out)
    np.testing.assert_array_equal(back.frame, np.arange(len(TIMES)))
    np.testing.assert_array_equal(back.success, found)
    np.testing.assert_allclose(back.landmarks[found], lm[found], atol=0.01)


def test_openface_reader_refuses_other_csvs(tmp_path: Path) -> None:
    bad = tmp_path / "other.csv"
    bad.write_text("index,time_s,face\n0,0.0,1\n")
    with pytest.raises(OpenFaceError, match=r"other\.csv.*lacks the column\(s\) frame"):
        read_openface(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(OpenFaceError, match="empty"):
        read_openface(empty)


def test_openface_round_trip_through_ingest(tmp_path: Path, hap_clip: Path) -> None:
    """Track a real clip, export OpenFace columns, ingest the same video from that CSV: same landmarks."""
    assert vidxai("ingest", hap_clip, "--out", tmp_path / "tracked").returncode == 0
    tracked = tmp_path / "tracked" / (hap_clip.stem + ".vxs")
    csv_path = tmp_path / "hap_openface.csv"
    r = vidxai("export", tracked, "--format", "openface", "--out", csv_path)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(csv_path, skipinitialspace=True)
    assert {"frame", "face_id", "timestamp", "confidence", "success", "x_0", "y_67"} <= set(df.columns)
    r = vidxai("ingest", hap_clip, "--out", tmp_path / "imported", "--landmarks", csv_path)
    assert r.returncode == 0, r.stderr
    with Session.open(tracked) as a, Session.open(tmp_path / "imported" / (hap_clip.stem + ".vxs")) as b:
        fa, fb = a.faces(), b.faces()
        assert fb.frames_done == b.frame_count == a.frame_count
        np.testing.assert_array_equal(fa.found, fb.found)
        assert fa.found.mean() > 0.9
        err = np.abs(fa.landmarks[fa.found] - fb.landmarks[fb.found]).max()
        assert err <= 0.01, err
        # the box is drawn from the landmarks as the tracker draws it
        np.testing.assert_allclose(fa.box[fa.found], fb.box[fb.found], atol=0.05)
        assert b.info()["people"][0]["frames"] == int(fa.found.sum())
    # a CSV of another video is refused in one line
    short = tmp_path / "short.csv"
    df.loc[len(df) - 1, "frame"] = 10_000
    df.to_csv(short, index=False)
    r = vidxai("ingest", hap_clip, "--out", tmp_path / "x", "--landmarks", short)
    assert r.returncode == 2 and "frame 10000" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------- ELAN


def test_eaf_export_validates_against_elan_schema(session: Session, tmp_path: Path) -> None:  # noqa: F811
    schema = eaf_schema()
    out = export_eaf(session, tmp_path / "clip.eaf")
    errors = [f"{e.reason} at {e.path}" for e in schema.iter_errors(str(out))]
    assert errors == []
    # what used to break it: a reviewer tier named like one of ours (tier ids must be unique), text with
    # characters XML cannot hold
    ann = session.annotations()
    ann.tiers.append(Tier("model decision"))
    ann.segments.append(Segment("model decision", 3, 9, "mine\x07 <&>"))
    session.save_annotations(ann)
    out = export_eaf(session, tmp_path / "clash.eaf")
    assert [f"{e.reason}" for e in schema.iter_errors(str(out))] == []
    pympi = pytest.importorskip("pympi")
    eaf = pympi.Elan.Eaf(str(out))
    assert set(eaf.get_tier_names()) == {"clinician", "empty tier", "model decision", "model decision (2)",
                                         "SpRAy stages"}
    assert eaf.get_annotation_data_for_tier("model decision")[0][2] == "mine <&>"


def test_eaf_from_pympi_imports_frame_snapped(session: Session, tmp_path: Path) -> None:  # noqa: F811
    """Two tiers made with pympi-ling (as ELAN would save them), times off the frame grid."""
    pympi = pytest.importorskip("pympi")
    eaf = pympi.Elan.Eaf(author="coder")
    eaf.add_tier("gaze", part="P1", ann="coder A")
    eaf.add_tier("affect")  # (and the document's empty "default" tier, which is left out)
    ms = np.round(TIMES * 1000).astype(int)
    eaf.add_annotation("gaze", int(ms[10]) + 4, int(ms[20]) - 6, "away")  # near frames 10 and 20
    eaf.add_annotation("gaze", int(ms[50]) - 7, int(ms[51]) + 2, "down")
    # end beyond the last frame's start: snaps to the end of the video
    eaf.add_annotation("affect", int(ms[95]) + 10, int(ms[99] + 40), "[disagree] calm")
    eaf.add_annotation("affect", 0, 3, "start")  # shorter than a frame: still one frame long
    path = tmp_path / "coded.eaf"
    eaf.to_file(str(path))
    before = session.annotations()
    tiers, segments = import_eaf(session, path)
    assert (tiers, segments) == (2, 4)
    ann = session.annotations()
    assert [t.name for t in ann.tiers] == ["clinician", "empty tier", "gaze", "affect"]
    new = [(s.tier, s.start_frame, s.end_frame, s.label, s.agreement, s.author)
           for s in ann.segments[len(before.segments):]]
    assert new == [("gaze", 10, 20, "away", "", "coder A"), ("gaze", 50, 51, "down", "", "coder A"),
                   ("affect", 95, 100, "calm", "disagree", ""), ("affect", 0, 1, "start", "", "")]
    # saved through the session: a reader sees them
    with Session.open(session.path) as r:
        assert len(r.annotations().segments) == len(before.segments) + 4
    assert import_eaf(session, path) == (0, 0)  # importing twice adds nothing


def test_snap_nearest_frame() -> None:
    t = np.array([0.0, 0.1, 0.3])
    assert [snap(t, x) for x in (-1, 0.04, 0.05, 0.06, 0.21, 5)] == [0, 0, 0, 1, 2, 2]


def test_eaf_round_trip_and_refusals(session: Session, tmp_path: Path) -> None:  # noqa: F811
    out = export_eaf(session, tmp_path / "clip.eaf")
    with Session.create(tmp_path / "fresh.vxs", {"path": "clip.mp4", "fps": 30.0, "frame_count": len(TIMES),
                                                 "width": 8, "height": 8}, TIMES) as fresh:
        import_eaf(fresh, out)
        got = fresh.annotations()
    want = session.annotations()
    assert [t.name for t in got.tiers] == ["clinician"]  # our computed tiers and empty ones are left out
    assert [(s.tier, s.start_frame, s.end_frame, s.label, s.note, s.agreement) for s in got.segments] == \
        [(s.tier, s.start_frame, s.end_frame, s.label, s.note, s.agreement) for s in want.segments]
    bad = tmp_path / "bad.eaf"
    bad.write_text("<html>not elan</html>")
    with pytest.raises(EafError, match="bad.eaf is not an ELAN file"):
        import_eaf(session, bad)
    r = vidxai("import-annotations", session.path, tmp_path / "missing.eaf")
    assert r.returncode == 2 and "missing.eaf" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------- corpus table


def test_summary_row(session: Session, tmp_path: Path) -> None:  # noqa: F811
    row = session_row(session)
    assert row["decision"] == "happy" and row["frames"] == len(TIMES)
    assert row["mean_prob_happy"] == pytest.approx((30 * 0.8 + 60 * 0.1) / 90)
    assert row["share_happy"] == pytest.approx(30 / 90) and row["share_anger"] == pytest.approx(60 / 90)
    assert row["annotations"] == 2 and row["agree"] == 1 and row["disagree"] == 0 and row["agreement_rate"] == 1
    assert row["face_found_fraction"] == pytest.approx(0.9)
    page = write_summary([row, {**row, "session": "<b>x&y</b>"}], tmp_path / "t.html").read_text()
    assert "&lt;b&gt;x&amp;y&lt;/b&gt;" in page and "<b>x" not in page


@pytest.fixture(scope="module")
def crema_sessions(tmp_path_factory: pytest.TempPathFactory, crema_clips: list[Path]) -> Path:
    """The six CREMA-D clips analysed by the default model (one `vidxai analyze` run)."""
    out = tmp_path_factory.mktemp("crema")
    r = vidxai("analyze", *crema_clips, "--out", out, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    return out


def test_summary_of_six_crema_sessions(crema_sessions: Path, tmp_path: Path) -> None:
    table = tmp_path / "table.csv"
    r = vidxai("summary", crema_sessions, "--out", table)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 6
    for row in rows:
        info = json.loads(vidxai("info", row["session"], "--json").stdout)
        assert row["decision"] == info["decision"] != ""
        assert int(row["stages"]) == len(info["stages"])
        assert float(row["face_found_fraction"]) == pytest.approx(info["face_found_frames"] / info["frame_count"])
        assert row["model"] == info["model"]
        classes = info["classes"]
        shares = [float(row[f"share_{c}"]) for c in classes]
        assert sum(shares) == pytest.approx(1.0, abs=1e-6)
        assert sum(float(row[f"mean_prob_{c}"]) for c in classes) == pytest.approx(1.0, abs=1e-4)
    r = vidxai("summary", *sorted(crema_sessions.glob("*.vxs")), "--out", tmp_path / "table.html")
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "table.html").read_text()
    assert page.count("<tr>") == 7 and "<script" not in page



def test_multi_face_openface_csv_gives_people(tmp_path: Path, hap_clip: Path) -> None:
    """A FaceLandmarkVidMulti-style CSV (several face_id per frame; OpenFace's own column spacing and
    columns we do not use): each face_id is a person, the one seen longest is analysed."""
    from engine.pipeline import ingest, landmark_box
    from engine.video import open_video

    with open_video(hap_clip) as r:
        T, ts = r.frame_count, r.timestamps
    rng = np.random.default_rng(1)
    base = rng.uniform(100, 200, (68, 2))
    lines = [", ".join(["frame", "face_id", "timestamp", "confidence", "success", "gaze_0_x"]
                       + OPENFACE_COLUMNS[5:] + ["AU01_r"])]
    for k in range(T):
        for fid, shift, present in ((3, 0.0, k < 10), (7, 150.0, True)):
            lm = base + [shift, 0] + k * 0.25
            lines.append(", ".join([str(k + 1), str(fid), f"{ts[k]:.3f}", "0.9", "1" if present else "0", "0.1"]
                                   + [f"{v:.3f}" for v in lm[:, 0]] + [f"{v:.3f}" for v in lm[:, 1]] + ["0.5"]))
    multi = tmp_path / "multi.csv"
    multi.write_text("\n".join(lines) + "\n")
    out = ingest(hap_clip, tmp_path / "m.vxs", landmarks=multi)
    with Session.open(out) as s:
        info = s.info()
        assert [(p["id"], p["frames"]) for p in info["people"]] == [(0, 10), (1, T)]
        assert info["person"] == 1  # face_id 7, on screen longest
        f = s.faces()
        assert f.found.all() and (f.n_faces[:10] == 2).all() and (f.n_faces[10:] == 1).all()
        np.testing.assert_allclose(f.landmarks[5], base + [150.0, 0] + 5 * 0.25, atol=0.001)
        np.testing.assert_allclose(f.box[5], landmark_box(f.landmarks[5]), atol=1e-4)
    out = ingest(hap_clip, tmp_path / "p0.vxs", landmarks=multi, person=0)
    with Session.open(out) as s:
        assert s.info()["person"] == 0 and s.faces().found.sum() == 10

"""Exports of a session: per-frame CSV, JSON summary and ELAN .eaf, read back with real parsers."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sessions import (
    Annotations,
    Segment,
    Session,
    SprayResult,
    Stage,
    Tier,
    export_csv,
    export_eaf,
    export_json,
)

CLASSES = ["anger", "happy", "sad"]
CONDITIONS = ["eyes", "nose", "mouth", "eyes+mouth", "eyes+nose", "nose+mouth", "eyes+nose+mouth"]
T = 100
# variable frame rate: frame times are not k / fps, so the exports must use the stored timestamps
TIMES = np.cumsum(np.where(np.arange(T) % 10 == 0, 0.05, 0.033)) - 0.05 + 0.0123


def predicted_class(k: int) -> int | None:
    if 60 <= k < 70:
        return None  # no face
    return 0 if k < 30 or k >= 70 else 1


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    video = tmp_path / "media" / "clip.mp4"
    video.parent.mkdir()
    video.write_bytes(b"not decoded here")
    s = Session.create(tmp_path / "clip.vxs", {"path": str(video), "fps": 30.0, "frame_count": T,
                                               "width": 320, "height": 240}, TIMES)
    found = np.array([predicted_class(k) is not None for k in range(T)])
    s.write_faces(0, found, np.zeros((T, 4)), np.zeros((T, 68, 2)), np.where(found, 0.9, 0.0), found)
    s.begin_analysis({"name": "cnn", "sha256": "00" * 32}, CLASSES, ["lrp"], 0.3)
    probs = np.full((T, 3), np.nan, np.float32)
    for k in range(T):
        c = predicted_class(k)
        if c is not None:
            probs[k] = 0.1
            probs[k, c] = 0.8
    occ = np.repeat(probs[:, None, :], 7, axis=1) - np.arange(7, dtype=np.float32)[None, :, None] / 100
    for start in (0, 50):  # two streamed chunks
        sl = slice(start, start + 50)
        s.write_scores(start, found[sl], np.log(probs[sl]), probs[sl])
        s.write_occlusion(start, occ[sl], CONDITIONS)
    labels = np.full(T, -1, np.int16)
    labels[30:60] = 0
    s.write_spray("happy", SprayResult(labels, [Stage(30, 45, "onset"), Stage(45, 60, "apex")],
                                       np.zeros((1, 8, 8), np.float16), 1, 0.5, 0.1, "onset→apex"))
    s.save_annotations(Annotations(
        [Tier("clinician"), Tier("empty tier")],
        [Segment("clinician", 5, 12, "frown", note="brow lowered", author="dr b", agreement="agree"),
         Segment("clinician", 40, 41, "smile")]))
    s.finish_analysis(np.nan_to_num(probs), 0.3, "happy")
    yield s
    s.close()


def test_csv_one_row_per_frame(session: Session, tmp_path: Path) -> None:
    out = export_csv(session, tmp_path / "frames.csv")
    df = pd.read_csv(out, keep_default_na=True)
    assert list(df.columns) == (["index", "time_s", "face", "face_confidence"]
                                + [f"prob_{c}" for c in CLASSES] + [f"ewma_{c}" for c in CLASSES]
                                + ["stage"] + [f"occlusion_delta_{c}" for c in CONDITIONS])
    assert len(df) == T
    assert df["index"].tolist() == list(range(T))
    np.testing.assert_allclose(df["time_s"], TIMES, atol=1e-6)
    assert df["face"].tolist() == [int(predicted_class(k) is not None) for k in range(T)]
    assert df["prob_happy"][40] == pytest.approx(0.8) and df["prob_anger"][40] == pytest.approx(0.1)
    assert df["prob_happy"][65] != df["prob_happy"][65]  # NaN: no face, no score
    assert df["stage"][30] == "onset" and df["stage"][59] == "apex" and df["stage"].isna()[[0, 60, 99]].all()
    # deltas: the predicted class's score under condition i was lowered by i/100
    for i, c in enumerate(CONDITIONS):
        assert df[f"occlusion_delta_{c}"][10] == pytest.approx(-i / 100, abs=1e-6)
    assert df["occlusion_delta_eyes"][62] != df["occlusion_delta_eyes"][62]


def test_json_summary(session: Session, tmp_path: Path) -> None:
    out = export_json(session, tmp_path / "summary.json")
    d = json.loads(out.read_text())
    assert d["classes"] == CLASSES and d["decision"] == "happy" and d["complete"]
    assert d["model"]["name"] == "cnn" and d["video"]["frame_count"] == T
    assert d["scored_frames"] == 90 and d["face_found_frames"] == 90
    assert d["mean_probs"]["happy"] == pytest.approx((30 * 0.8 + 60 * 0.1) / 90)
    assert d["mean_probs"]["sad"] == pytest.approx(0.1)
    assert d["class_stages"]["happy"] == [{"start": 30, "end": 45, "descriptor": "onset"},
                                    {"start": 45, "end": 60, "descriptor": "apex"}]
    assert d["annotation_count"] == 2 and d["tiers"] == ["clinician", "empty tier"]


def test_eaf_tiers_and_times(session: Session, tmp_path: Path) -> None:
    out = export_eaf(session, tmp_path / "clip.eaf")
    root = ET.parse(out).getroot()
    assert root.tag == "ANNOTATION_DOCUMENT" and root.get("FORMAT") == "3.0"
    assert [c.tag for c in root] == ["HEADER", "TIME_ORDER", "TIER", "TIER", "TIER", "TIER", "LINGUISTIC_TYPE"]
    media = root.find("HEADER/MEDIA_DESCRIPTOR")
    assert media.get("MEDIA_URL") == (tmp_path / "media" / "clip.mp4").as_uri()
    assert media.get("RELATIVE_MEDIA_URL") == "./media/clip.mp4" and media.get("MIME_TYPE") == "video/mp4"
    slots = {s.get("TIME_SLOT_ID"): int(s.get("TIME_VALUE")) for s in root.iter("TIME_SLOT")}
    tiers = {}
    for tier in root.findall("TIER"):
        tiers[tier.get("TIER_ID")] = [
            (slots[a.get("TIME_SLOT_REF1")], slots[a.get("TIME_SLOT_REF2")], a.findtext("ANNOTATION_VALUE"))
            for a in tier.iter("ALIGNABLE_ANNOTATION")]
    assert list(tiers) == ["clinician", "empty tier", "model decision", "SpRAy stages"]

    def ms(k: int) -> int:
        return round(TIMES[k] * 1000)

    assert tiers["clinician"] == [(ms(5), ms(12), "[agree] frown: brow lowered"), (ms(40), ms(41), "smile")]
    assert tiers["empty tier"] == []
    end = round((TIMES[-1] + 1 / 30) * 1000)
    assert tiers["model decision"] == [(ms(0), ms(30), "anger"), (ms(30), ms(60), "happy"),
                                       (ms(70), end, "anger")]
    assert tiers["SpRAy stages"] == [(ms(30), ms(45), "onset"), (ms(45), ms(60), "apex")]
    ids = [a.get("ANNOTATION_ID") for a in root.iter("ALIGNABLE_ANNOTATION")]
    assert len(set(ids)) == len(ids) == int(root.findtext("HEADER/PROPERTY"))


def test_failed_export_keeps_the_old_file(session: Session, tmp_path: Path) -> None:
    out = tmp_path / "frames.csv"
    out.write_text("previous export\n")
    session.close()
    with pytest.raises(Exception, match="closed"):
        export_csv(session, out)
    assert out.read_text() == "previous export\n"
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_exports_without_analysis(tmp_path: Path) -> None:
    with Session.create(tmp_path / "bare.vxs", {"path": "v.avi", "fps": 10.0, "frame_count": 5,
                                                "width": 8, "height": 8}, np.arange(5) / 10) as s:
        df = pd.read_csv(export_csv(s, tmp_path / "bare.csv"))
        assert list(df.columns) == ["index", "time_s", "face", "face_confidence", "stage"] and len(df) == 5
        assert json.loads(export_json(s, tmp_path / "bare.json").read_text())["decision"] == ""
        root = ET.parse(export_eaf(s, tmp_path / "bare.eaf")).getroot()
        assert root.findall("TIER") == []

"""engine.data: label parsers and settings, discovery, splits, the face-crop cache, the Dataset."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import (
    AugmentConfig,
    DataConfig,
    DataError,
    FaceDataset,
    SamplingConfig,
    SplitConfig,
    build_cache,
    discover,
    parse_crema,
    parse_ravdess,
    prepare,
    split,
)
from engine.data.labels import LABEL_SETTINGS
from engine.jobs import Cancelled, CancelToken

# RAVDESS emotion codes: 01 neutral 02 calm 03 happy 04 sad 05 angry 06 fearful 07 disgust 08 surprised.
EXPECTED = {  # code: (original, v1, v2); None = excluded
    "01": ("neutral", "neutral", "neutral"),
    "02": ("calm", "neutral", "neutral"),
    "03": ("happy", "positive", "positive"),
    "04": ("sad", "negative", "neutral"),
    "05": ("angry", "negative", "negative"),
    "06": ("fearful", None, None),
    "07": (None, None, None),
    "08": (None, None, None),
}


def test_parse_ravdess_name() -> None:
    n = parse_ravdess("01-01-03-02-01-01-12.mp4")
    assert (n.emotion, n.actor, n.intensity, n.modality) == ("happy", "12", "02", "01")
    assert parse_ravdess("/x/Actor_03/02-01-07-01-02-02-03.mp4").emotion == "disgust"
    for bad in ("01-01-09-02-01-01-12.mp4", "01-01-03-02-01-12.mp4", "happy.mp4"):
        with pytest.raises(DataError, match=bad.split("/")[-1]):
            parse_ravdess(bad)


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_ravdess_label_settings(code: str) -> None:
    path = Path(f"/data/01-01-{code}-01-01-01-07.mp4")
    for setting, want in zip(("ravdess-original", "ravdess-v1", "ravdess-v2"), EXPECTED[code]):
        labeler = LABEL_SETTINGS[setting].labeler
        assert labeler is not None
        label, subject = labeler(path)
        assert label == want, (setting, code)
        assert subject == "07"
        if want is not None:
            assert want in LABEL_SETTINGS[setting].classes


def _fake_ravdess(root: Path, actors: int = 24) -> None:
    # discover() reads names only, so empty files are a faithful stand-in for the clips.
    for a in range(1, actors + 1):
        d = root / f"Actor_{a:02d}"
        d.mkdir(parents=True)
        for emo in EXPECTED:
            for rep in ("01", "02"):
                (d / f"01-01-{emo}-01-01-{rep}-{a:02d}.mp4").touch()


def test_discover_ravdess_settings(tmp_path: Path) -> None:
    _fake_ravdess(tmp_path, actors=4)
    orig = discover(tmp_path)  # guessed from the names
    assert orig.label_setting == "ravdess-original"
    assert orig.classes == ["neutral", "calm", "happy", "sad", "angry", "fearful"]
    assert len(orig.items) == 4 * 6 * 2 and orig.excluded == 4 * 2 * 2
    assert {it.subject for it in orig.items} == {"01", "02", "03", "04"}
    assert all(it.kind == "video" for it in orig.items)
    disgust = [it for it in orig.items if "-07-" in Path(it.path).name]
    assert not disgust
    v1 = discover(tmp_path, "ravdess-v1")
    v2 = discover(tmp_path, "ravdess-v2")
    assert len(v1.items) == len(v2.items) == 4 * 5 * 2
    sad = {Path(it.path).name: it.label for it in v2.items if "-04-" in Path(it.path).name}
    assert set(sad.values()) == {"neutral"}
    assert {it.label for it in v1.items if "-04-" in Path(it.path).name} == {"negative"}
    with pytest.raises(DataError, match="fer2013"):
        discover(tmp_path, "fer2013")


def test_discover_crema_shared_clips(crema_dir: Path) -> None:
    corpus = discover(crema_dir)
    assert corpus.label_setting == "crema-d"
    assert corpus.classes == ["angry", "disgust", "fear", "happy", "neutral", "sad"]
    with open(crema_dir.parent / "manifest.csv") as f:
        intended = {
            Path(r["path"]).name: r["intended_label"] for r in csv.DictReader(f) if "crema-d" in r["path"]
        }
    got = {Path(it.path).name: it.label for it in corpus.items}
    assert got == intended and len(got) == 6
    assert {it.subject for it in corpus.items} == {"1001"}
    n = parse_crema("1001_DFA_ANG_XX.flv")
    assert (n.actor, n.sentence, n.emotion, n.level) == ("1001", "DFA", "angry", "XX")
    with pytest.raises(DataError, match="1001_DFA_XYZ_XX"):
        parse_crema("1001_DFA_XYZ_XX.flv")


def test_discover_fer_and_predefined_split(fer_dir: Path) -> None:
    corpus = discover(fer_dir)
    assert corpus.label_setting == "fer2013"
    assert corpus.classes == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert len(corpus.items) == 35887
    s1 = split(corpus, SplitConfig(seed=3))
    s2 = split(corpus, SplitConfig(seed=3))
    s3 = split(corpus, SplitConfig(seed=4))
    assert s1.method == "predefined"
    assert len(s1.test) == 7178 and len(s1.train) + len(s1.val) == 28709
    assert all(it.split == "test" for it in s1.test) and all(it.split == "train" for it in s1.val)
    assert [it.path for it in s1.val] == [it.path for it in s2.val]
    assert [it.path for it in s1.val] != [it.path for it in s3.val]
    assert not {it.path for it in s1.train} & {it.path for it in s1.val}
    # val is ~2/9 of train, stratified per class
    for c in corpus.classes:
        pool = sum(1 for it in corpus.items if it.label == c and it.split == "train")
        nval = sum(1 for it in s1.val if it.label == c)
        assert abs(nval - pool * 0.2 / 0.9) <= 1


def test_subject_split_disjoint_and_seeded(tmp_path: Path) -> None:
    _fake_ravdess(tmp_path)
    corpus = discover(tmp_path, "ravdess-v1")
    a = split(corpus, SplitConfig(seed=0))
    b = split(corpus, SplitConfig(seed=0))
    c = split(corpus, SplitConfig(seed=1))
    assert a.method == "subject"
    subj = {n: {it.subject for it in a[n]} for n in ("train", "val", "test")}
    assert (
        not subj["train"] & subj["val"]
        and not subj["train"] & subj["test"]
        and not subj["val"] & subj["test"]
    )
    assert (len(subj["train"]), len(subj["val"]), len(subj["test"])) == (17, 5, 2)  # 70/20/10 of 24 actors
    assert [it.path for it in a.test] == [it.path for it in b.test]
    assert {it.subject for it in c.test} != subj["test"] or {it.subject for it in c.val} != subj["val"]
    # discovery order must not matter
    corpus.items.reverse()
    assert [it.path for it in split(corpus, SplitConfig(seed=0)).test] == [it.path for it in a.test]
    r = split(corpus, SplitConfig(method="random", seed=0))
    assert len(r.train) + len(r.val) + len(r.test) == 240
    assert abs(len(r.train) - 168) <= 3 and abs(len(r.val) - 48) <= 3 and abs(len(r.test) - 24) <= 3
    for lab in corpus.classes:  # stratified: every class in every split
        assert all(any(it.label == lab for it in r[n]) for n in ("train", "val", "test"))
    assert {it.subject for it in r.test} & {it.subject for it in r.train}  # the thesis's split mixes actors


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 20), value, np.uint8)).save(path)


def test_folders_and_json_mapping(tmp_path: Path) -> None:
    for cls, v in (("cats", 10), ("dogs", 200)):
        for i in range(4):
            _png(tmp_path / "img" / cls / f"{i}.png", v + i)
    folders = discover(tmp_path / "img")
    assert folders.label_setting == "folders" and folders.classes == ["cats", "dogs"]
    with pytest.raises(DataError, match="subject"):
        split(folders, SplitConfig(method="subject"))
    assert split(folders).method == "random"

    mapping = {
        "classes": ["cats", "dogs"],
        "items": [
            {"path": f"img/{c}/{i}.png", "label": c, "subject": f"s{i}"}
            for c in ("cats", "dogs")
            for i in range(4)
        ],
    }
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    corpus = discover(tmp_path / "map.json")
    assert corpus.label_setting == "json" and len(corpus.items) == 8
    assert Path(corpus.items[0].path).is_file()
    s = split(corpus, SplitConfig(seed=0))
    assert s.method == "subject"
    assert not {it.subject for it in s.train} & {it.subject for it in s.test}
    mapping["items"][0]["label"] = "birds"
    (tmp_path / "bad.json").write_text(json.dumps(mapping))
    with pytest.raises(DataError, match="bad.json"):
        discover(tmp_path / "bad.json")


def _fer_items(fer_dir: Path, n_per_class: int):
    pd = prepare(DataConfig(str(fer_dir), max_per_class={"test": n_per_class}), {"size": 48})
    return pd.classes, pd.items("test")


def test_fast_cache_build_hit_and_resume(fer_dir: Path, tmp_path: Path) -> None:
    classes, items = _fer_items(fer_dir, 5)
    pp = {"mode": "face", "size": 32, "grayscale": True, "margin": 0.1, "occlude": [], "fill": 0}
    fast = SamplingConfig(fast=True)
    token = CancelToken()
    calls: list[int] = []

    def cancel_after_two_chunks(done: int, total: int, msg: str) -> None:
        calls.append(done)
        if done >= 10:
            token.cancel()

    with pytest.raises(Cancelled):
        build_cache(
            items, classes, pp, fast, tmp_path, chunk_size=5, progress=cancel_after_two_chunks, cancel=token
        )
    partial = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and len(list(partial[0].glob("*.json"))) == 2
    resumed: list[int] = []
    cache = build_cache(
        items, classes, pp, fast, tmp_path, chunk_size=5, progress=lambda d, t, m: resumed.append(d)
    )
    assert resumed[0] == 10  # the two finished chunks were not cropped again
    assert not partial[0].exists()
    assert cache.images.shape == (35, 32, 32, 1) and cache.images.dtype == np.uint8
    fresh = build_cache(items, classes, pp, fast, tmp_path / "other", chunk_size=7)
    np.testing.assert_array_equal(np.asarray(cache.images), np.asarray(fresh.images))
    np.testing.assert_array_equal(cache.labels, fresh.labels)
    assert [classes[lab] for lab in cache.labels] == [cache.source(i)["label"] for i in range(len(cache))]
    expected = np.asarray(
        Image.open(cache.source(3)["path"]).convert("L").resize((32, 32), Image.Resampling.BILINEAR)
    )
    np.testing.assert_array_equal(cache.images[3, :, :, 0], expected)
    meta = json.loads((cache.path / "meta.json").read_text())
    assert meta["sampling"]["fast"] is True and len(meta["items"]) == 35
    # the second build of the same inputs is a cache hit (same folder, nothing recomputed)
    again = build_cache(items, classes, pp, fast, tmp_path)
    assert again.path == cache.path
    for f in cache.path.glob("*.npy"):
        assert np.load(f, allow_pickle=False).dtype != object


def test_second_builder_waits_for_the_first_and_reuses_its_cache(fer_dir: Path, tmp_path: Path) -> None:
    """Two trainings started side by side ask for the same crops: the second must wait, not crop too
    (their shared ``.partial`` folder once made one of them crash)."""
    import shutil
    import time

    fcntl = pytest.importorskip("fcntl", reason="the build lock is POSIX flock")
    from engine.data.cache import cache_key, canonical_preprocess

    classes, items = _fer_items(fer_dir, 2)
    pp = {"mode": "face", "size": 32, "grayscale": True, "margin": 0.1, "occlude": [], "fill": 0}
    fast = SamplingConfig(fast=True)
    key = cache_key(items, classes, canonical_preprocess(pp), fast)
    holder = open(tmp_path / f"{key}.lock", "a+b")  # "another process" that is building the cache  # noqa: SIM115 - released mid-test
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
    messages: list[str] = []
    result: dict = {}
    waiter = threading.Thread(target=lambda: result.update(
        cache=build_cache(items, classes, pp, fast, tmp_path, progress=lambda d, t, m: messages.append(m))))
    waiter.start()
    deadline = time.monotonic() + 20
    while not any("waiting" in m for m in messages):
        assert time.monotonic() < deadline, "the second build did not wait for the lock"
        time.sleep(0.02)
    assert not (tmp_path / f"{key}.partial").exists()  # it has not started cropping
    # the holder finishes the same cache, then lets go
    other = build_cache(items, classes, pp, fast, tmp_path / "holder")
    shutil.copytree(other.path, tmp_path / key)
    fcntl.flock(holder.fileno(), fcntl.LOCK_UN)
    holder.close()
    waiter.join(20)
    assert not waiter.is_alive()
    assert result["cache"].path == tmp_path / key
    assert not any(m.startswith("cropping") for m in messages)
    np.testing.assert_array_equal(np.asarray(result["cache"].images), np.asarray(other.images))

    # waiting can be cancelled
    key2_items = items[:3]
    key2 = cache_key(key2_items, classes, canonical_preprocess(pp), fast)
    with open(tmp_path / f"{key2}.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        token = CancelToken()
        token.cancel()
        with pytest.raises(Cancelled):
            build_cache(key2_items, classes, pp, fast, tmp_path, cancel=token)


def test_real_crop_policy_matches_preprocess(fer_dir: Path, tmp_path: Path) -> None:
    from engine.faces import face_from_crop_image
    from engine.preprocess import PreprocessConfig, preprocess

    classes, items = _fer_items(fer_dir, 1)
    cfg = PreprocessConfig(size=48)
    cache = build_cache(items[:4], classes, cfg, SamplingConfig(), tmp_path, workers=1)
    assert cache.images.shape == (4, 48, 48, 1)
    for i in range(4):
        rgb = np.asarray(Image.open(cache.source(i)["path"]).convert("RGB"))
        direct = preprocess(rgb, face_from_crop_image(rgb), cfg)
        assert direct is not None
        np.testing.assert_array_equal(cache.images[i], direct.image)


def test_video_cache_samples_frames(crema_clips: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("engine.video", reason="engine.video not written yet")
    from engine.preprocess import PreprocessConfig

    corpus = discover(crema_clips[0].parent)
    cache = build_cache(
        corpus.items[:1],
        corpus.classes,
        PreprocessConfig(size=48),
        SamplingConfig(stride=10, max_frames=4),
        tmp_path,
    )
    assert 1 <= len(cache) <= 4
    assert all(f % 10 == 0 for f in cache.frame_index)
    assert (np.diff(cache.frame_index) > 0).all()


def test_dataset_augmentation_is_seeded_and_light() -> None:
    from engine.data import FaceCache

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 24, 24, 1), dtype=np.uint8)
    cache = FaceCache.from_arrays(images, np.arange(16) % 3, ["a", "b", "c"])
    plain = FaceDataset(cache)
    x, y = plain.__getitems__([5, 2, 9])
    np.testing.assert_array_equal(x.numpy(), images[[5, 2, 9]])
    assert y.tolist() == [2, 2, 0]
    flip_only = FaceDataset(cache, AugmentConfig(flip=True, shift=0.0, brightness=0.0))
    torch.manual_seed(1)
    a, _ = flip_only.__getitems__(list(range(16)))
    for i in range(16):
        assert np.array_equal(a[i], images[i]) or np.array_equal(a[i], images[i, :, ::-1])
    assert any(not np.array_equal(a[i], images[i]) for i in range(16))
    full = FaceDataset(cache, AugmentConfig())
    torch.manual_seed(7)
    b1, _ = full.__getitems__(list(range(16)))
    torch.manual_seed(7)
    b2, _ = full.__getitems__(list(range(16)))
    assert torch.equal(b1, b2)
    assert b1.dtype == torch.uint8 and b1.shape == (16, 24, 24, 1)
    assert np.array_equal(np.asarray(cache.images), images)  # the cache is never modified


def test_cache_cancel_from_thread_is_prompt(fer_dir: Path, tmp_path: Path) -> None:
    classes, items = _fer_items(fer_dir, 40)
    token = CancelToken()
    timer = threading.Timer(0.2, token.cancel)
    timer.start()
    try:
        with pytest.raises(Cancelled):
            # real crops with dlib: slow enough that the thread's cancel arrives mid-build
            build_cache(items, classes, {"size": 48}, SamplingConfig(), tmp_path, chunk_size=8, cancel=token)
    finally:
        timer.cancel()
    assert not [p for p in tmp_path.iterdir() if (p / "meta.json").exists()]  # no finished cache appeared


def test_tiff_and_pgm_corpora_are_read(fer_dir: Path, tmp_path: Path) -> None:
    """JAFFE ships as TIFF and some lab sets as PGM: a class folder of those is a corpus like any other,
    and its crops are the same pixels as the JPEG they were converted from."""
    _, items = _fer_items(fer_dir, 1)
    for it, ext in zip(items[:4], (".tif", ".tiff", ".pgm", ".webp"), strict=True):
        dst = tmp_path / "corpus" / it.label / (Path(it.path).stem + ext)
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.open(it.path).save(dst, **({"lossless": True} if ext == ".webp" else {}))
    corpus = discover(tmp_path / "corpus")
    assert sorted(Path(i.path).suffix for i in corpus.items) == [".pgm", ".tif", ".tiff", ".webp"]
    pp = {"mode": "face", "size": 32, "grayscale": True, "margin": 0.1, "occlude": [], "fill": 0}
    cache = build_cache(corpus.items, corpus.classes, pp, SamplingConfig(fast=True), tmp_path / "cache")
    assert len(cache) == 4
    for i in range(4):
        src = cache.source(i)["path"]
        jpg = next(p for p in items if Path(p.path).stem == Path(src).stem).path
        expected = np.asarray(Image.open(jpg).convert("L").resize((32, 32), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(cache.images[i, :, :, 0], expected)

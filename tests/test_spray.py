"""SpRAy clustering and temporal prototypes (METHODS §4; seed paper lrp-spray-temporal-prototypes)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from corelay.processor.affinity import SparseKNN
from corelay.processor.embedding import EigenDecomposition
from corelay.processor.laplacian import SymmetricNormalLaplacian
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from engine.explain.spray import (
    cluster_letter,
    knn_affinity,
    laplacian_spectrum,
    letter_by_first_appearance,
    prepare_maps,
    spectral_cluster,
    spray_video,
    stage_mean_maps,
    temporal_prototypes,
)


def _blob(cy: int, cx: int, size: int = 16, sigma: float = 2.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def three_templates(n_each: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy maps from three distinct blobs, interleaved in time; returns (maps, true labels)."""
    rng = np.random.default_rng(seed)
    templates = [_blob(4, 4), _blob(4, 11), _blob(12, 8)]
    truth = np.tile([2, 0, 1], n_each)  # first frame is template 2, so lettering must renumber
    maps = np.stack([templates[t] + 0.05 * rng.random((16, 16)) for t in truth])
    return maps, truth


def test_prepare_maps_pools_and_normalises() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((4, 70, 50))
    maps[1] = 0.0
    maps[2] *= -1.0
    feats = prepare_maps(maps, max_side=32)
    assert feats.shape == (4, 24 * 17)  # factor 3: 70→24, 50→17 (zero padded)
    assert np.allclose(feats[[0, 3]].sum(axis=1), 1.0)
    assert np.allclose(feats[2].sum(), -1.0)  # |sum| normalisation keeps the sign
    assert not feats[1].any()
    assert np.isclose(feats[0, 0] * maps[0].sum(), maps[0, :3, :3].sum())


def test_three_templates_eigengap_and_ari() -> None:
    maps, truth = three_templates()
    labels, k, eigenvalues = spectral_cluster(prepare_maps(maps), k_neighbors=10)
    assert k == 3
    assert adjusted_rand_score(truth, labels) == 1.0
    assert labels[0] == 0 and labels[1] == 1 and labels[2] == 2  # lettered by first appearance
    assert np.all(np.diff(eigenvalues) >= -1e-12) and abs(eigenvalues[0]) < 1e-8


def test_matches_corelay_pipeline() -> None:
    # Cross-check against CoRelAy's SpRAy processors on the same features.
    maps, truth = three_templates(seed=1)
    feats = prepare_maps(maps)
    dist = cdist(feats, feats)
    aff_ref = SparseKNN(n_neighbors=10, symmetric=True)(dist)
    ours = knn_affinity(feats, 10)
    assert abs(ours - aff_ref).max() < 1e-12
    norm_aff = SymmetricNormalLaplacian()(aff_ref)
    # CoRelAy returns 1 − μ for the largest μ of D^−½AD^−½, i.e. eigenvalues of I − D^−½AD^−½.
    ev_ref, vec_ref = EigenDecomposition(n_eigval=6, which="LA", normalize=True)(norm_aff)
    ev_ours, _ = laplacian_spectrum(ours, 6)
    assert np.allclose(np.sort(ev_ref), ev_ours, atol=1e-8)
    order = np.argsort(ev_ref)[:3]
    ref_labels = KMeans(n_clusters=3, n_init=10, random_state=0).fit_predict(vec_ref[:, order])
    labels, _, _ = spectral_cluster(feats)
    assert adjusted_rand_score(ref_labels, labels) == 1.0
    assert adjusted_rand_score(truth, ref_labels) == 1.0


def test_paper_toy_sequence_has_eight_stages() -> None:
    # Seed paper, Figure 2 and §3.4: 18 frames (0..17); AU02 has cluster A on frames 1-4 and
    # 12-15 and cluster B on frames 5-11; AU01 and AU04 have one cluster each. The AU01/AU04
    # onsets and offsets are not given in the text, so they are set to reproduce the stage list the
    # paper prints: AU01 on frames 2-13, AU04 on frames 2-8.
    t = 18
    au01 = np.zeros(t, bool)
    au01[2:14] = True
    au04 = np.zeros(t, bool)
    au04[2:9] = True
    au02 = np.zeros(t, bool)
    au02[1:16] = True
    au02_labels = np.full(t, -1)
    au02_labels[1:5] = 7  # arbitrary ids: lettering by first appearance must turn 7 into A
    au02_labels[5:12] = 3
    au02_labels[12:16] = 7
    tp = temporal_prototypes(
        {
            "AU01": (au01, np.where(au01, 0, -1)),
            "AU02": (au02, au02_labels),
            "AU04": (au04, np.where(au04, 5, -1)),
        }
    )
    expected = (
        "(NONE)→(AU02_A)→(AU01_A, AU02_A, AU04_A)→(AU01_A, AU02_B, AU04_A)→"
        "(AU01_A, AU02_B)→(AU01_A, AU02_A)→(AU02_A)→(NONE)"
    )
    assert tp.prototype == expected
    assert len(tp.stages) == 8
    # The paper says "only seven of them are unique since cluster AU02_A occurs twice"; (NONE) also
    # occurs twice in its own list, so the distinct descriptors number six.
    assert len({s.descriptor for s in tp.stages}) == 6
    assert [(s.start, s.end) for s in tp.stages] == [
        (0, 1), (1, 2), (2, 5), (5, 9), (9, 12), (12, 14), (14, 16), (16, 18)
    ]
    assert tp.reduction == pytest.approx(1 - 8 / 18)


def test_letters() -> None:
    assert letter_by_first_appearance([5, 5, 2, 9, 2, -1]) == ["A", "A", "B", "C", "B", ""]
    assert [cluster_letter(i) for i in (0, 25, 26, 27)] == ["A", "Z", "AA", "AB"]


def test_stage_mean_maps() -> None:
    maps = np.arange(4 * 2 * 2, dtype=float).reshape(4, 2, 2)
    means = stage_mean_maps(maps, np.array([0, 1, 0, -1]))
    assert set(means) == {0, 1}
    assert np.allclose(means[0], maps[[0, 2]].mean(0)) and np.allclose(means[1], maps[1])


def test_spray_video_end_to_end() -> None:
    maps, truth = three_templates(n_each=10)
    t = maps.shape[0]
    probs = np.zeros((t, 3))
    probs[:, 0] = 0.8  # "happy" predicted everywhere except a short "sad" stretch
    probs[10:12, 1] = 0.95
    probs[25:27] = np.nan  # no face
    res = spray_video(maps, probs, ["happy", "sad", "angry"], active="predicted")
    assert set(res.classes) == {"happy", "sad"}
    sad = res.classes["sad"]
    assert sad.k == 1 and sad.frames.tolist() == [10, 11]  # too few frames: a single cluster A
    happy = res.classes["happy"]
    assert happy.k == 3
    assert adjusted_rand_score(truth[happy.frames], happy.labels) == 1.0
    assert set(happy.mean_maps) == {"HAPPY_A", "HAPPY_B", "HAPPY_C"}
    assert res.prototypes.descriptors[10] == ("SAD_A",)
    assert res.prototypes.descriptors[25] == ("NONE",)
    assert res.prototypes.descriptors[0] == ("HAPPY_A",)
    assert res.prototypes.n_frames == t
    # Subsampled path: clustering a strided subset and assigning the rest gives the same partition.
    res_sub = spray_video(maps, probs, ["happy", "sad", "angry"], k_neighbors=4, max_frames=15)
    assert adjusted_rand_score(happy.labels, res_sub.classes["happy"].labels) == 1.0


# --- issue 14: temporal-neighbour term and minimum stage duration -------------------------------------


def test_temporal_affinity_joins_neighbours_within_runs_only() -> None:
    from engine.explain.spray import temporal_affinity

    times = np.array([0, 1, 2, 3, 10, 11, 12])  # the class is inactive on frames 4..9
    a = temporal_affinity(times, weight=0.7, radius=2).toarray()
    assert np.array_equal(a, a.T) and not np.diag(a).any()
    assert a[0, 1] == a[0, 2] == pytest.approx(0.7) and a[0, 3] == 0  # radius 2
    assert a[3, 4] == 0 and a[2, 4] == 0  # never across the gap
    assert a[4, 5] == a[4, 6] == pytest.approx(0.7)
    assert not temporal_affinity(times, weight=0.0).nnz
    # A strided subset (every 5th frame) is still joined: gaps are judged against the typical step.
    assert temporal_affinity(np.arange(0, 50, 5), 1.0, radius=1).nnz == 2 * 9


def test_temporal_term_makes_stages_contiguous() -> None:
    # Two templates in time (A for 20 frames, B for 20, A again) under heavy noise: the kNN graph alone
    # scatters labels over time; with the temporal term the clusters follow the three phases.
    from engine.explain.spray import stages_of

    truth = np.repeat([0, 1, 0], 20)
    plain, timed = [], []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        templates = [_blob(5, 6), _blob(5, 10)]
        feats = prepare_maps(np.stack([templates[t] + 0.6 * rng.normal(size=(16, 16)) for t in truth]))
        lab0, _, _ = spectral_cluster(feats, n_clusters=2, temporal_weight=0.0)
        lab2, _, _ = spectral_cluster(feats, n_clusters=2, temporal_weight=2.0)
        plain.append(len(stages_of([(str(x),) for x in lab0])))
        timed.append(len(stages_of([(str(x),) for x in lab2])))
        assert adjusted_rand_score(truth, lab2) >= 0.8  # the phases, give or take a frame or two at a boundary
    assert timed == [3, 3, 3]
    assert sum(plain) > sum(timed)


def test_toy_sequence_unchanged_with_temporal_settings_off() -> None:
    # METHODS §4's toy sequence: merging with min_stage_s = 0 keeps exactly its 8 stages, and a zero
    # temporal weight clusters exactly as plain SpRAy.
    from engine.explain.spray import merge_short_stages, stage_durations

    t = 18
    au01, au04, au02 = np.zeros(t, bool), np.zeros(t, bool), np.zeros(t, bool)
    au01[2:14], au04[2:9], au02[1:16] = True, True, True
    au02_labels = np.full(t, -1)
    au02_labels[1:5], au02_labels[5:12], au02_labels[12:16] = 7, 3, 7
    tp = temporal_prototypes({"AU01": (au01, np.where(au01, 0, -1)), "AU02": (au02, au02_labels),
                              "AU04": (au04, np.where(au04, 5, -1))})
    ts = np.arange(t) / 25.0
    rng = np.random.default_rng(0)
    sums = rng.random((len(tp.stages), 4))
    merged = merge_short_stages(tp.stages, sums, np.ones(len(tp.stages), int),
                                stage_durations(tp.stages, ts, 25.0), 0.0)
    assert merged == tp.stages and len(merged) == 8
    maps, _ = three_templates(n_each=10)
    feats = prepare_maps(maps)
    a = spectral_cluster(feats, temporal_weight=0.0)
    b = spectral_cluster(feats)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2])


def test_merge_short_stages() -> None:
    from engine.explain.spray import NONE, Stage, merge_short_stages, stage_durations

    # Stages (frames at 10 fps): A 0-10, B 10-11 (0.1 s, its map like C's), C 11-20, NONE 20-21 (no face),
    # A 21-40. min 0.3 s: B joins C (closest map), NONE joins the longer neighbour (A).
    stages = [Stage(0, 10, ("A",)), Stage(10, 11, ("B",)), Stage(11, 20, ("C",)), Stage(20, 21, (NONE,)),
              Stage(21, 40, ("A",))]
    a, c = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.2])
    sums = np.stack([10 * a, c + [0, 0, 0.1], 9 * c, np.zeros(3), 19 * a])
    counts = np.array([10, 1, 9, 0, 19])
    dur = stage_durations(stages, np.arange(40) / 10.0, 10.0)
    assert np.allclose(dur, [1.0, 0.1, 0.9, 0.1, 1.9])
    merged = merge_short_stages(stages, sums, counts, dur, 0.3)
    assert merged == [Stage(0, 10, ("A",)), Stage(10, 20, ("C",)), Stage(20, 40, ("A",))]
    # 1.05 s: B joins C (1.0 s), NONE joins A (2.0 s); then the first A (1.0 s, earliest of the two
    # shortest) has only C beside it and joins it.
    assert merge_short_stages(stages, sums, counts, dur, 1.05) == [Stage(0, 20, ("C",)), Stage(20, 40, ("A",))]
    # A short stage between two of one descriptor: the neighbours become one stage.
    st2 = [Stage(0, 5, ("A",)), Stage(5, 6, ("B",)), Stage(6, 12, ("A",))]
    out = merge_short_stages(st2, np.eye(3), np.ones(3, int), np.array([0.5, 0.1, 0.6]), 0.2)
    assert out == [Stage(0, 12, ("A",))]
    for m in (0.1, 0.3, 0.7):
        got = merge_short_stages(stages, sums, counts, dur, m)
        assert got[0].start == 0 and got[-1].end == 40
        assert all(x.end == y.start for x, y in itertools.pairwise(got))  # a partition of the frames
        d = stage_durations(got, np.arange(40) / 10.0, 10.0)
        assert len(got) == 1 or (d >= m - 1e-9).all()


def test_frame_stage_cosine() -> None:
    from engine.explain.spray import Stage, frame_stage_cosine

    maps = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # the last frame has no map
    read = lambda a, b: maps[a:b]
    assert frame_stage_cosine(read, [Stage(0, 2, ("A",)), Stage(2, 4, ("B",))]) == pytest.approx(1.0)
    one = frame_stage_cosine(read, [Stage(0, 4, ("A",))])
    mean = np.array([2.0, 1.0]) / np.sqrt(5)
    assert one == pytest.approx((2 * mean[0] + mean[1]) / 3)


def test_streamed_with_temporal_term_equals_whole_array() -> None:
    from engine.explain.spray import spray_streamed

    maps, _ = three_templates(n_each=40)
    probs = np.zeros((len(maps), 2))
    probs[:, 0] = 0.9
    probs[50:60] = np.nan
    whole = spray_video(maps, probs, ["happy", "sad"], temporal_weight=2.0, max_frames=60)
    streamed = spray_streamed(lambda a, b: maps[a:b], probs, ["happy", "sad"], temporal_weight=2.0, max_frames=60,
                              chunk=7)
    assert whole.prototypes.descriptors == streamed.prototypes.descriptors
    assert whole.classes["happy"].k == streamed.classes["happy"].k
    plain = spray_video(maps, probs, ["happy", "sad"], max_frames=60)
    assert len(whole.prototypes.stages) <= len(plain.prototypes.stages)

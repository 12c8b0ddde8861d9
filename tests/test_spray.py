"""SpRAy clustering and temporal prototypes (METHODS §4; seed paper lrp-spray-temporal-prototypes)."""

from __future__ import annotations

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

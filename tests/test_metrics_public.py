"""GED, diversity, HM-IoU and uncertainty NCC against the public LIDC evaluation code.

tests/test_sample_metrics.py checks the metrics against loops written here from their
definitions; this file checks them against the numbers the papers' own code gives on one shared
example, so a misreading of a definition shared by our code and our loops would still show. The
expected numbers are literal: each public function was copied into a scratch directory outside
this repository (no public code is in the project), run on the arrays below on 2026-12-04, and
its output written down. The sources (repository, commit, file, function):

- PHiSeg (Baumgartner et al. 2019), baumgach/PHiSeg-code @ 788d26e, utils.py:
  ``generalised_energy_distance`` (called as phiseg_test_quantitative.py calls it:
  ``nlabels=C - 1, label_range=range(1, C)``), ``variance_ncc_dist``; its ``medpy.metric.jc``
  taken from loli/medpy medpy/metric/binary.py.
- Stochastic Segmentation Networks, biomedia-mira/stochastic_segmentation_networks @ 38f2f90,
  evaluation/running_metrics/running_probability_distribution.py:
  ``calc_generalised_energy_distance`` (returns GED and both sets' diversities; ``np.bool``
  read as ``bool``, which numpy >= 1.24 requires).
- Probabilistic U-Net (Kohl et al. 2018), SimonKohl/probabilistic_unet @ 2238bdf,
  evaluation/eval_cityscapes.py: ``get_energy_distance_components`` + ``calc_energy_distances``
  (and utils/training_utils.py ``calc_confusion``, ``metrics_from_conf_matrix``).
- MoSE (Gao et al. 2023), gaozhitong/MoSE-AUSeg @ 3439311, utils/metrics.py:
  ``cal_metrics_batch`` (GED and the Hungarian-matched IoU; float32 inside, so its numbers
  agree to ~1e-7 only).

Conventions, and how our arguments map onto them:

- Classes. PHiSeg and SSN average 1 - IoU over every foreground class, a class absent from
  both maps counting as IoU 1; we (like the Probabilistic U-Net and MoSE with a label range)
  average over the classes present in either map only. No argument of ours reproduces the
  former with 3 classes, but their d is the mean over classes c of the binary d of the maps
  (map == c), and GED and diversity are linear in d: so their number is the mean over c of our
  metric on the one-vs-rest maps, which is what the tests compute. On binary maps the
  conventions coincide.
- Empty maps. PHiSeg, SSN and MoSE (binary) score two maps with no foreground at IoU 1
  (distance 0): our default ``empty_distance=0``; an empty map against a non-empty one is at
  IoU 0 in all. The Probabilistic U-Net (and MoSE with a label range) gives a pair with no
  evaluated class NaN, and GED with it: they are run on the three-class example only, where
  every map has foreground.
- Self-pairs. Every public GED includes the self-pairs in E[d(S, S')] and E[d(Y, Y')], as ours
  does. SSN's diversity is E[d(S, S')] over all S^2 ordered pairs, self-pairs included (each
  at 0); ours leaves them out, so SSN's number is ours times (S - 1) / S.
- Reference weights: the Probabilistic U-Net's ``probability_weighted`` GED with mode
  probabilities (0.75, 0.25) (from ``get_mode_statistics({"a": 0.25}, exp_modes=1)``) is ours
  with ``reference_weights=(0.75, 0.25)``.
- ignore_index: the Probabilistic U-Net takes one ``ignore_mask`` for all maps; we leave out a
  pixel that any reference marks, so their mask is the union of our references' marks.
- HM-IoU: MoSE tiles the annotations S / A times when A divides S and matches with
  ``linear_sum_assignment``; ours replicates both sets to lcm(S, A), the same when A divides S.
  When it does not, MoSE solves an optimal transport (``ot.emd``, POT, not run here): not tested.
- NCC: PHiSeg's arrays are (N, H, W, C) with one-hot annotations; ours (S, B, C, H, W) and
  label maps, eps = 1e-8 in both. Where the uncertainty map is constant PHiSeg does not give
  NaN but rounding noise (identical hard samples gave 1.06e-16 here; we give NaN): not tested.
"""

import numpy as np
import pytest
import torch

from cvae_seg import metrics

IGNORE = 255


def _maps(*rows):
    """Label maps from rows of digits: each argument one map, (N, H, W) int64."""
    return np.array([[[int(ch) for ch in row] for row in rows_] for rows_ in rows])


def _set(maps):
    """(N, H, W) -> (N, B=1, H, W) torch: one image, as the metrics take it."""
    return torch.from_numpy(np.asarray(maps))[:, None]


# ------------------------------------------------------------------------------ shared example
# Three classes, 6 x 6: sample 1 and annotator 1 have no class 2, sample 3 no class 1, so the
# class-averaging convention matters; every map has some foreground.
MULTI_SAMPLES = _maps(
    ["000000", "011000", "011020", "000022", "000000", "000000"],
    ["000000", "011100", "011100", "000000", "000000", "000000"],
    ["000000", "001000", "011022", "000222", "000000", "000000"],
    ["000000", "000000", "000020", "000020", "000000", "000000"],
)
MULTI_ANNOTATIONS = _maps(
    ["000000", "011000", "011020", "000020", "000000", "000000"],
    ["000000", "011100", "011000", "010000", "000000", "000000"],
)
# Binary (LIDC-like), 6 x 6: sample 3 and annotator 3 are empty.
BINARY_SAMPLES = _maps(
    ["000000", "011100", "011100", "011000", "000000", "000000"],
    ["000000", "001100", "011110", "001100", "000000", "000000"],
    ["000000", "000000", "001100", "001100", "000000", "000000"],
    ["000000"] * 6,
)
BINARY_ANNOTATIONS = _maps(
    ["000000", "011000", "011100", "011100", "000000", "000000"],
    ["000000", "001110", "001110", "000100", "000000", "000000"],
    ["000000", "000000", "001100", "000000", "000000", "000000"],
    ["000000"] * 6,
)
# Annotator 0 leaves out row 0 (background everywhere) and (1, 3) (class 1 in sample 1 and
# annotator 1); annotator 1 leaves out (2, 4) (class 2 in samples 0, 2, 3 and annotator 0).
MULTI_ANNOTATIONS_IGNORED = MULTI_ANNOTATIONS.copy()
MULTI_ANNOTATIONS_IGNORED[0, 0, :] = IGNORE
MULTI_ANNOTATIONS_IGNORED[0, 1, 3] = IGNORE
MULTI_ANNOTATIONS_IGNORED[1, 2, 4] = IGNORE

# Soft samples for the NCC: sample i puts (1 + k_i) / (C + k_i) on its label and 1 / (C + k_i)
# on every other class, k = 1, 2, 4, 8 (its confidence grows with i).
SHARPNESS = np.array([1, 2, 4, 8])


def _soft_probs(maps, num_classes):
    """(S, H, W) labels -> (S, C, H, W) probabilities, by the rule above."""
    one_hot = np.eye(num_classes)[maps].transpose(0, 3, 1, 2)
    k = SHARPNESS[: len(maps), None, None, None]
    return (1 + k * one_hot) / (num_classes + k)


def _hard_probs(maps, num_classes):
    """(S, H, W) labels -> (S, C, H, W) one-hot: zero probabilities, finite only through eps."""
    return np.eye(num_classes)[maps].transpose(0, 3, 1, 2).astype(np.float64)


CASES = {
    "multi": (MULTI_SAMPLES, MULTI_ANNOTATIONS, 3),
    "binary": (BINARY_SAMPLES, BINARY_ANNOTATIONS, 2),
    "binary_2_annotators": (BINARY_SAMPLES, BINARY_ANNOTATIONS[:2], 2),
}

# ------------------------------------------------------------------------------ public numbers
# All run 2026-12-04 on the arrays above; sources in the module docstring.
# PHiSeg utils.generalised_energy_distance(s, y, nlabels=C - 1, label_range=range(1, C))
PHISEG_GED = {
    "multi": 0.22008928571428565,
    "binary": 0.13120039682539697,
    "binary_2_annotators": 0.2902146464646466,
}
# SSN calc_generalised_energy_distance(s, y, C, 100) -> (ged, diversity_s, diversity_y)
SSN_GED = {
    "multi": (0.22008928571428577, 0.5260416666666666, 0.33333333333333337),
    "binary": (0.13120039682539686, 0.5708333333333334, 0.6375811688311688),
    "binary_2_annotators": (0.2902146464646465, 0.5708333333333334, 0.3181818181818182),
}
# MoSE cal_metrics_batch(s[None], y[None], nlabels=C, label_range=[1, 2] if C > 2 else None)
# -> (ged, hm_iou)
MOSE = {
    "multi": (0.25580358505249023, 0.5744047686457634),
    "binary": (0.13120037317276, 0.736111119389534),
    "binary_2_annotators": (0.2902145981788635, 0.486111119389534),
}
# Probabilistic U-Net calc_energy_distances(get_energy_distance_components(y, s, [1, 2]))
PROBUNET_GED_MULTI = 0.255803644657135
# ... probability_weighted=True, label_switches={"a": 0.25}, exp_mode=1: weights (0.75, 0.25)
PROBUNET_GED_MULTI_WEIGHTED = 0.22113098204135895
# ... on MULTI_ANNOTATIONS_IGNORED with ignore_mask = any annotator marks IGNORE
PROBUNET_GED_MULTI_IGNORED = 0.28333336114883423
# PHiSeg utils.variance_ncc_dist(probs (S, H, W, C), one-hot annotations (A, H, W, C))
PHISEG_NCC = {
    ("soft", "multi"): 0.8019721780578868,
    ("hard", "multi"): 0.8212076372424946,
    ("soft", "binary"): 0.8559745906408087,
    ("hard", "binary"): 0.8548681335368761,
    ("soft", "binary_2_annotators"): 0.7600178017752479,
    ("hard", "binary_2_annotators"): 0.8000592403381275,
}
TOLERANCE = 1e-6  # MoSE and the Probabilistic U-Net compute in float32


def _one_vs_rest_mean(metric, num_classes, *maps):
    """Mean over the foreground classes c of ``metric`` on the binary maps (map == c).

    The PHiSeg / SSN class convention (absent-from-both classes at IoU 1) as a mean of binary
    metrics, exact because GED and diversity are linear in d.
    """
    scores = [float(metric(*[_set(m == c).long() for m in maps], 2)) for c in range(1, num_classes)]
    return float(np.mean(scores))


# ------------------------------------------------------------------------------ GED
@pytest.mark.parametrize("case", ["binary", "binary_2_annotators"])
def test_ged_matches_phiseg_ssn_and_mose_on_binary_maps(case):
    samples, annotations, num_classes = CASES[case]
    ours = float(metrics.generalized_energy_distance(_set(samples), _set(annotations), num_classes))
    assert ours == pytest.approx(PHISEG_GED[case], abs=TOLERANCE)
    assert ours == pytest.approx(SSN_GED[case][0], abs=TOLERANCE)
    assert ours == pytest.approx(MOSE[case][0], abs=TOLERANCE)


def test_ged_empty_convention_is_exercised_by_the_shared_example():
    # Without annotator 3 the empty sample 3 meets an empty map only in its self-pair: two empty
    # maps at distance 1 (not the public 0) raise E[d(S, S')] by 1/S^2, GED falls by 1/16.
    samples, annotations, _ = CASES["binary_2_annotators"]
    other = metrics.generalized_energy_distance(
        _set(samples), _set(annotations), 2, empty_distance=1.0
    )
    assert float(other) != pytest.approx(PHISEG_GED["binary_2_annotators"], abs=1e-3)


def test_ged_matches_phiseg_and_ssn_through_one_vs_rest_maps():
    samples, annotations, num_classes = CASES["multi"]
    public = _one_vs_rest_mean(
        metrics.generalized_energy_distance, num_classes, samples, annotations
    )
    assert public == pytest.approx(PHISEG_GED["multi"], abs=TOLERANCE)
    assert public == pytest.approx(SSN_GED["multi"][0], abs=TOLERANCE)
    # our own convention (classes present in either map) gives another number on this example:
    # sample 1 against annotator 1 share no class 2, which PHiSeg and SSN count as IoU 1
    ours = float(metrics.generalized_energy_distance(_set(samples), _set(annotations), num_classes))
    assert ours != pytest.approx(PHISEG_GED["multi"], abs=1e-3)


def test_ged_matches_probabilistic_unet_and_mose_on_three_classes():
    samples, annotations, _ = CASES["multi"]
    ours = float(metrics.generalized_energy_distance(_set(samples), _set(annotations), 3))
    assert ours == pytest.approx(PROBUNET_GED_MULTI, abs=TOLERANCE)
    assert ours == pytest.approx(MOSE["multi"][0], abs=TOLERANCE)


def test_ged_reference_weights_match_probabilistic_unet_mode_probabilities():
    weights = torch.tensor([0.75, 0.25])
    weighted = metrics.generalized_energy_distance(
        _set(MULTI_SAMPLES), _set(MULTI_ANNOTATIONS), 3, reference_weights=weights
    )
    assert float(weighted) == pytest.approx(PROBUNET_GED_MULTI_WEIGHTED, abs=TOLERANCE)


def test_ged_ignore_index_matches_probabilistic_unet_ignore_mask():
    ignored = metrics.generalized_energy_distance(
        _set(MULTI_SAMPLES), _set(MULTI_ANNOTATIONS_IGNORED), 3, ignore_index=IGNORE
    )
    assert float(ignored) == pytest.approx(PROBUNET_GED_MULTI_IGNORED, abs=TOLERANCE)


# ------------------------------------------------------------------------------ diversity
@pytest.mark.parametrize("case", ["binary", "binary_2_annotators"])
def test_diversity_matches_ssn_once_self_pairs_are_counted(case):
    samples, annotations, _ = CASES[case]
    _, public_samples, public_annotations = SSN_GED[case]
    for maps, public in ((samples, public_samples), (annotations, public_annotations)):
        count = len(maps)
        ours = float(metrics.sample_diversity(_set(maps), 2))
        assert ours * (count - 1) / count == pytest.approx(public, abs=TOLERANCE)


def test_diversity_matches_ssn_through_one_vs_rest_maps():
    _, public_samples, public_annotations = SSN_GED["multi"]
    for maps, public in ((MULTI_SAMPLES, public_samples), (MULTI_ANNOTATIONS, public_annotations)):
        count = len(maps)
        ours = _one_vs_rest_mean(metrics.sample_diversity, 3, maps)
        assert ours * (count - 1) / count == pytest.approx(public, abs=TOLERANCE)


# ------------------------------------------------------------------------------ HM-IoU
@pytest.mark.parametrize("case", ["multi", "binary", "binary_2_annotators"])
def test_hm_iou_matches_mose(case):
    samples, annotations, num_classes = CASES[case]
    ours = metrics.hungarian_matched_iou(_set(samples), _set(annotations), num_classes)
    assert float(ours) == pytest.approx(MOSE[case][1], abs=TOLERANCE)


def test_hm_iou_empty_convention_is_exercised_by_the_shared_example():
    # the empty sample matched with the empty annotator scores 1 in MoSE; at IoU 0 it would not
    other = metrics.hungarian_matched_iou(
        _set(BINARY_SAMPLES), _set(BINARY_ANNOTATIONS), 2, empty_distance=1.0
    )
    assert float(other) != pytest.approx(MOSE["binary"][1], abs=1e-3)


# ------------------------------------------------------------------------------ NCC
@pytest.mark.parametrize(("kind", "case"), sorted(PHISEG_NCC))
def test_ncc_matches_phiseg(kind, case):
    samples, annotations, num_classes = CASES[case]
    probs = (_soft_probs if kind == "soft" else _hard_probs)(samples, num_classes)
    ours = metrics.uncertainty_ncc(torch.from_numpy(probs)[:, None], _set(annotations))
    assert float(ours) == pytest.approx(PHISEG_NCC[(kind, case)], abs=TOLERANCE)

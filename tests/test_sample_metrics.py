"""HM-IoU, uncertainty NCC and ignore_index in GED / diversity, against slow references.

References: brute force over every one-to-one matching (tiny sets), numpy loops written from
the definitions, and small examples worked out by hand in the comments. The public LIDC
evaluations (PHiSeg's NCC; the HM-IoU of the LIDC papers' code, which replicates both sets
to lcm(S, A) and scores IoU(empty, empty) = 1) are reconstructed from their definitions as
loops here, and the hand examples are the shared examples.
"""

import itertools
import math

import numpy as np
import pytest
import torch

from cvae_seg import metrics

C = 3
IGNORE = 255
LN2 = math.log(2.0)
LOG_EPS = -math.log(1e-8)  # the cost of a label a sample gives probability 0


# ------------------------------------------------------------------------------ references
def _ref_iou(a, b, num_classes=C, empty_iou=1.0):
    """IoU averaged over the foreground classes present in either map (the package's d)."""
    ious = []
    for c in range(1, num_classes):
        union = np.logical_or(a == c, b == c).sum()
        if union:
            ious.append(np.logical_and(a == c, b == c).sum() / union)
    return float(np.mean(ious)) if ious else empty_iou


def _ref_hm_iou(samples, annotations, num_classes=C):
    """Brute force: replicate to lcm(S, A), try every one-to-one matching, keep the best."""
    size = math.lcm(len(samples), len(annotations))
    copies_s = [s for s in samples for _ in range(size // len(samples))]
    copies_a = [a for a in annotations for _ in range(size // len(annotations))]
    iou = [[_ref_iou(s, a, num_classes) for a in copies_a] for s in copies_s]
    best = max(
        sum(iou[i][j] for i, j in enumerate(order)) for order in itertools.permutations(range(size))
    )
    return best / size


def _binary(rows):
    """Maps from strings of 0/1, one row each: (N, 1, 1, W) for one image of 1 x W pixels."""
    return torch.tensor([[int(ch) for ch in row] for row in rows]).view(len(rows), 1, 1, -1)


# ------------------------------------------------------------------------------ HM-IoU
def test_hm_iou_hand_examples():
    # samples 1100, 0000; annotations 1000, 0000. IoU (sample x annotation):
    #   1100: 1/2, 0;  0000: 0, 1 (two empty maps agree). Best matching: 1/2 + 1 -> 3/4.
    samples, annotations = _binary(["1100", "0000"]), _binary(["1000", "0000"])
    assert float(metrics.hungarian_matched_iou(samples, annotations, 2)) == 0.75
    # three samples (1100, 0000, 1000) against the same two annotations: L = lcm(3, 2) = 6,
    # each sample twice, each annotation three times. 1000 x2 -> 1000 (IoU 1, 1), 0000 x2 ->
    # 0000 (1, 1), 1100 x2 -> the one 1000 and the one 0000 left (1/2, 0): 4.5 / 6 = 3/4.
    three = _binary(["1100", "0000", "1000"])
    assert float(metrics.hungarian_matched_iou(three, annotations, 2)) == 0.75
    # empty samples against non-empty annotations share nothing; all empty agree
    assert float(metrics.hungarian_matched_iou(_binary(["0000"] * 2), three, 2)) == pytest.approx(
        1 / 3
    )
    assert float(metrics.hungarian_matched_iou(_binary(["0000"]), _binary(["0000"] * 4), 2)) == 1
    # with empty_distance=1 two empty maps have IoU 0
    empty = _binary(["0000"] * 2)
    assert float(metrics.hungarian_matched_iou(empty, empty, 2, empty_distance=1.0)) == 0.0


@pytest.mark.parametrize(
    ("count_s", "count_a", "seed"),
    [(2, 2, 0), (3, 2, 1), (2, 3, 2), (4, 2, 3), (1, 3, 4), (3, 3, 5), (6, 3, 6)],
)
def test_hm_iou_matches_brute_force(count_s, count_a, seed):
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, C, (count_s, 2, 4, 4)) * (rng.random((count_s, 2, 1, 1)) < 0.8)
    annotations = rng.integers(0, C, (count_a, 2, 4, 4))
    annotations[0, 1] = 0  # an empty annotation
    got = metrics.hungarian_matched_iou(torch.from_numpy(samples), torch.from_numpy(annotations), C)
    assert got.dtype == torch.float64 and got.shape == (2,)
    for b in range(2):
        assert float(got[b]) == pytest.approx(_ref_hm_iou(samples[:, b], annotations[:, b]))


def test_hm_iou_ignore_index_one_class_and_accumulator():
    rng = np.random.default_rng(11)
    samples = rng.integers(0, 2, (3, 2, 5, 5))
    annotations = rng.integers(0, 2, (2, 2, 5, 5))
    annotations[1, 0, 0, :] = IGNORE  # one annotator leaves a row out: no IoU counts it
    got = metrics.hungarian_matched_iou(
        torch.from_numpy(samples), torch.from_numpy(annotations), 2, ignore_index=IGNORE
    )
    for b in range(2):
        keep = (annotations[:, b] != IGNORE).all(0)
        expected = _ref_hm_iou(samples[:, b][:, keep], annotations[:, b][:, keep], 2)
        assert float(got[b]) == pytest.approx(expected)
    # ignore_index everywhere in an image: nothing to score (NaN), left out of the mean
    annotations[:, 1] = IGNORE
    accumulator = metrics.HungarianMatchedIoU(2, ignore_index=IGNORE)
    accumulator.update(torch.from_numpy(samples), torch.from_numpy(annotations))
    per_image = metrics.hungarian_matched_iou(
        torch.from_numpy(samples), torch.from_numpy(annotations), 2, ignore_index=IGNORE
    )
    assert torch.isnan(per_image[1]) and not torch.isnan(per_image[0])
    assert float(accumulator.compute()) == pytest.approx(float(per_image[0]))
    assert accumulator.skipped == 1
    # one class scored (no background): every map is all class 0, every IoU 1
    zeros = torch.zeros(2, 1, 3, 3, dtype=torch.long)
    assert float(metrics.hungarian_matched_iou(zeros, zeros[:1], 1, background=None)) == 1.0


def test_hm_iou_refuses_bad_input_by_name():
    maps = torch.zeros(2, 1, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="samples must hold integer labels"):
        metrics.hungarian_matched_iou(maps.float(), maps, 2)
    with pytest.raises(ValueError, match=r"must share \(B, H, W\)"):
        metrics.hungarian_matched_iou(maps, torch.zeros(2, 1, 3, 4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"annotations labels must lie in \[0, 2\)"):
        metrics.hungarian_matched_iou(maps, maps + IGNORE, 2)
    with pytest.raises(ValueError, match=r"\(N, B, H, W\)"):
        metrics.hungarian_matched_iou(maps[0], maps, 2)
    with pytest.raises(ValueError, match="leaves no class"):
        metrics.hungarian_matched_iou(maps, maps, 1)


# ------------------------------------------------------------------------------ NCC
def _ref_phiseg_ncc(probs, annotations, eps=1e-8):
    """PHiSeg's S_NCC for one image, from its definition, in loops.

    probs (S, C, P) sample probabilities, annotations (A, P) labels.
    """
    count_s, num_classes, pixels = probs.shape
    mean = probs.mean(0)
    gamma = np.zeros(pixels)
    for i in range(count_s):
        for p in range(pixels):
            gamma[p] -= sum(mean[c, p] * np.log(probs[i, c, p] + eps) for c in range(num_classes))
    gamma /= count_s
    scores = []
    for labels in annotations:
        error = np.zeros(pixels)
        for i in range(count_s):
            for p in range(pixels):
                error[p] -= np.log(probs[i, labels[p], p] + eps)
        error /= count_s
        a = (gamma - gamma.mean()) / (gamma.std() * pixels)
        v = (error - error.mean()) / error.std()
        scores.append(float(np.sum(a * v)))
    return float(np.mean(scores))


def test_ncc_hand_example():
    # 4 pixels, 2 classes, 2 samples. Pixels 1 and 4: both samples (1/2, 1/2); pixels 2 and
    # 3: both samples (1, 0). The uncertainty E[CE(s_bar, s)] is ln 2, 0, 0, ln 2.
    half, sure = [0.5, 0.5], [1.0, 0.0]
    one = torch.tensor([half, sure, sure, half], dtype=torch.float64).T  # (C, P)
    probs = torch.stack([one, one]).view(2, 1, 2, 1, 4)  # (S, B, C, H, W)
    # annotator "0000": error -log s(y) = ln 2, 0, 0, ln 2 -> the same map: NCC +1
    agree = metrics.uncertainty_ncc(probs, _binary(["0000"]))
    assert float(agree) == pytest.approx(1.0)
    # annotator "0110": ln 2, -log eps, -log eps, ln 2 -> high exactly where gamma is low: -1
    oppose = metrics.uncertainty_ncc(probs, _binary(["0110"]))
    assert float(oppose) == pytest.approx(-1.0)
    # both annotators: the mean over annotators, 0
    both = metrics.uncertainty_ncc(probs, _binary(["0000", "0110"]))
    assert float(both) == pytest.approx(0.0, abs=1e-9)
    # annotator "0100": error ln 2, -log eps, 0, ln 2 against gamma ~ (1, 0, 0, 1)
    partial = metrics.uncertainty_ncc(probs, _binary(["0100"]))
    expected = np.corrcoef([1, 0, 0, 1], [LN2, LOG_EPS, 0, LN2])[0, 1]
    assert float(partial) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_ncc_matches_phiseg_reference(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(5, 2, C, 3, 4)) * 2
    probs = torch.softmax(torch.from_numpy(logits), 2)
    annotations = rng.integers(0, C, (3, 2, 3, 4))
    got = metrics.uncertainty_ncc(probs, torch.from_numpy(annotations))
    for b in range(2):
        expected = _ref_phiseg_ncc(probs[:, b].flatten(2).numpy(), annotations[:, b].reshape(3, -1))
        assert float(got[b]) == pytest.approx(expected, abs=1e-9)
    # ignore_index: the pixels any annotator leaves out are out of both maps
    annotations[0, 0, 0, :] = IGNORE
    annotations[2, 1, :, 1] = IGNORE
    ignored = metrics.uncertainty_ncc(probs, torch.from_numpy(annotations), ignore_index=IGNORE)
    for b in range(2):
        keep = (annotations[:, b] != IGNORE).all(0).reshape(-1)
        flat = probs[:, b].flatten(2).numpy()[:, :, keep]
        expected = _ref_phiseg_ncc(flat, annotations[:, b].reshape(3, -1)[:, keep])
        assert float(ignored[b]) == pytest.approx(expected, abs=1e-9)


def test_ncc_is_undefined_for_constant_maps_and_the_accumulator_skips_it():
    one_hot = torch.nn.functional.one_hot(torch.randint(0, C, (1, 2, 4, 4)), C)
    probs = one_hot.permute(0, 1, 4, 2, 3).double().expand(3, -1, -1, -1, -1)
    annotations = torch.randint(0, C, (2, 2, 4, 4))
    # identical hard samples: no uncertainty anywhere, the correlation is undefined
    assert torch.isnan(metrics.uncertainty_ncc(probs, annotations)).all()
    soft = torch.softmax(torch.randn(3, 2, C, 4, 4, dtype=torch.float64), 2)
    everywhere = annotations.clone()
    everywhere[:, 1] = IGNORE
    got = metrics.uncertainty_ncc(soft, everywhere, ignore_index=IGNORE)
    assert not torch.isnan(got[0]) and torch.isnan(got[1])
    accumulator = metrics.UncertaintyNCC(ignore_index=IGNORE)
    accumulator.update(soft, everywhere)
    assert float(accumulator.compute()) == pytest.approx(float(got[0]))
    assert accumulator.skipped == 1


def test_ncc_refuses_logits_and_mismatched_shapes():
    annotations = torch.zeros(2, 1, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="sum to 1"):
        metrics.uncertainty_ncc(torch.rand(4, 1, 2, 3, 3), annotations)
    with pytest.raises(ValueError, match=r"\(S, B, C, H, W\)"):
        metrics.uncertainty_ncc(torch.rand(4, 2, 3, 3), annotations)
    probs = torch.full((4, 1, 2, 3, 4), 0.5)
    with pytest.raises(ValueError, match="must match sample_probs"):
        metrics.uncertainty_ncc(probs, annotations)


# ------------------------------------------------------------------------------ GED, diversity
def _ref_diversity(samples, keep, empty_iou=1.0):
    pairs = [(i, j) for i in range(len(samples)) for j in range(len(samples)) if i != j]
    return np.mean([1 - _ref_iou(samples[i][keep], samples[j][keep]) for i, j in pairs])


def test_diversity_honours_ignore_index_through_the_references():
    rng = np.random.default_rng(3)
    samples = rng.integers(0, C, (4, 2, 5, 5))
    references = rng.integers(0, C, (2, 2, 5, 5))
    references[0, 0, :2] = IGNORE
    got = metrics.sample_diversity(
        torch.from_numpy(samples), C, references=torch.from_numpy(references), ignore_index=IGNORE
    )
    for b in range(2):
        keep = (references[:, b] != IGNORE).all(0)
        assert float(got[b]) == pytest.approx(_ref_diversity(samples[:, b], keep))
    with pytest.raises(ValueError, match="ignore_index needs the references"):
        metrics.sample_diversity(torch.from_numpy(samples), C, ignore_index=IGNORE)
    accumulator = metrics.SampleDiversity(C, ignore_index=IGNORE)
    accumulator.update(torch.from_numpy(samples), references=torch.from_numpy(references))
    assert float(accumulator.compute()) == pytest.approx(float(got.mean()))


def test_ged_and_diversity_score_nan_when_every_pixel_is_ignored():
    samples = torch.randint(0, C, (3, 2, 4, 4))
    references = torch.randint(0, C, (2, 2, 4, 4))
    references[:, 0] = IGNORE
    ged = metrics.generalized_energy_distance(samples, references, C, ignore_index=IGNORE)
    diversity = metrics.sample_diversity(samples, C, references=references, ignore_index=IGNORE)
    for scores in (ged, diversity):
        assert torch.isnan(scores[0]) and not torch.isnan(scores[1])
    accumulator = metrics.GeneralizedEnergyDistance(C, ignore_index=IGNORE)
    accumulator.update(samples, references)
    assert float(accumulator.compute()) == pytest.approx(float(ged[1]))
    accumulator.reset()
    accumulator.update(samples[:, :1], references[:, :1])
    assert torch.isnan(accumulator.compute()) and accumulator.skipped == 1


def test_ged_refuses_labels_out_of_range_unless_ignored():
    samples = torch.zeros(2, 1, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"references labels must lie in \[0, 3\)"):
        metrics.generalized_energy_distance(samples, samples + IGNORE, C)
    with pytest.raises(ValueError, match=r"samples labels must lie in \[0, 3\)"):
        metrics.generalized_energy_distance(samples + 3, samples, C)
    ged = metrics.generalized_energy_distance(samples, samples + IGNORE, C, ignore_index=IGNORE)
    assert torch.isnan(ged).all()


@pytest.mark.parametrize(
    "mask",
    [
        torch.full((1, 3, 3), 2),  # int64: combined bitwise, every distance would be 0
        torch.ones(1, 3, 3),
        torch.ones(1, 3, 3, dtype=torch.uint8),
        np.ones((1, 3, 3), dtype=bool),
    ],
)
def test_valid_masks_must_be_bool_tensors(mask):
    samples = torch.tensor(
        [[[[0, 1, 1], [0, 1, 1], [0, 0, 0]]], [[[2, 2, 0], [0, 0, 0], [0, 0, 0]]]]
    )
    with pytest.raises(ValueError, match="valid must be a bool torch tensor"):
        metrics.pairwise_iou_distance(samples, samples, C, valid=mask)
    with pytest.raises(ValueError, match="valid must be a bool torch tensor"):
        metrics.sample_diversity(samples, C, valid=mask)
    with pytest.raises(ValueError, match="valid must be a bool torch tensor"):
        metrics.SampleDiversity(C).update(samples, valid=mask)
    # the bool mask of the same pixels: the two maps share no foreground class, distance 1
    keep = torch.ones(1, 3, 3, dtype=torch.bool)
    assert metrics.sample_diversity(samples, C, valid=keep).tolist() == [1.0]


@pytest.mark.parametrize("bad", [5.0, -3.0, 1.5, float("nan"), "0", True])
def test_empty_distance_must_be_a_distance_in_the_unit_interval(bad):
    empty = torch.zeros(2, 1, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"empty_distance must be a number in \[0, 1\]"):
        metrics.generalized_energy_distance(empty, empty[:1], C, empty_distance=bad)
    with pytest.raises(ValueError, match=r"empty_distance must be a number in \[0, 1\]"):
        metrics.hungarian_matched_iou(empty, empty, C, empty_distance=bad)
    with pytest.raises(ValueError, match=r"empty_distance must be a number in \[0, 1\]"):
        metrics.pairwise_iou_distance(empty, empty, C, empty_distance=bad)
    with pytest.raises(ValueError, match=r"empty_distance must be a number in \[0, 1\]"):
        metrics.sample_diversity(empty, C, empty_distance=bad)
    for accumulator in (
        metrics.GeneralizedEnergyDistance,
        metrics.SampleDiversity,
        metrics.HungarianMatchedIoU,
    ):
        with pytest.raises(ValueError, match="empty_distance"):
            accumulator(C, empty_distance=bad)


def test_empty_distance_at_the_ends_of_the_unit_interval():
    # two empty maps at distance 1: GED of identical empty sets is 2 - 1 - 1 = 0, HM-IoU 0
    empty = torch.zeros(2, 1, 3, 3, dtype=torch.long)
    for value in (0, 1, 1.0, np.float64(0.5)):
        assert (
            float(metrics.generalized_energy_distance(empty, empty, C, empty_distance=value)) == 0
        )
        iou = float(metrics.hungarian_matched_iou(empty, empty, C, empty_distance=value))
        assert iou == 1.0 - float(value)

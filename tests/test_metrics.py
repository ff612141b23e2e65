"""Every metric against a slow, obviously-correct numpy reference, on random and edge cases."""

import itertools

import numpy as np
import pytest
import torch

from cvae_seg import metrics

C = 4
IGNORE = 255


def _random_pair(seed, shape=(3, 9, 7), ignore_share=0.2):
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, C, shape)
    target = rng.integers(0, C, shape)
    target[rng.random(shape) < ignore_share] = IGNORE
    return torch.from_numpy(pred), torch.from_numpy(target)


def _ref_pixel_accuracy(pred, target, ignore):
    correct = total = 0
    for p, t in zip(pred.flatten().tolist(), target.flatten().tolist(), strict=True):
        if t == ignore:
            continue
        total += 1
        correct += p == t
    return correct / total if total else float("nan")


def _ref_iou(pred, target, ignore):
    out = []
    p, t = pred.flatten().tolist(), target.flatten().tolist()
    for c in range(C):
        inter = sum(1 for a, b in zip(p, t, strict=True) if b != ignore and a == c and b == c)
        union = sum(1 for a, b in zip(p, t, strict=True) if b != ignore and (a == c or b == c))
        out.append(inter / union if union else float("nan"))
    return out


def _ref_class_accuracy(pred, target, ignore):
    p, t = pred.flatten().tolist(), target.flatten().tolist()
    accs = []
    for c in range(C):
        of_class = [a for a, b in zip(p, t, strict=True) if b == c]
        if of_class:
            accs.append(sum(a == c for a in of_class) / len(of_class))
    return sum(accs) / len(accs)


def _ref_foreground_iou(pred, target):
    scores = []
    for p, t in zip(pred.numpy(), target.numpy(), strict=True):
        pf, tf = p != 0, t != 0
        union = np.logical_or(pf, tf).sum()
        scores.append(np.logical_and(pf, tf).sum() / union if union else 0.0)
    return float(np.mean(scores))


@pytest.mark.parametrize("seed", range(5))
def test_functions_match_references(seed):
    pred, target = _random_pair(seed)
    assert float(metrics.pixel_accuracy(pred, target, IGNORE)) == pytest.approx(
        _ref_pixel_accuracy(pred, target, IGNORE)
    )
    np.testing.assert_allclose(
        metrics.per_class_iou(pred, target, C, IGNORE).numpy(), _ref_iou(pred, target, IGNORE)
    )
    assert float(metrics.mean_iou(pred, target, C, IGNORE)) == pytest.approx(
        np.nanmean(_ref_iou(pred, target, IGNORE))
    )
    assert float(metrics.class_accuracy(pred, target, C, IGNORE)) == pytest.approx(
        _ref_class_accuracy(pred, target, IGNORE)
    )
    binary_pred, binary_target = pred % 2, target % 2
    assert float(metrics.foreground_iou(binary_pred, binary_target)) == pytest.approx(
        _ref_foreground_iou(binary_pred, binary_target)
    )


def test_accumulators_count_globally_over_batches():
    batches = [_random_pair(seed, shape=(2, 5, 5)) for seed in range(4)]
    pred = torch.cat([p for p, _ in batches])
    target = torch.cat([t for _, t in batches])
    accuracy, class_acc = metrics.PixelAccuracy(C, IGNORE), metrics.ClassAccuracy(C, IGNORE)
    miou, fg = metrics.MeanIoU(C, IGNORE), metrics.ForegroundIoU()
    for p, t in batches:
        accuracy.update(p, t)
        class_acc.update(p, t)
        miou.update(p, t)
        fg.update(p % 2, t % 2)
    assert float(accuracy.compute()) == pytest.approx(_ref_pixel_accuracy(pred, target, IGNORE))
    assert float(class_acc.compute()) == pytest.approx(_ref_class_accuracy(pred, target, IGNORE))
    np.testing.assert_allclose(miou.per_class().numpy(), _ref_iou(pred, target, IGNORE))
    assert float(fg.compute()) == pytest.approx(_ref_foreground_iou(pred % 2, target % 2))
    accuracy.reset()
    assert torch.isnan(accuracy.compute())


def test_edge_cases():
    empty = torch.zeros(2, 4, 4, dtype=torch.long)
    # empty prediction vs empty target scores 0 (the paper's CUB convention)
    assert float(metrics.foreground_iou(empty, empty)) == 0.0
    # one class only: perfect accuracy, IoU defined for that class alone
    assert float(metrics.pixel_accuracy(empty, empty)) == 1.0
    iou = metrics.per_class_iou(empty, empty, C)
    assert iou[0] == 1.0 and torch.isnan(iou[1:]).all()
    assert float(metrics.mean_iou(empty, empty, C)) == 1.0
    # ignore_index everywhere: nothing to score
    ignored = torch.full((2, 4, 4), IGNORE)
    assert torch.isnan(metrics.pixel_accuracy(empty, ignored, IGNORE))
    assert torch.isnan(metrics.mean_iou(empty, ignored, C, IGNORE))
    assert torch.isnan(metrics.foreground_iou(empty + 1, ignored, ignore_index=IGNORE))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="same shape"):
        metrics.pixel_accuracy(
            torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="argmax"):
        metrics.pixel_accuracy(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        metrics.mean_iou(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 7), C)
    with pytest.raises(TypeError, match=r"pred must be a torch.Tensor .* got ndarray"):
        metrics.pixel_accuracy(np.zeros((2, 2), np.int64), torch.zeros(2, 2, dtype=torch.long))


def test_foreground_iou_skips_an_image_whose_pixels_are_all_ignored():
    # image 0 is all ignore_index: nothing labelled -> NaN, left out of the mean, not a 0
    pred = torch.ones(2, 2, 2, dtype=torch.long)
    target = torch.tensor([[[IGNORE] * 2] * 2, [[1, 0], [0, 0]]])
    per_image = metrics.per_image_foreground_iou(pred, target, ignore_index=IGNORE)
    assert torch.isnan(per_image[0]) and float(per_image[1]) == 0.25
    assert float(metrics.foreground_iou(pred, target, ignore_index=IGNORE)) == 0.25
    accumulator = metrics.ForegroundIoU(ignore_index=IGNORE)
    accumulator.update(pred, target)
    assert float(accumulator.compute()) == 0.25
    assert (accumulator.count, accumulator.skipped) == (1, 1)


def test_foreground_iou_refuses_prediction_labels_that_are_not_classes():
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="pred labels must be non-negative"):
        metrics.ForegroundIoU(ignore_index=IGNORE).update(torch.full((1, 2, 2), -1), target)
    with pytest.raises(ValueError, match="target labels must be non-negative"):
        metrics.foreground_iou(target, target - 1)
    # with num_classes, an ignore_index (or any label >= num_classes) predicted is refused
    accumulator = metrics.ForegroundIoU(ignore_index=IGNORE, num_classes=2)
    with pytest.raises(ValueError, match=r"pred labels must lie in \[0, 2\)"):
        accumulator.update(torch.full((1, 2, 2), IGNORE), target)
    with pytest.raises(ValueError, match=r"target labels must lie in \[0, 2\)"):
        metrics.per_image_foreground_iou(target, target + 2, num_classes=2)
    accumulator.update(target + 1, torch.tensor([[[1, IGNORE], [0, 0]]]))
    assert float(accumulator.compute()) == pytest.approx(1 / 3)


def test_pixel_accuracy_checks_label_ranges_like_pixel_accuracy_update():
    pred = torch.zeros(2, 2, dtype=torch.long)
    half_ignored = torch.tensor([[0, 0], [IGNORE, IGNORE]])
    with pytest.raises(ValueError, match=r"target labels must lie in \[0, 3\)"):
        metrics.pixel_accuracy(pred, half_ignored, num_classes=3)
    with pytest.raises(ValueError, match=r"pred labels must lie in \[0, 3\)"):
        metrics.pixel_accuracy(pred + 7, pred, num_classes=3)
    with pytest.raises(ValueError, match="target labels must be non-negative"):
        metrics.pixel_accuracy(pred, pred - 1)
    with pytest.raises(ValueError, match="pred labels must be non-negative"):
        metrics.pixel_accuracy(pred - 1, pred, IGNORE)
    # the same pixels scored as PixelAccuracy scores them, ignore_index honoured
    assert float(metrics.pixel_accuracy(pred, half_ignored, IGNORE, num_classes=3)) == 1.0
    with pytest.raises(ValueError, match="target labels"):
        metrics.PixelAccuracy(3).update(pred, half_ignored)


@pytest.mark.parametrize("bad", [2.5, "3", 3.0, True, None, np.float64(3)])
def test_num_classes_and_num_bins_must_be_integers(bad):
    pred = torch.zeros(2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        metrics.ConfusionMatrix(bad)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        metrics.confusion_matrix(pred, pred, num_classes=bad)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        metrics.generalized_energy_distance(pred[None, None], pred[None, None], bad)
    with pytest.raises(ValueError, match="num_bins must be a positive integer"):
        metrics.ExpectedCalibrationError(num_bins=bad)
    with pytest.raises(ValueError, match="num_bins must be a positive integer"):
        metrics.reliability_diagram(torch.ones(1, 1, 2), torch.zeros(1, 2, dtype=int), bad)


def test_numpy_integers_count_as_integers():
    pred, target = _random_pair(0)
    three = np.int64(3)
    assert torch.equal(
        metrics.confusion_matrix(pred % 3, target % 3, three),
        metrics.confusion_matrix(pred % 3, target % 3, 3),
    )
    accumulator = metrics.MeanIoU(np.int32(C), IGNORE)
    accumulator.update(pred, target)
    assert torch.equal(accumulator.compute(), metrics.mean_iou(pred, target, C, IGNORE))
    assert accumulator.num_classes == C and type(accumulator.num_classes) is int
    maps = torch.from_numpy(np.random.default_rng(1).integers(0, 3, (4, 2, 5, 5)))
    assert torch.equal(
        metrics.generalized_energy_distance(maps, maps[:2], three),
        metrics.generalized_energy_distance(maps, maps[:2], 3),
    )
    probs = torch.softmax(torch.randn(2, 3, 4, 4), 1)
    labels = torch.randint(0, 3, (2, 4, 4))
    assert torch.equal(
        metrics.expected_calibration_error(probs, labels, np.int64(7)),
        metrics.expected_calibration_error(probs, labels, 7),
    )


def _ref_distance(a, b, empty_distance=0.0):
    ious = []
    for c in range(1, C):
        union = np.logical_or(a == c, b == c).sum()
        if union:
            ious.append(np.logical_and(a == c, b == c).sum() / union)
    return 1 - np.mean(ious) if ious else empty_distance


def _ref_ged(samples, references):
    cross = np.mean([_ref_distance(s, r) for s, r in itertools.product(samples, references)])
    within_s = np.mean([_ref_distance(s, t) for s, t in itertools.product(samples, samples)])
    within_r = np.mean([_ref_distance(r, t) for r, t in itertools.product(references, references)])
    return 2 * cross - within_s - within_r


@pytest.mark.parametrize("seed", range(3))
def test_ged_and_diversity_match_references(seed):
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, C, (4, 2, 6, 6))
    references = rng.integers(0, C, (3, 2, 6, 6))
    samples[0, 0] = 0  # an empty sample next to non-empty ones
    ged = metrics.generalized_energy_distance(
        torch.from_numpy(samples), torch.from_numpy(references), C
    )
    diversity = metrics.sample_diversity(torch.from_numpy(samples), C)
    for b in range(2):
        assert float(ged[b]) == pytest.approx(_ref_ged(samples[:, b], references[:, b]))
        pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
        expected = np.mean([_ref_distance(samples[i, b], samples[j, b]) for i, j in pairs])
        assert float(diversity[b]) == pytest.approx(expected)


def test_ged_empty_mask_policy_and_identity():
    empty = torch.zeros(3, 1, 5, 5, dtype=torch.long)
    assert float(metrics.generalized_energy_distance(empty, empty, C)) == 0.0
    distance = metrics.pairwise_iou_distance(empty[:1], empty[:1], C, empty_distance=1.0)
    assert float(distance) == 1.0
    same = torch.randint(0, C, (1, 2, 5, 5)).expand(3, -1, -1, -1)
    torch.testing.assert_close(metrics.sample_diversity(same, C), torch.zeros(2).double())
    accumulator = metrics.GeneralizedEnergyDistance(C)
    accumulator.update(same, same[:1])
    assert float(accumulator.compute()) == pytest.approx(0.0)


def test_metrics_package_keeps_one_namespace():
    from cvae_seg.metrics import samples, segmentation

    assert metrics.generalized_energy_distance is samples.generalized_energy_distance
    assert metrics.MeanIoU is segmentation.MeanIoU
    assert set(metrics.__all__) >= set(samples.__all__) | set(segmentation.__all__)


def test_diversity_excludes_self_pairs_whatever_the_empty_distance():
    empty = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    # two empty maps: one distinct pair each way, each at empty_distance
    assert float(metrics.sample_diversity(empty, C, empty_distance=1.0)) == 1.0
    assert float(metrics.sample_diversity(empty, C)) == 0.0
    rng = np.random.default_rng(7)
    samples = rng.integers(0, C, (5, 2, 4, 4))
    samples[[0, 3], 1] = 0  # two empty samples of the second image
    got = metrics.sample_diversity(torch.from_numpy(samples), C, empty_distance=1.0)
    for b in range(2):
        pairs = [(i, j) for i in range(5) for j in range(5) if i != j]
        expected = np.mean([_ref_distance(samples[i, b], samples[j, b], 1.0) for i, j in pairs])
        assert float(got[b]) == pytest.approx(expected)
    accumulator = metrics.SampleDiversity(C, empty_distance=1.0)
    accumulator.update(empty)
    assert float(accumulator.compute()) == 1.0


def test_ged_includes_self_pairs_and_is_zero_for_the_empirical_truth():
    empty = torch.zeros(1, 1, 2, 2, dtype=torch.long)
    full = torch.ones(1, 1, 2, 2, dtype=torch.long)
    both = torch.cat([empty, full])
    # E d(S,Y) = 1/2, E d(S,S') = 2/4 over all four ordered pairs, E d(Y,Y') = 2/4: D^2 = 0
    # (leaving the self-pairs out would give E d(S,S') = 1 and D^2 = -1/2)
    assert float(metrics.generalized_energy_distance(both, both, 2)) == 0.0
    stuck = torch.cat([full, full, full])
    assert float(metrics.generalized_energy_distance(stuck, both, 2)) == pytest.approx(0.5)
    root = metrics.generalized_energy_distance(stuck, both, 2, squared=False)
    assert float(root) == pytest.approx(0.5**0.5)


def _ref_weighted_ged(samples, references, weights, valid=None, empty_distance=0.0):
    def d(a, b):
        if valid is not None:
            a, b = np.where(valid, a, 0), np.where(valid, b, 0)
        return _ref_distance(a, b, empty_distance)

    pairs = list(zip(references, weights, strict=True))
    cross = np.mean([sum(w * d(s, r) for r, w in pairs) for s in samples])
    within_s = np.mean([d(s, t) for s, t in itertools.product(samples, samples)])
    within_r = sum(w * v * d(r, t) for (r, w), (t, v) in itertools.product(pairs, repeat=2))
    return 2 * cross - within_s - within_r


@pytest.mark.parametrize("seed", range(3))
def test_weighted_ged_and_ignore_index_match_references(seed):
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, C, (4, 2, 5, 5))
    references = rng.integers(0, C, (3, 2, 5, 5))
    weights = rng.dirichlet(np.ones(3), size=2).T  # (R, B)
    ged = metrics.generalized_energy_distance(
        torch.from_numpy(samples), torch.from_numpy(references), C,
        reference_weights=torch.from_numpy(weights),
    )  # fmt: skip
    for b in range(2):
        expected = _ref_weighted_ged(samples[:, b], references[:, b], weights[:, b])
        assert float(ged[b]) == pytest.approx(expected)
    shared = metrics.generalized_energy_distance(
        torch.from_numpy(samples), torch.from_numpy(references), C,
        reference_weights=torch.tensor([0.5, 0.25, 0.25]),
    )  # fmt: skip
    expected = _ref_weighted_ged(samples[:, 0], references[:, 0], [0.5, 0.25, 0.25])
    assert float(shared[0]) == pytest.approx(expected)
    # ignore_index in any reference removes the pixel from every distance of that image
    references[1, :, 0, :] = IGNORE
    references[2, 1, :, 2] = IGNORE
    ignored = metrics.generalized_energy_distance(
        torch.from_numpy(samples), torch.from_numpy(references), C, ignore_index=IGNORE
    )
    for b in range(2):
        valid = (references[:, b] != IGNORE).all(0)
        expected = _ref_weighted_ged(samples[:, b], references[:, b], [1 / 3] * 3, valid)
        assert float(ignored[b]) == pytest.approx(expected)


def test_ged_validates_weights_and_valid_masks():
    samples = torch.zeros(2, 1, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="sum to 1"):
        metrics.generalized_energy_distance(samples, samples, C, reference_weights=[0.5, 0.2])
    with pytest.raises(ValueError, match=r"\(R,\) or \(R, B\)"):
        metrics.generalized_energy_distance(samples, samples, C, reference_weights=[1.0])
    with pytest.raises(ValueError, match="valid"):
        metrics.pairwise_iou_distance(samples, samples, C, valid=torch.ones(3, 3, dtype=bool))
    accumulator = metrics.GeneralizedEnergyDistance(C, ignore_index=IGNORE)
    accumulator.update(samples, samples, reference_weights=torch.tensor([0.5, 0.5]))
    assert float(accumulator.compute()) == 0.0


# ---------------------------------------------------------------------------- calibration
def _ref_ece(probs, target, num_bins, ignore):
    """Guo et al.'s ECE in loops: bins ((m - 1) / M, m / M], top-1 confidence per pixel."""
    flat_probs = np.moveaxis(probs, 1, -1).reshape(-1, probs.shape[1])
    counts, confidence, correct = np.zeros(num_bins), np.zeros(num_bins), np.zeros(num_bins)
    for p, t in zip(flat_probs, target.reshape(-1), strict=True):
        if t == ignore:
            continue
        c = p.max()
        m = next(m for m in range(num_bins) if c <= (m + 1) / num_bins or m == num_bins - 1)
        counts[m] += 1
        confidence[m] += c
        correct[m] += int(np.argmax(p) == t)
    total = counts.sum()
    if total == 0:
        return float("nan")
    return sum(abs(correct[m] - confidence[m]) for m in range(num_bins)) / total


def _random_probs(seed, shape=(2, C, 5, 6)):
    rng = np.random.default_rng(seed)
    probs = torch.softmax(torch.from_numpy(rng.normal(size=shape) * 2), 1)
    target = rng.integers(0, shape[1], (shape[0], *shape[2:]))
    target[rng.random(target.shape) < 0.2] = IGNORE
    return probs, torch.from_numpy(target)


def test_ece_hand_example_and_reliability_diagram():
    # 4 bins (0, 1/4], (1/4, 1/2], (1/2, 3/4], (3/4, 1]; class-0 probabilities 1, 3/4, 5/8,
    # 1/8 give confidences 1, 3/4, 5/8, 7/8 and predictions 0, 0, 0, 1; targets 0, 1, 0, 0
    # make them right, wrong, right, wrong. Bin 3 holds 3/4 (wrong) and 5/8 (right): accuracy
    # 1/2, confidence 11/16; bin 4 holds 1 (right) and 7/8 (wrong): 1/2 and 15/16.
    # ECE = (2 |1/2 - 11/16| + 2 |1/2 - 15/16|) / 4 = (3/8 + 7/8) / 4 = 5/16.
    first = torch.tensor([1.0, 0.75, 0.625, 0.125, 0.5], dtype=torch.float64)
    probs = torch.stack([first, 1 - first]).view(1, 2, 1, 5)
    target = torch.tensor([[[0, 1, 0, 0, IGNORE]]])  # the fifth pixel is not labelled
    ece = metrics.expected_calibration_error(probs, target, num_bins=4, ignore_index=IGNORE)
    assert float(ece) == 5 / 16
    diagram = metrics.reliability_diagram(probs, target, num_bins=4, ignore_index=IGNORE)
    assert diagram.edges.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert diagram.counts.tolist() == [0, 0, 2, 2]
    assert diagram.accuracy[2:].tolist() == [0.5, 0.5] and diagram.accuracy[:2].isnan().all()
    assert diagram.confidence[2:].tolist() == [11 / 16, 15 / 16]


@pytest.mark.parametrize("seed", range(3))
def test_ece_matches_loops(seed):
    probs, target = _random_probs(seed)
    got = metrics.expected_calibration_error(probs, target, num_bins=10, ignore_index=IGNORE)
    assert float(got) == pytest.approx(_ref_ece(probs.numpy(), target.numpy(), 10, IGNORE))


def test_ece_agrees_with_torchmetrics_off_the_bin_edges():
    functional = pytest.importorskip("torchmetrics.functional.classification")
    for seed in range(3):
        probs, target = _random_probs(seed)
        ours = metrics.expected_calibration_error(probs, target, 10, IGNORE)
        theirs = functional.multiclass_calibration_error(
            probs.movedim(1, -1).reshape(-1, C), target.reshape(-1), num_classes=C, n_bins=10,
            ignore_index=IGNORE,
        )  # fmt: skip
        assert float(ours) == pytest.approx(float(theirs), abs=1e-6)
    # on the edges they differ, as documented: torchmetrics bins left-closed with 1 in a bin
    # of its own, so the hand example's 3/4 joins 7/8 and 1 stands apart: ECE 1/2, not 5/16
    first = torch.tensor([1.0, 0.75, 0.625, 0.125], dtype=torch.float64)
    probs, target = torch.stack([first, 1 - first], 1), torch.tensor([0, 1, 0, 0])
    theirs = functional.multiclass_calibration_error(probs.float(), target, 2, n_bins=4)
    assert float(theirs) == pytest.approx(0.5)
    ours = metrics.expected_calibration_error(probs.T[None], target[None], num_bins=4)
    assert float(ours) == 5 / 16


def test_ece_accumulator_pools_pixels_and_edge_cases():
    batches = [_random_probs(seed, (1, C, 4, 4)) for seed in range(3)]
    accumulator = metrics.ExpectedCalibrationError(num_bins=8, ignore_index=IGNORE)
    for probs, target in batches:
        accumulator.update(probs, target)
    probs = torch.cat([p for p, _ in batches])
    target = torch.cat([t for _, t in batches])
    whole = metrics.expected_calibration_error(probs, target, 8, IGNORE)
    assert float(accumulator.compute()) == pytest.approx(float(whole))
    diagram = metrics.reliability_diagram(probs, target, 8, IGNORE)
    assert accumulator.diagram().counts.tolist() == diagram.counts.tolist()
    assert int(diagram.counts.sum()) == int((target != IGNORE).sum())
    # ignore_index everywhere: nothing to score
    assert torch.isnan(metrics.expected_calibration_error(probs, target * 0 + IGNORE, 8, IGNORE))
    accumulator.reset()
    assert torch.isnan(accumulator.compute())
    # one class: every pixel certain and right
    one = torch.ones(2, 1, 3, 3, dtype=torch.float64)
    assert float(metrics.expected_calibration_error(one, torch.zeros(2, 3, 3, dtype=int))) == 0


def test_ece_refuses_logits_and_bad_shapes():
    target = torch.zeros(2, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"probs must lie in \[0, 1\]"):
        metrics.expected_calibration_error(torch.randn(2, 4, 3, 3) * 5, target)
    with pytest.raises(ValueError, match="sum to 1"):
        metrics.expected_calibration_error(torch.rand(2, 4, 3, 3), target)
    probs = torch.full((2, 2, 3, 3), 0.5)
    with pytest.raises(ValueError, match="integer labels"):
        metrics.expected_calibration_error(probs, target.float())
    with pytest.raises(ValueError, match=r"target must be \(B, ...\)"):
        metrics.expected_calibration_error(probs, target[:, :2])
    with pytest.raises(ValueError, match=r"target labels must lie in \[0, 2\)"):
        metrics.expected_calibration_error(probs, target + 2)
    with pytest.raises(ValueError, match="num_bins"):
        metrics.ExpectedCalibrationError(num_bins=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_probabilities_are_scored_as_their_values(dtype):
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(2, 5, 8, 8).to(dtype), 1)
    assert (probs.double().sum(1) - 1).abs().max() > 1e-3 or dtype == torch.float16
    target = torch.randint(0, 5, (2, 8, 8))
    expected = _ref_ece(probs.double().numpy(), target.numpy(), 15, None)
    assert float(metrics.expected_calibration_error(probs, target)) == pytest.approx(expected)
    accumulator = metrics.ExpectedCalibrationError()
    accumulator.update(probs, target)
    assert float(accumulator.compute()) == pytest.approx(expected)
    assert int(metrics.reliability_diagram(probs, target).counts.sum()) == target.numel()
    samples = torch.softmax(torch.randn(3, 2, 5, 8, 8).to(dtype), 2)
    ncc = metrics.uncertainty_ncc(samples, torch.randint(0, 5, (2, 2, 8, 8)))
    assert ncc.shape == (2,) and bool(((ncc >= -1) & (ncc <= 1)).all())


def test_probabilities_keep_their_tolerance_and_name_non_finite_values():
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    off = torch.full((1, 2, 2, 2), 0.501)  # sums to 1.002: beyond float32's 1e-3
    with pytest.raises(ValueError, match="sum to 1"):
        metrics.expected_calibration_error(off, target)
    with pytest.raises(ValueError, match="sum to 1"):
        metrics.expected_calibration_error(
            torch.full((1, 2, 2, 2), 0.6, dtype=torch.bfloat16), target
        )
    for bad in (float("nan"), float("inf")):
        probs = torch.full((1, 2, 2, 2), 0.5)
        probs[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match="probs holds non-finite"):
            metrics.expected_calibration_error(probs, target)
        with pytest.raises(ValueError, match="sample_probs holds non-finite"):
            metrics.uncertainty_ncc(probs[None], target[None])


def test_evaluate_reports_the_ece_of_the_mean_of_the_samples_softmax():
    """evaluate(..., calibration_samples=S): the ECE of the predictive distribution, the
    same number as the metric fed by hand with S samples drawn under the same seed."""
    import cvae_seg
    from cvae_seg.config import DataConfig
    from cvae_seg.data import build_dataset
    from cvae_seg.evaluation import evaluate

    data = build_dataset(DataConfig(dataset="shapes", size=32, shapes_val=6), "val", train=False)
    loader = torch.utils.data.DataLoader(data, batch_size=3)
    model = cvae_seg.create_model(  # a sampling model: its samples differ
        "Unet", encoder_name="tu-test_resnet", classes=len(data.classes), objective="gsnn"
    ).eval()
    cpu = torch.device("cpu")
    plain = evaluate(model, loader, data.classes, cpu, likelihood=False, progress=None)
    assert "ece" not in plain
    torch.manual_seed(3)
    scored = evaluate(model, loader, data.classes, cpu, likelihood=False, progress=None,
                      calibration_samples=4)  # fmt: skip
    torch.manual_seed(3)
    by_hand = metrics.ExpectedCalibrationError()
    for batch in loader:
        x, y = batch["image"], batch["mask"]
        model.predict(x)  # evaluate draws nothing for the prediction: the same random stream
        by_hand.update(torch.softmax(model.sample(x, 4), 2).mean(0), y)
    assert scored["ece"] == pytest.approx(float(by_hand.compute()), abs=1e-12)
    assert 0.0 < scored["ece"] < 1.0
    one_sample = evaluate(model, loader, data.classes, cpu, likelihood=False, progress=None,
                          calibration_samples=1)["ece"]  # fmt: skip
    assert one_sample != pytest.approx(scored["ece"], abs=1e-9)  # the samples' mean is used
    extra = ("ece", "reliability_diagram")
    assert {k: v for k, v in scored.items() if k not in extra} == plain
    # the diagram's bins are those of the metric fed by hand: every pixel counted once
    counts = by_hand.diagram().counts.tolist()
    assert scored["reliability_diagram"]["counts"] == counts and sum(counts) == 6 * 32 * 32
    with pytest.raises(ValueError, match="calibration_samples"):
        evaluate(model, loader, data.classes, cpu, progress=None, calibration_samples=-1)

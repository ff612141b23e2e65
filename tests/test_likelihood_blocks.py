"""`block_estimates` and `masked_nll` against slow, obviously-correct references."""

import math

import pytest
import torch

from cvae_seg.likelihood import block_estimates, masked_nll


def test_block_estimates_match_a_loop():
    torch.manual_seed(0)
    log_weights = torch.randn(23, 3).double()  # 23 draws for 3 examples
    result = block_estimates(log_weights, [1, 5, 23])
    for size in (1, 5, 23):
        blocks = []
        for start in range(0, (23 // size) * size, size):
            per_example = []
            for b in range(3):
                mean = sum(math.exp(float(w)) for w in log_weights[start : start + size, b]) / size
                per_example.append(-math.log(mean))
            blocks.append(sum(per_example) / 3)
        assert result[size]["blocks"] == len(blocks) == 23 // size
        assert result[size]["nll"] == pytest.approx(sum(blocks) / len(blocks))
        if len(blocks) > 1:
            assert result[size]["block_std"] == pytest.approx(float(torch.tensor(blocks).std()))
    assert result[23]["block_std"] is None
    with pytest.raises(ValueError, match="block sizes"):
        block_estimates(log_weights, [24])


def test_masked_nll_sums_the_masked_pixels():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    mask = torch.rand(2, 4, 5) < 0.5
    got = masked_nll(logits, labels, mask)
    for b in range(2):
        expected = 0.0
        for i in range(4):
            for j in range(5):
                if mask[b, i, j]:
                    column = logits[b, :, i, j]
                    expected -= float(torch.log_softmax(column, 0)[labels[b, i, j]])
        assert float(got[b]) == pytest.approx(expected, rel=1e-5)
    full = masked_nll(logits, labels, torch.ones_like(mask))
    assert float((masked_nll(logits, labels, ~mask) + got - full).abs().max()) < 1e-4

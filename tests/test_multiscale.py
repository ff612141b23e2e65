"""Soft coarse targets and the multi-scale heads."""

import pytest
import torch
import torch.nn.functional as F

from cvae_seg.modules.heads import upsample_bilinear
from cvae_seg.modules.multiscale import (
    MultiScaleHeads,
    one_hot_labels,
    soft_coarse_targets,
    soft_nll,
)


def test_soft_targets_are_pooled_and_renormalised():
    labels = torch.tensor([[[0, 1, 2, 2], [0, 0, 2, 2], [1, 1, 255, 255], [1, 1, 255, 255]]])
    one_hot = one_hot_labels(labels, 3, ignore_index=255)
    assert one_hot[0, :, 2, 2].sum() == 0  # ignored pixel: no class
    coarse = soft_coarse_targets(one_hot, 2)
    torch.testing.assert_close(coarse[0, :, 0, 0], torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(coarse[0, :, 0, 1], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(coarse[0, :, 1, 0], torch.tensor([0.0, 1.0, 0.0]))
    assert coarse[0, :, 1, 1].sum() == 0  # a window with no labelled pixel
    # pooling 2x2 twice is one 4x4 pooling: presence of each class in the window
    once_more = torch.nn.functional.max_pool2d(torch.nn.functional.max_pool2d(one_hot, 2), 2)
    expected = once_more / once_more.sum(1, keepdim=True)
    torch.testing.assert_close(soft_coarse_targets(one_hot, 4), expected)


def test_soft_nll_skips_unlabelled_windows():
    logits = torch.randn(1, 3, 2, 2)
    target = torch.zeros(1, 3, 2, 2)
    target[0, 1, 0, 0] = 1.0
    expected = -torch.log_softmax(logits, 1)[0, 1, 0, 0]
    torch.testing.assert_close(soft_nll(logits, target), expected)


def test_heads_pool_or_upsample_any_decoder_to_their_stride():
    heads = MultiScaleHeads(8, 3, strides=(4, 2))
    for feature_size in (64, 16, 8):  # full, 1/4 and 1/8 resolution decoders
        out = heads(torch.randn(2, 8, feature_size, feature_size), (64, 64))
        assert out[4].shape == (2, 3, 16, 16) and out[2].shape == (2, 3, 32, 32)
    odd = heads(torch.randn(1, 8, 30, 30), (30, 30))
    assert odd[4].shape[-2:] == (8, 8) and odd[2].shape[-2:] == (15, 15)


@pytest.mark.parametrize(
    ("shape", "size"), [((6, 3, 1, 1), (8, 8)), ((4, 2, 8, 8), (32, 32)), ((2, 5, 7, 3), (20, 9))]
)
def test_cpu_bilinear_upsampling_equals_interpolate_with_its_gradient(shape, size):
    """The matmul form used on the CPU is torch's bilinear rule, forward and backward."""
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ours = upsample_bilinear(x, size)
    reference = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours, reference)
    weight = torch.randn_like(reference)
    (grad_ours,) = torch.autograd.grad((ours * weight).sum(), x)
    (grad_reference,) = torch.autograd.grad((reference * weight).sum(), x)
    torch.testing.assert_close(grad_ours, grad_reference)

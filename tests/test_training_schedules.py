"""cvae_seg.training.schedules: learning-rate factor and KL warm-up."""

import math

import pytest

from cvae_seg.config import TrainConfig
from cvae_seg.training import kl_warmup_factor, lr_factor


def test_lr_factor_warms_up_then_follows_the_scheduler():
    constant = lr_factor(TrainConfig(warmup_steps=4, max_steps=20))
    assert [constant(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cosine = lr_factor(TrainConfig(warmup_steps=2, max_steps=12, scheduler="cosine"))
    assert cosine(2) == 1.0 and cosine(12) == pytest.approx(0.0, abs=1e-12)
    assert cosine(7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cosine(50) == pytest.approx(0.0, abs=1e-12)  # past max_steps: stays at the end


def test_kl_warmup_is_linear_then_one():
    assert [kl_warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert kl_warmup_factor(0, 0) == 1.0

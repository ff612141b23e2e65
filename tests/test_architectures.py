"""The paper's network and the objective table."""

import pytest
import torch

from cvae_seg import OBJECTIVES, Sohn2015, create_model
from cvae_seg.objectives import get_objective


def test_sohn2015_shapes_follow_the_paper():
    net = Sohn2015(in_channels=3, classes=2)
    x = torch.randn(2, 3, 128, 128)
    assert net(x).shape == (2, 2, 128, 128)
    assert net.encoder(x).shape == (2, 128, 16, 16)  # conv s2 + two pools: 1/8
    assert net.decoder(net.encoder(x)).shape == (2, 48, 128, 128)
    with pytest.raises(RuntimeError, match="divisible by 8"):
        net(torch.randn(1, 3, 100, 100))
    with pytest.raises(TypeError, match="decoder_channels"):
        create_model("sohn2015", decoder_channels=3)


def test_objective_table():
    assert set(OBJECTIVES) == {"cnn", "gdnn", "gsnn", "cvae", "hybrid"}
    hybrid = get_objective("hybrid")
    assert hybrid.terms(0.3) == (("posterior", 0.3), ("prior", pytest.approx(0.7)))
    assert hybrid.kl_weight(0.3) == 0.3
    assert get_objective("gsnn").kl_weight(0.5) == 0 and not get_objective("gsnn").needs_recognition
    assert get_objective("gdnn").terms(0.5) == (("prior_mean", 1.0),)
    assert not get_objective("gdnn").stochastic and not get_objective("cnn").uses_latent

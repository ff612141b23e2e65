"""Sample grids: the same call draws the same picture, and the caller's random stream is
left where it was."""

import numpy as np
import torch
from conftest import TEST_ENCODER

import cvae_seg
from cvae_seg.config import DataConfig
from cvae_seg.data import build_dataset
from cvae_seg.visualization import sample_grid


def test_sample_grid_is_seeded_and_gives_the_callers_stream_back():
    data = build_dataset(DataConfig(dataset="shapes", size=32, shapes_val=3), "val", train=False)
    model = cvae_seg.create_model(
        "Unet", encoder_name=TEST_ENCODER, classes=len(data.classes), objective="cvae"
    )
    torch.manual_seed(7)
    first = sample_grid(model, data, [0, 1], num_samples=3, occlude=0.3, seed=5)
    after_first = torch.rand(4)
    torch.manual_seed(7)
    second = sample_grid(model, data, [0, 1], num_samples=3, occlude=0.3, seed=5)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    torch.testing.assert_close(torch.rand(4), after_first)  # drawing did not consume it
    torch.manual_seed(7)
    torch.testing.assert_close(torch.rand(4), after_first)
    other = sample_grid(model, data, [0, 1], num_samples=3, occlude=0.3, seed=6)
    assert not np.array_equal(np.asarray(first), np.asarray(other))

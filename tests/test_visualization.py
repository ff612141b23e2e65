"""Sample grids: the same call draws the same picture, and the caller's random stream is
left where it was. The reliability plot draws the calibration gap it is given."""

import numpy as np
import pytest
import torch
from conftest import TEST_ENCODER

import cvae_seg
from cvae_seg.config import DataConfig
from cvae_seg.data import build_dataset
from cvae_seg.evaluation import diagram_from_lists, diagram_to_lists
from cvae_seg.metrics import ReliabilityDiagram
from cvae_seg.visualization import reliability_plot, sample_grid


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


def test_models_grid_shows_each_model_as_its_own_sample_grid_on_the_same_inputs():
    """A user comparing heads sees every model on the same hidden squares: the first row is
    each image and its truth, each model's row is what `sample_grid` draws for that model
    with the same seed (prediction, samples, uncertainty per image)."""
    from cvae_seg.visualization import models_grid

    data = build_dataset(DataConfig(dataset="shapes", size=32, shapes_val=3), "val", train=False)
    models = {
        name: cvae_seg.create_model(
            "Unet", encoder_name=TEST_ENCODER, classes=len(data.classes), objective=objective
        )
        for name, objective in (("CVAE", "cvae"), ("GSNN", "gsnn"))
    }
    tile, samples, indices = 32 + 2, 2, [0, 2]  # a tile is framed: 1 px on each side
    drawn_width = (samples + 2) * tile  # per image: prediction, samples, uncertainty
    grid = np.asarray(models_grid(models, data, indices, num_samples=samples, occlude=0.3, seed=3))
    assert grid.shape[0] == 3 * tile + 16  # the inputs' row, column names, a row per model
    right_of_names = grid[:, grid.shape[1] - len(indices) * drawn_width :]
    tiles = np.concatenate([right_of_names[:tile], right_of_names[tile + 16 :]], 0)
    for row, model in enumerate(models.values(), start=1):
        alone = sample_grid(model, data, indices, samples, occlude=0.3, seed=3, scale=1)
        alone_rows = np.asarray(alone)[16:]  # below its column names
        for i in range(len(indices)):
            image_row = alone_rows[i * tile : (i + 1) * tile]
            block = tiles[:, i * drawn_width : (i + 1) * drawn_width]
            model_tiles = block[row * tile : (row + 1) * tile]
            np.testing.assert_array_equal(model_tiles, image_row[:, 2 * tile :])
            np.testing.assert_array_equal(block[:tile, : 2 * tile], image_row[:, : 2 * tile])
    with pytest.raises(ValueError, match="no models to draw"):
        models_grid({}, data, indices)

    # each model's row kept as arrays (a study keeps them when the checkpoint goes) redraws
    # the same picture; a row of other images or samples is refused, not drawn misaligned
    from cvae_seg.visualization import grid_from_rows, models_grid_rows

    kept = {n: models_grid_rows(m, data, indices, samples, 0.3, 3) for n, m in models.items()}
    inputs = kept["CVAE"][0]
    assert all(np.array_equal(inputs, other) for other, _ in kept.values())
    again = grid_from_rows(inputs, {n: row for n, (_, row) in kept.items()}, 2, samples)
    np.testing.assert_array_equal(np.asarray(again), grid)
    _, fewer = models_grid_rows(models["GSNN"], data, indices[:1], samples, 0.3, 3)
    with pytest.raises(ValueError, match=r"'GSNN'.*same images"):
        grid_from_rows(inputs, {"CVAE": kept["CVAE"][1], "GSNN": fewer}, 2, samples)


def test_grids_hide_nothing_by_default():
    """Without ``occlude`` the input is drawn as it is: no square hidden, no outline."""
    from cvae_seg.visualization import models_grid

    data = build_dataset(DataConfig(dataset="shapes", size=32, shapes_val=2), "val", train=False)
    model = cvae_seg.create_model(
        "Unet", encoder_name=TEST_ENCODER, classes=len(data.classes), objective="cvae"
    )
    image, tile = data.arrays.images[1], 32 + 2
    alone = np.asarray(sample_grid(model, data, [1], num_samples=2, scale=1))
    np.testing.assert_array_equal(alone[16 + 1 : 16 + 1 + 32, 1:33], image)
    side_by_side = np.asarray(models_grid({"CVAE": model}, data, [1], num_samples=2))
    width = 4 * tile  # per image: prediction, 2 samples, uncertainty
    inputs = side_by_side[:tile, side_by_side.shape[1] - width :]
    np.testing.assert_array_equal(inputs[1:33, 1:33], image)


def _red_pixels(image) -> int:
    pixels = np.asarray(image)
    return int(((pixels[..., 0] > 200) & (pixels[..., 1] < 120) & (pixels[..., 2] < 120)).sum())


def test_the_reliability_plot_shows_the_gap_only_where_there_is_one():
    edges = torch.linspace(0, 1, 11)
    centres = (edges[:-1] + edges[1:]) / 2
    counts = torch.tensor([0, 0, 0, 0, 0, 10, 20, 40, 80, 160])
    empty = torch.where(counts > 0, centres.double(), torch.nan)
    calibrated = ReliabilityDiagram(edges, empty, empty, counts)
    overconfident = ReliabilityDiagram(edges, empty - 0.3, empty, counts)
    assert _red_pixels(reliability_plot(calibrated)) == 0
    assert _red_pixels(reliability_plot(overconfident)) > 0
    # what evaluate writes to JSON reads back as the same diagram, empty bins included
    again = diagram_from_lists(diagram_to_lists(overconfident))
    assert torch.equal(again.counts, counts) and torch.allclose(
        again.accuracy, overconfident.accuracy, equal_nan=True
    )

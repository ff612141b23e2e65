"""Sample grids: one row per image with input, truth, prediction, samples and uncertainty;
or several models side by side on the same inputs; and a reliability diagram's picture."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import albumentations as A
import numpy as np
import torch
from PIL import Image, ImageDraw

from cvae_seg.checks import integer_at_least
from cvae_seg.data.common import ArraySegmentationDataset
from cvae_seg.metrics.calibration import ReliabilityDiagram
from cvae_seg.models.mnist import QuadrantCVAE
from cvae_seg.models.segmentation import SegmentationModel
from cvae_seg.transforms import RandomSquareOcclusion, square_mask

__all__ = [
    "PALETTE",
    "check_baseline",
    "colorize",
    "grid_from_rows",
    "models_grid",
    "models_grid_rows",
    "quadrant_grid",
    "reliability_plot",
    "sample_grid",
]

# background, then distinct colours; LFW reads as background / skin / hair
PALETTE = np.array(
    [[20, 20, 20], [230, 180, 140], [140, 70, 20], [60, 140, 230], [230, 60, 60], [80, 200, 80]],
    dtype=np.uint8,
)


def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) colours (unknown labels white)."""
    out = np.full((*labels.shape, 3), 255, dtype=np.uint8)
    known = labels < len(PALETTE)
    out[known] = PALETTE[labels[known]]
    return out


_HEADER = 16  # pixels of a row of column names


def _labelled_grid(rows: list[np.ndarray], names: list[str], tile: int, scale: int) -> Image.Image:
    """Stack rows of equal tiles, scale them up and add a header with the column names."""
    grid = np.concatenate(rows, 0)
    size = (grid.shape[1] * scale, grid.shape[0] * scale)
    image = Image.fromarray(grid).resize(size, Image.Resampling.NEAREST)
    header = Image.new("RGB", (image.width, _HEADER), "white")
    draw = ImageDraw.Draw(header)
    for column, name in enumerate(names):
        draw.text((column * tile * scale + 4, 2), name, fill="black")
    out = Image.new("RGB", (image.width, image.height + header.height), "white")
    out.paste(header, (0, 0))
    out.paste(image, (0, header.height))
    return out


def _framed(tile: np.ndarray) -> np.ndarray:
    return np.pad(tile, ((1, 1), (1, 1), (0, 0)), constant_values=255)


def _outline(region: np.ndarray) -> np.ndarray:
    """Pixels of ``region`` that touch a pixel outside it."""
    padded = np.pad(region, 1)
    inner = padded[2:, 1:-1] & padded[:-2, 1:-1] & padded[1:-1, 2:] & padded[1:-1, :-2]
    return region & ~inner


def _check_request(indices: list[int], num_samples: int, occlude: float = 0.0) -> None:
    """Refuse an empty or meaningless grid before any drawing, with the value at fault (an
    empty ``indices`` would otherwise fail deep inside as an unbound tile size)."""
    if not indices:
        raise ValueError("no images to draw: indices is empty; give at least one index")
    integer_at_least("num_samples", num_samples)
    if not 0.0 <= occlude < 1.0:
        raise ValueError(f"occlude is a share of the image side in [0, 1), got {occlude}")


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """A grid's own random stream: the caller's CPU and CUDA streams are given back after."""
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)
        yield


def _entropy_map(probabilities: torch.Tensor) -> np.ndarray:
    """Per-pixel entropy of (C, H, W) probabilities, scaled to 0-255 by its maximum log C."""
    entropy = -(probabilities * probabilities.clamp_min(1e-8).log()).sum(0)
    scaled = (entropy / np.log(probabilities.shape[0])).clamp(0, 1) * 255
    grey = scaled.byte().cpu().numpy()
    return np.stack([grey, grey, grey], -1)


def _occluder(occlude: float, seed: int) -> A.Compose:
    """Hides one random square of at most ``occlude`` of the side (none for 0), seeded so
    that every grid drawn with the same seed hides the same squares."""
    squares = (
        [RandomSquareOcclusion(max_side=occlude, min_side=occlude / 2, p=1.0)] if occlude else []
    )
    return A.Compose(squares, seed=seed, save_applied_params=True)


def _image_tiles(
    model: SegmentationModel,
    dataset: ArraySegmentationDataset,
    index: int,
    occluder: A.Compose,
    num_samples: int,
) -> dict[str, Any]:
    """One image's tiles: the input (its hidden square outlined in red), the truth, the
    prior-mean prediction, ``num_samples`` samples and the uncertainty (entropy of the mean
    sample)."""
    device = next(model.parameters()).device
    raw, label = dataset.arrays.images[index], dataset.arrays.labels[index]
    shown = occluder(image=raw)
    region = np.zeros(raw.shape[:2], dtype=bool)
    if occluder.transforms:
        region = square_mask(raw.shape, shown["applied_transforms"][0][1]["squares"])
    x = dataset.transform(image=shown["image"], mask=label)["image"].unsqueeze(0).to(device)
    prediction = model.predict(x)[0].argmax(0).cpu().numpy()  # first: samples start at the seed
    samples = model.sample(x, num_samples)[:, 0]
    picture = shown["image"].copy()
    picture[_outline(region)] = (255, 0, 0)
    return {
        "input": picture,
        "truth": colorize(label),
        "prediction": colorize(prediction),
        "samples": [colorize(s.argmax(0).cpu().numpy()) for s in samples],
        "uncertainty": _entropy_map(torch.softmax(samples.float(), 1).mean(0)),
    }


def _drawn(tiles: dict[str, Any]) -> list[np.ndarray]:
    """What the model made of one image: prediction, samples, uncertainty."""
    return [tiles["prediction"], *tiles["samples"], tiles["uncertainty"]]


def _row(tiles: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([_framed(t) for t in tiles], 1)


@torch.no_grad()
def sample_grid(
    model: SegmentationModel,
    dataset: ArraySegmentationDataset,
    indices: list[int],
    num_samples: int = 6,
    occlude: float = 0.0,
    seed: int = 0,
    scale: int = 2,
) -> Image.Image:
    """A PNG-ready grid; columns: input (occlusion outlined in red), ground truth, prior-mean
    prediction, ``num_samples`` samples, uncertainty (entropy of the mean sample).

    ``occlude`` > 0 hides one random square of at most that fraction of the side first, to
    show what the model makes of a hidden region. Seeded: the same call draws the same grid.
    """
    _check_request(indices, num_samples, occlude)
    occluder = _occluder(occlude, seed)
    rows = []
    with _seeded(seed):
        for index in indices:
            tiles = _image_tiles(model, dataset, index, occluder, num_samples)
            rows.append(_row([tiles["input"], tiles["truth"], *_drawn(tiles)]))
    samples_names = [f"sample {i + 1}" for i in range(num_samples)]
    names = ["input", "truth", "prediction", *samples_names, "uncertainty"]
    return _labelled_grid(rows, names, rows[0].shape[1] // len(names), scale)


@torch.no_grad()
def models_grid_rows(
    model: SegmentationModel,
    dataset: ArraySegmentationDataset,
    indices: list[int],
    num_samples: int = 3,
    occlude: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One model's part of `models_grid` as RGB arrays: the inputs row (each image with its
    hidden square outlined, and its truth) and the model's row (per image its prediction,
    ``num_samples`` samples and uncertainty). Kept as arrays, a row outlives its checkpoint:
    `grid_from_rows` puts rows drawn at different times side by side."""
    _check_request(indices, num_samples, occlude)
    occluder = _occluder(occlude, seed)  # anew for each model: the same squares hidden
    with _seeded(seed):
        images = [_image_tiles(model, dataset, i, occluder, num_samples) for i in indices]
    blank = [np.full_like(images[0]["truth"], 255)] * num_samples  # pads to a model's width
    inputs = _row([tile for t in images for tile in (t["input"], t["truth"], *blank)])
    return inputs, _row([tile for tiles in images for tile in _drawn(tiles)])


def grid_from_rows(
    inputs: np.ndarray,
    rows: Mapping[str, np.ndarray],
    num_images: int,
    num_samples: int,
    scale: int = 1,
) -> Image.Image:
    """`models_grid`'s picture from `models_grid_rows` arrays: ``inputs`` on top, then each
    named row; every row must have the inputs row's shape (the same images and samples)."""
    if not rows:
        raise ValueError("no rows to draw: give a mapping of names to model rows")
    for name, row in rows.items():
        if row.shape != inputs.shape:
            raise ValueError(
                f"row {name!r} is {row.shape}, the inputs row {inputs.shape}: draw every row "
                "from the same images and number of samples"
            )
    per_image = ["prediction", *(f"sample {i + 1}" for i in range(num_samples)), "uncertainty"]
    return _named_rows([inputs, *rows.values()], ["input, truth", *rows],
                       per_image * num_images, scale)  # fmt: skip


def models_grid(
    models: Mapping[str, SegmentationModel],
    dataset: ArraySegmentationDataset,
    indices: list[int],
    num_samples: int = 3,
    occlude: float = 0.0,
    seed: int = 0,
    scale: int = 1,
) -> Image.Image:
    """Several models side by side on the same inputs: a first row with each image (the
    same hidden square for every model) and its truth, then the column names, then one row
    per model, named on the left, with per image its prediction, ``num_samples`` samples
    and uncertainty.

    Each model draws with the same seed, so its row shows what `sample_grid` with the same
    ``num_samples``, ``occlude`` and ``seed`` shows for it. ``dataset`` should be an
    evaluation one (``train=False``): a random training transform would show each model
    other inputs.
    """
    if not models:
        raise ValueError("no models to draw: give a mapping of names to models")
    _check_request(indices, num_samples, occlude)
    rows = {}
    for name, model in models.items():
        inputs, rows[name] = models_grid_rows(model, dataset, indices, num_samples, occlude, seed)
    return grid_from_rows(inputs, rows, len(indices), num_samples, scale)


def _named_rows(
    rows: list[np.ndarray], row_names: list[str], column_names: list[str], scale: int
) -> Image.Image:
    """The rows of equal tiles scaled up, each row's name on the left (as wide as the
    longest), the column names between the first row and the rest; text is not scaled."""
    tiles = np.concatenate(rows, 0)
    image = Image.fromarray(tiles).resize(
        (tiles.shape[1] * scale, tiles.shape[0] * scale), Image.Resampling.NEAREST
    )
    row_height, tile_width = rows[0].shape[0] * scale, image.width // len(column_names)
    measure = ImageDraw.Draw(image)
    left = 8 + max(measure.multiline_textbbox((0, 0), name)[2] for name in row_names)
    out = Image.new("RGB", (left + image.width, image.height + _HEADER), "white")
    out.paste(image.crop((0, 0, image.width, row_height)), (left, 0))
    out.paste(image.crop((0, row_height, image.width, image.height)), (left, row_height + _HEADER))
    draw = ImageDraw.Draw(out)
    for row, name in enumerate(row_names):
        draw.multiline_text((4, row * row_height + (_HEADER if row else 0) + 4), name, fill="black")
    for column, name in enumerate(column_names):
        draw.text((left + column * tile_width + 4, row_height + 2), name, fill="black")
    return out


def check_baseline(model: QuadrantCVAE, baseline: QuadrantCVAE) -> None:
    """Refuse a Figure 3 baseline that does not complete the same quadrants as ``model``.

    Another kind of model has no digit to complete (it would fail deep in the drawing), and
    a QuadrantCVAE of other observed quadrants would fill its column from other inputs than
    the samples' column: a picture that looks right and is not.
    """
    if not isinstance(baseline, QuadrantCVAE):
        raise TypeError(
            f"the baseline is a {type(baseline).__name__}, not a QuadrantCVAE: Figure 3's NN "
            "column needs a model trained on MNIST quadrant completion"
        )
    if baseline.observed != model.observed:
        raise ValueError(
            f"the baseline observes {baseline.observed} quadrant(s) and the model "
            f"{model.observed} (data.mnist_observed): its column would complete other inputs; "
            "give one trained with the same mnist_observed"
        )


@torch.no_grad()
def quadrant_grid(
    model: QuadrantCVAE,
    dataset: torch.utils.data.Dataset,
    indices: list[int],
    num_samples: int = 6,
    baseline: QuadrantCVAE | None = None,
    seed: int = 0,
    scale: int = 3,
) -> Image.Image:
    """The paper's Figure 3: truth, the NN's prediction (``baseline``) and CVAE samples.

    Observed quadrants are shown as given; the hidden region is outlined in red and filled
    with each model's pixel probabilities. ``baseline`` must complete the same quadrants
    (see `check_baseline`).
    """
    _check_request(indices, num_samples)
    if not isinstance(model, QuadrantCVAE):
        raise TypeError(f"model is a {type(model).__name__}; quadrant_grid draws a QuadrantCVAE")
    if baseline is not None:
        check_baseline(model, baseline)
    device = next(model.parameters()).device
    x = torch.stack([dataset[i]["image"] for i in indices]).to(device)
    truth = torch.stack([dataset[i]["mask"] for i in indices])
    with _seeded(seed):
        columns = [("truth", truth)]
        if baseline is not None:
            columns.append(("NN", baseline.complete_digit(x, baseline.predict(x)).cpu()))
        samples = model.complete_digit(x, model.sample(x, num_samples)).cpu()
        columns += [(f"sample {i + 1}", samples[i]) for i in range(num_samples)]
    edge = _outline(~model.observed_mask.view(model.side, model.side).cpu().numpy())
    rows = []
    for row in range(len(indices)):
        tiles = []
        for _, digits in columns:
            grey = (digits[row].clamp(0, 1).numpy() * 255).astype(np.uint8)
            tile = np.stack([grey] * 3, -1)
            tile[edge] = (200, 30, 30)
            tiles.append(_framed(tile))
        rows.append(np.concatenate(tiles, 1))
    return _labelled_grid(rows, [name for name, _ in columns], model.side + 2, scale)


# where the reliability plot's axes sit inside its image, in pixels
_PLOT_MARGIN = (40, 24, 12, 36)  # left, top, right, bottom


class _Axes:
    """Maps (x, y) in [0, 1]^2 to pixels of the plot area, with a strip below for counts."""

    def __init__(self, size: int) -> None:
        left, top, right, bottom = _PLOT_MARGIN
        self.left, self.top = left, top
        self.width, self.height = size - left - right, size - top - bottom
        self.strip = self.height // 6
        self.plot = self.height - self.strip - 4

    def xy(self, x: float, y: float) -> tuple[float, float]:
        return self.left + x * self.width, self.top + (1 - y) * self.plot

    def strip_box(self, low: float, high: float, share: float) -> list[float]:
        base = self.top + self.height
        return [self.xy(low, 0)[0], base - share * self.strip, self.xy(high, 0)[0], base]


def _draw_bins(draw: ImageDraw.ImageDraw, axes: _Axes, diagram: ReliabilityDiagram) -> None:
    edges = diagram.edges.tolist()
    counts = diagram.counts.double()
    # log scale, so that the sparse low-confidence bins stay visible beside the full ones
    shares = (counts.clamp_min(1).log() / counts.clamp_min(2).max().log()).where(counts > 0, 0.0)
    bins = zip(edges, edges[1:], diagram.accuracy.tolist(), diagram.confidence.tolist(),
               shares.tolist(), strict=False)  # fmt: skip
    for low, high, accuracy, confidence, share in bins:
        if share > 0:
            draw.rectangle(axes.strip_box(low, high, share), fill=(170, 170, 170))
        if accuracy != accuracy:  # an empty bin (NaN): nothing to draw
            continue
        draw.rectangle([*axes.xy(low, accuracy), *axes.xy(high, 0)], fill=(70, 120, 200),
                       outline="white")  # fmt: skip
        below, above = sorted((accuracy, confidence))
        if above > below:  # a calibrated bin has no gap (PIL would still draw one pixel)
            draw.rectangle([*axes.xy(low, above), *axes.xy(high, below)], fill=(220, 80, 70))


def reliability_plot(diagram: ReliabilityDiagram, title: str = "", size: int = 320) -> Image.Image:
    """A reliability diagram as a picture: per confidence bin, the pixels' accuracy (blue bar)
    against the diagonal a calibrated model sits on (red: the gap to the bin's mean
    confidence), and the share of pixels in each bin (grey strip, log scale). Drawn with
    PIL like the sample grids: cvae_seg needs no plotting library."""
    size = integer_at_least("size", size, minimum=120)
    image = Image.new("RGB", (size, size), "white")
    draw, axes = ImageDraw.Draw(image), _Axes(size)
    _draw_bins(draw, axes, diagram)
    draw.line([axes.xy(0, 0), axes.xy(1, 1)], fill="black", width=1)
    draw.rectangle([*axes.xy(0, 1), *axes.xy(1, 0)], outline="black")
    for tick in (0.0, 0.5, 1.0):
        x, y = axes.xy(tick, tick)
        draw.text((x - 6, axes.top + axes.height + 4), f"{tick:.1f}", fill="black")
        draw.text((4, y - 6), f"{tick:.1f}", fill="black")
    draw.text((axes.left, size - 14), "confidence; grey: pixels per bin (log)", fill="black")
    draw.text((axes.left, 6), title or "accuracy per confidence bin", fill="black")
    return image

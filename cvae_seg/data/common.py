"""What every data set shares: decoded arrays cached in memory, augmentation, seeding.

Our data sets are small at 128 px (LFW 2,927 images, CUB 11,788: under 600 MB as uint8), so
each is decoded and resized once into arrays, and a DataLoader worker only augments. Every
item can carry its own augmentation seed, handed out by the training sampler
(`cvae_seg.training.StepSampler`) as an (index, seed) pair: the same step then sees the same
augmented batch whatever the number of workers, and a resumed run sees what the
uninterrupted run would have.

Data with several annotations per image (``SegmentationArrays.annotations``, (N, A, H, W))
train on one annotation per image and step, chosen by `annotator_for_seed` from that same
seed, and evaluate against all of them (the item's ``masks``).
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from cvae_seg.checks import integer_at_least
from cvae_seg.io import atomic_write

if TYPE_CHECKING:  # albumentations loads on first use: importing it checks for updates online
    import albumentations as A

__all__ = [
    "ARCHIVE_ERRORS",
    "DATA_ROOT_ENV",
    "ArraySegmentationDataset",
    "SegmentationArrays",
    "annotator_for_seed",
    "build_transform",
    "check_8bit_image",
    "decode_image",
    "resize_pair",
    "resolve_root",
]

DATA_ROOT_ENV = "CVAE_SEG_DATA"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# what a corrupt or truncated .gz / .tgz raises, none of it naming the file: tarfile's
# ReadError (no OSError), gzip's EOFError at a cut stream, zlib.error, gzip.BadGzipFile.
# The readers catch these and name the file and what to do.
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


@dataclass
class SegmentationArrays:
    """A decoded split: images (N, H, W, 3) uint8, labels (N, H, W) uint8, class names.

    ``annotations`` (N, A, H, W) uint8, when the data has A annotations per image: the label
    maps of its A annotators, in a fixed order; ``labels`` is then the first of them.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    names: tuple[str, ...] = ()
    annotations: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.shape[:3] != self.labels.shape:
            raise ValueError(
                f"images {self.images.shape} and labels {self.labels.shape} do not match"
            )
        if self.annotations is None:
            return
        shape = self.annotations.shape
        if len(shape) != 4 or shape[0] != len(self.labels) or shape[2:] != self.labels.shape[1:]:
            raise ValueError(
                f"annotations {shape} do not match labels {self.labels.shape}; expected "
                "(N, A, H, W) with A >= 1"
            )
        if shape[1] < 1 or not np.array_equal(self.annotations[:, 0], self.labels):
            raise ValueError("labels must be the first annotation of each image")

    @property
    def num_annotators(self) -> int:
        """A: annotations per image (1 for data with one label map per image)."""
        return 1 if self.annotations is None else self.annotations.shape[1]

    def save(self, path: str | os.PathLike) -> None:
        """Write to a compressed .npz atomically (for caches and for carrying to a GPU)."""
        atomic_write(
            path,
            lambda handle: np.savez_compressed(
                handle,
                images=self.images,
                labels=self.labels,
                classes=np.array(self.classes),
                names=np.array(self.names),
                **({} if self.annotations is None else {"annotations": self.annotations}),
            ),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> SegmentationArrays:
        with np.load(path) as data:
            return cls(
                data["images"],
                data["labels"],
                tuple(str(c) for c in data["classes"]),
                tuple(str(n) for n in data["names"]),
                data.get("annotations"),
            )


def resolve_root(root: str | os.PathLike | None, dataset: str) -> Path:
    """The data root from the argument, else from $CVAE_SEG_DATA/<dataset>."""
    if root is not None:
        return Path(root).expanduser()
    base = os.environ.get(DATA_ROOT_ENV)
    if not base:
        fetch = (
            f"; `cvae-seg download {dataset} --root DIR` fetches it into DIR/{dataset}"
            if dataset in ("lfw", "cub", "mnist")
            else ""
        )
        raise ValueError(
            f"no data root for {dataset}: set data.root in the config or the environment "
            f"variable {DATA_ROOT_ENV} (the folder that holds {dataset}/){fetch}"
        )
    return Path(base).expanduser() / dataset


def decode_image(source: str | os.PathLike | bytes, name: str | None = None) -> Image.Image:
    """Open and decode an image now, from a path or from bytes (``name`` says where they came
    from), so that a truncated or foreign file fails here naming itself: PIL decodes lazily
    and would otherwise fail later with "image file is truncated" and no file name."""
    name = name if name is not None else str(source)
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        image.load()
    except (OSError, ValueError, SyntaxError) as error:  # PIL raises all three on bad files
        raise ValueError(
            f"image {name} cannot be decoded ({error}); is it truncated or not an image?"
        ) from None
    return image


def check_8bit_image(image: Image.Image, name: str | os.PathLike) -> Image.Image:
    """``image``, refused when it is 16- or 32-bit greyscale (PIL modes "I;16*", "I", "F"):
    `resize_pair`'s ``convert("RGB")`` clips such values at 255, so the image comes out nearly
    all white, and PIL has no rescaling that is right for every source (12-bit CT, 16-bit
    microscopy, ...): the user must choose one."""
    if image.mode == "F" or image.mode.startswith("I"):
        raise ValueError(
            f"image {name} has PIL mode {image.mode!r} (16- or 32-bit greyscale); expected an "
            "8-bit grey or colour image: convert it to 8 bits first (rescale its values to "
            "0..255 as suits the data, e.g. a CT window), since reading it as RGB clips every "
            "value above 255"
        )
    return image


def resize_pair(image: Image.Image, label: Image.Image, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Bicubic image, nearest label, both to size x size (the paper's 128 px protocol)."""
    image = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    label = label.resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(image, dtype=np.uint8), np.asarray(label)


def build_transform(
    train: bool,
    flip: bool = True,
    noise: float = 0.0,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> A.Compose:
    """Flips and the paper's square noise (train only), then normalisation to a tensor.

    The occlusion fills 0 on the raw image (black, as the paper's 0 on [0, 1] images), before
    normalisation. albumentations is imported here, not at the top of the module, so that
    ``import cvae_seg`` (and the models, which import `cvae_seg.data.mnist`) never load it.
    """
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    from cvae_seg.transforms import RandomSquareOcclusion

    steps: list[A.BasicTransform] = []
    if train and flip:
        steps.append(A.HorizontalFlip(p=0.5))
    if train and noise > 0:
        steps.append(RandomSquareOcclusion(max_side=noise, fill=0, p=1.0))
    steps += [A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()]
    # seed=0 is only a start: ArraySegmentationDataset reseeds it for every item, from the
    # sampler's seed or, for integer indices, from torch's seed of the worker
    return A.Compose(steps, seed=0)


# mixed into an item's seed to choose its annotator, so the choice and the augmentation
# (seeded by the seed itself) are independent draws
_ANNOTATOR_STREAM = 0x616E6E6F
# mixed into torch's seed for the stream of seeds of items asked by integer index
_INTEGER_INDEX_STREAM = 0x696E6478


def annotator_for_seed(seed: int, num_annotators: int) -> int:
    """The annotator (0 .. A-1) a training item with augmentation seed ``seed`` learns from.

    A function of (seed, A) alone: the training sampler's (index, seed) pairs depend only on
    (run seed, step), so the same step draws the same annotators for any number of workers
    or processes, and after a resume. Uniform over the A annotators.
    """
    integer_at_least("num_annotators", num_annotators)
    state = np.random.SeedSequence([int(seed), _ANNOTATOR_STREAM]).generate_state(2, np.uint64)
    return int(state[0] % np.uint64(num_annotators))


class ArraySegmentationDataset(torch.utils.data.Dataset):
    """Items {"image": (3, H, W) float, "mask": (H, W) int64, "index": int} from arrays.

    ``dataset[(i, seed)]`` (the training sampler's keys) reseeds the transform first, so that
    the item's augmentation depends on the seed alone. ``dataset[i]`` (a plain DataLoader)
    does the same with the next seed of a stream seeded by ``torch.initial_seed()``, which
    torch sets apart in each DataLoader worker: workers draw different augmentations, and a
    run seeded with ``torch.manual_seed`` (or the loader's generator) draws them again.

    With A annotations per image (``arrays.annotations``): when ``draw_annotator`` (training),
    "mask" is one annotation, chosen by `annotator_for_seed` from the item's seed, and
    "annotator" says which; otherwise (evaluation) "mask" is the first annotation and "masks"
    (A, H, W) int64 holds all of them, transformed alike.
    """

    def __init__(
        self,
        arrays: SegmentationArrays,
        transform: A.Compose | None = None,
        draw_annotator: bool = False,
    ) -> None:
        self.arrays = arrays
        self.transform = transform or build_transform(train=False)
        self.draw_annotator = draw_annotator
        self._stream: np.random.Generator | None = None
        self._stream_seed: int | None = None  # the torch seed that ``_stream`` comes from

    @property
    def classes(self) -> tuple[str, ...]:
        return self.arrays.classes

    @property
    def num_classes(self) -> int:
        return len(self.arrays.classes)

    @property
    def num_annotators(self) -> int:
        return self.arrays.num_annotators

    def __len__(self) -> int:
        return len(self.arrays.images)

    def _seed_for_integer_index(self) -> int:
        """The augmentation seed of an item asked by integer index: the next draw of a stream
        seeded by ``torch.initial_seed()``. Torch sets that seed per DataLoader worker (base
        seed + worker id) and per process (``torch.manual_seed``); the stream restarts when
        it changes, so a forked worker never replays the copy it inherited (as the fixed
        ``A.Compose(seed=0)`` and an unseeded annotator generator did, in every worker)."""
        torch_seed = torch.initial_seed()
        if self._stream is None or torch_seed != self._stream_seed:
            entropy = np.random.SeedSequence([torch_seed, _INTEGER_INDEX_STREAM])
            self._stream, self._stream_seed = np.random.default_rng(entropy), torch_seed
        return int(self._stream.integers(2**32))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        if seed is not None:  # the sampler's (index, seed): the seed alone decides
            self.transform.set_random_seed(seed)
        else:
            seed = self._seed_for_integer_index()
            if hasattr(self.transform, "set_random_seed"):  # an A.Compose; any callable works
                self.transform.set_random_seed(seed)
        image, annotations = self.arrays.images[index], self.arrays.annotations
        if annotations is None:
            out = self.transform(image=image, mask=self.arrays.labels[index])
            return {"image": out["image"], "mask": out["mask"].long(), "index": index}
        count = annotations.shape[1]
        if self.draw_annotator:
            annotator = annotator_for_seed(seed, count)
            out = self.transform(image=image, mask=annotations[index, annotator])
            item = {"image": out["image"], "mask": out["mask"].long(), "index": index}
            return {**item, "annotator": annotator}
        out = self.transform(image=image, masks=list(annotations[index]))
        masks = torch.stack([torch.as_tensor(m) for m in out["masks"]]).long()
        return {"image": out["image"], "mask": masks[0], "masks": masks, "index": index}

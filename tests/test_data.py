"""Loaders against fixtures in the official layouts, and against a local copy when present."""

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.layouts import write_cub, write_lfw
from PIL import Image

from cvae_seg.config import DataConfig
from cvae_seg.data import build_dataset, load_coco, load_cub, load_lfw_parts, load_split
from cvae_seg.data.common import ArraySegmentationDataset, SegmentationArrays, build_transform
from cvae_seg.data.lfw import read_lfw_list
from cvae_seg.data.synthetic import make_occluded_shapes

SHARED_LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"


# ----------------------------------------------------------------------------- LFW
def test_lfw_from_folders(tmp_path):
    root = write_lfw(tmp_path / "lfw")
    arrays = load_lfw_parts(root, "train", size=16)
    assert arrays.images.shape == (3, 16, 16, 3) and arrays.images.dtype == np.uint8
    assert arrays.names == ("Bo_Diddley_0002", "Ann_Lee_0001", "Cy_Young_0001")
    assert arrays.classes == ("background", "skin", "hair")
    assert set(np.unique(arrays.labels)) == {0, 1, 2}
    assert (arrays.labels[:, 0] == 2).all() and arrays.labels[0, 12, 8] == 1
    assert read_lfw_list(root / "parts_validation.txt") == ["Ann_Lee_0002", "Cy_Young_0002"]


def test_lfw_from_the_archives_equals_the_folders(tmp_path):
    root = write_lfw(tmp_path / "extracted")
    packed = tmp_path / "packed"
    packed.mkdir()
    for part, archive in (
        ("lfw_funneled", "lfw-funneled.tgz"),
        ("parts_lfw_funneled_gt_images", "parts_lfw_funneled_gt_images.tgz"),
    ):
        with tarfile.open(packed / archive, "w:gz") as tar:
            tar.add(root / part, arcname=part)
    for split_list in root.glob("parts_*.txt"):
        (packed / split_list.name).write_text(split_list.read_text())
    a, b = load_lfw_parts(root, "val", 16), load_lfw_parts(packed, "val", 16)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_lfw_errors_name_the_file(tmp_path):
    root = write_lfw(tmp_path / "lfw")
    (root / "parts_test.txt").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"parts_test\.txt is missing.*LFW Part Labels layout"
    ):
        load_lfw_parts(root, "test")
    (root / "lfw_funneled" / "Ann_Lee" / "Ann_Lee_0001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"Ann_Lee_0001\.jpg"):
        load_lfw_parts(root, "train")
    label = root / "parts_lfw_funneled_gt_images" / "Cy_Young_0002.ppm"
    pixels = np.asarray(Image.open(label)).copy()
    pixels[0, 0] = (255, 255, 0)
    Image.fromarray(pixels).save(label)
    with pytest.raises(
        ValueError, match=r"Cy_Young_0002\.ppm: unknown label colour \(255, 255, 0\)"
    ):
        load_lfw_parts(root, "val")
    pixels[0, 0], pixels[1, 1] = (0, 0, 255), (10, 20, 30)  # a pixel the resize to 4 skips
    Image.fromarray(pixels).save(label)
    with pytest.raises(ValueError, match=r"Cy_Young_0002\.ppm: unknown label colour \(10, 20"):
        load_lfw_parts(root, "val", 4)
    Image.fromarray(pixels[:10]).save(label)
    with pytest.raises(ValueError, match=r"Cy_Young_0002\.ppm: label is 20x10"):
        load_lfw_parts(root, "val")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_lfw_parts(tmp_path / "nowhere", "val")
    with pytest.raises(ValueError, match="split must be one of"):
        load_lfw_parts(root, "validation")


@pytest.mark.skipif(not SHARED_LFW.is_dir(), reason=f"no LFW copy at {SHARED_LFW}")
def test_lfw_shared_copy():
    assert len(read_lfw_list(SHARED_LFW / "parts_test.txt")) == 927
    for split, count in (("train", 1500), ("val", 500)):
        arrays = load_lfw_parts(SHARED_LFW, split, size=32)
        assert arrays.images.shape == (count, 32, 32, 3)
        assert set(np.unique(arrays.labels)) == {0, 1, 2}
        shares = np.bincount(arrays.labels.ravel(), minlength=3) / arrays.labels.size
        assert shares[0] == pytest.approx(0.683, abs=0.02)  # README: 68.3% background


# ----------------------------------------------------------------------------- CUB
def test_cub_crops_thresholds_and_splits(tmp_path):
    root = write_cub(tmp_path)
    train = load_cub(root, "train", size=16, val_fraction=0.34, seed=3)
    val = load_cub(root, "val", size=16, val_fraction=0.34, seed=3)
    test = load_cub(root, "test", size=16)
    assert len(train.names) + len(val.names) == 6 and len(val.names) == 2 and len(test.names) == 4
    assert not set(train.names) & set(val.names)
    other_seeds = [
        set(load_cub(root, "val", 16, val_fraction=0.34, seed=s).names) for s in range(4, 8)
    ]
    assert any(names != set(val.names) for names in other_seeds)
    assert train.classes == ("background", "bird")
    # cropped to the box, the bird fills the crop but for the faint edge (a quarter of it)
    assert train.labels[0][:, 5:].all() and not train.labels[0][:, :3].any()
    parent = load_cub(tmp_path, "test", size=16)  # the folder both archives extract into
    assert parent.names == test.names
    with_margin = load_cub(root, "test", size=16, margin=0.5)
    assert with_margin.labels[0][0].sum() == 0 and with_margin.labels[0][8, 8] == 1


def test_cub_errors_name_the_file(tmp_path):
    root = write_cub(tmp_path)
    (root / "bounding_boxes.txt").write_text("1 20.0 10.0\n")
    with pytest.raises(ValueError, match=r"bounding_boxes\.txt:1: expected 5 fields"):
        load_cub(root, "test")
    (root / "bounding_boxes.txt").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"bounding_boxes\.txt is missing.*CUB_200_2011 layout"
    ):
        load_cub(root, "test")
    root = write_cub(tmp_path / "second")
    next((tmp_path / "second" / "segmentations").rglob("*_0007_*.png")).unlink()
    with pytest.raises(FileNotFoundError, match=r"Some_bird_0007_107\.png is missing"):
        load_cub(root, "test")


# ----------------------------------------------------------------------------- COCO
def test_coco_categories_become_classes(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(images / "a.jpg")
    square = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731
    annotation = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 30, "height": 20}],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "segmentation": square(0, 0, 10, 10),
             "area": 100, "bbox": [0, 0, 10, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "segmentation": square(20, 10, 30, 20),
             "area": 100, "bbox": [20, 10, 10, 10], "iscrowd": 0},
        ],
    }  # fmt: skip
    path = tmp_path / "train.json"
    path.write_text(json.dumps(annotation))
    arrays = load_coco(path, images, size=30)
    assert arrays.classes == ("background", "dog", "cat")  # sorted ids: 3 -> 1, 7 -> 2
    label = arrays.labels[0]
    assert label[3, 3] == 2 and label[25, 25] == 1 and label[25, 3] == 0
    with pytest.raises(ValueError, match=r"category ids \[9\] not found"):
        load_coco(path, images, category_ids=[9])
    (images / "a.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"a\.jpg"):
        load_coco(path, images)


# ----------------------------------------------------------------------------- shapes
def test_shapes_are_ambiguous_behind_the_occluder():
    arrays = make_occluded_shapes(300, size=64, mode_probs=(0.5, 0.5), seed=0)
    modes = np.array([int(n.rsplit("mode", 1)[1]) for n in arrays.names])
    assert 0.4 < modes.mean() < 0.6
    # the ear never shows: images differ from their label only behind the grey occluder
    for image, label, mode in zip(arrays.images[:50], arrays.labels[:50], modes[:50], strict=True):
        grey = np.abs(image.astype(int) - 128).max(-1) <= 8
        visible_object = (np.abs(image.astype(int) - 30).max(-1) > 8) & ~grey
        assert (label[visible_object] == 1).all()
        assert mode == 0 or (label & grey).any()
    np.testing.assert_array_equal(
        make_occluded_shapes(5, seed=1).images, make_occluded_shapes(5, seed=1).images
    )
    with pytest.raises(ValueError, match="sum to 1"):
        make_occluded_shapes(2, mode_probs=(0.5, 0.6))


# ----------------------------------------------------------------------------- datasets
def test_dataset_items_are_seeded_tensors(tmp_path):
    config = DataConfig(
        dataset="shapes", size=32, shapes_train=8, noise=0.4, cache_dir=str(tmp_path)
    )
    dataset = build_dataset(config, "train", train=True)
    item = dataset[(3, 1234)]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (32, 32) and item["mask"].dtype == torch.int64
    torch.testing.assert_close(dataset[(3, 1234)]["image"], item["image"])
    assert not torch.equal(dataset[(3, 99)]["image"], item["image"])
    assert list(tmp_path.glob("shapes_train_32_*.npz"))  # cached ...
    cached = load_split(config, "train")  # ... and read back identically
    np.testing.assert_array_equal(cached.images, dataset.arrays.images)


def _one_image_four_annotators() -> ArraySegmentationDataset:
    """8 copies of one image with 4 annotations (annotator k's mask is all k), augmented and
    drawing an annotator per item: items differ only by their augmentation and annotator."""
    image = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    annotations = np.broadcast_to(np.arange(4, dtype=np.uint8)[:, None, None], (8, 4, 16, 16))
    arrays = SegmentationArrays(
        np.repeat(image[None], 8, 0), annotations[:, 0].copy(), ("a", "b", "c", "d"), (),
        annotations.copy(),
    )  # fmt: skip
    return ArraySegmentationDataset(arrays, build_transform(True, noise=0.4), draw_annotator=True)


def _plain_loader_items(workers: int, seed: int) -> list[tuple[bytes, int]]:
    """(image bytes, annotator) of each item through a plain DataLoader (integer indices)."""
    loader = torch.utils.data.DataLoader(
        _one_image_four_annotators(), batch_size=1, num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    return [(b["image"].numpy().tobytes(), int(b["annotator"])) for b in loader]


def test_integer_indices_draw_a_reproducible_stream_of_their_own_in_each_worker():
    """A plain DataLoader asks for integer indices. Every worker used to start from the same
    A.Compose(seed=0) (the same flips and noise squares) and from a copy of one unseeded
    annotator generator (other annotators in every run); torch's seed of the worker now seeds
    them, so workers differ and a seeded run repeats. Keyed items ignore it."""
    first = _plain_loader_items(workers=2, seed=0)
    # batch 2j comes from worker 0 and 2j + 1 from worker 1, each its j-th item
    assert any(first[2 * j] != first[2 * j + 1] for j in range(4))
    assert len({image for image, _ in first}) > 4  # not four pairs of repeats
    assert _plain_loader_items(workers=2, seed=0) == first
    assert _plain_loader_items(workers=2, seed=1) != first
    with torch.random.fork_rng():  # without workers: the process's torch seed
        torch.manual_seed(3)
        dataset = _one_image_four_annotators()
        main = [
            (item["image"].numpy().tobytes(), item["annotator"])
            for item in map(dataset.__getitem__, range(8))
        ]
        assert len({a for _, a in main}) > 1
        torch.manual_seed(3)
        dataset = _one_image_four_annotators()
        again = [
            (item["image"].numpy().tobytes(), item["annotator"])
            for item in map(dataset.__getitem__, range(8))
        ]
        assert again == main
        keyed = dataset[(2, 77)]
        torch.manual_seed(4)
        other = dataset[(2, 77)]
    assert torch.equal(other["image"], keyed["image"]) and other["annotator"] == keyed["annotator"]


def test_arrays_round_trip(tmp_path):
    arrays = SegmentationArrays(
        np.zeros((2, 4, 4, 3), np.uint8), np.ones((2, 4, 4), np.uint8), ("a", "b"), ("x", "y")
    )
    arrays.save(tmp_path / "a.npz")
    back = SegmentationArrays.load(tmp_path / "a.npz")
    assert back.classes == ("a", "b") and back.names == ("x", "y")
    with pytest.raises(ValueError, match="do not match"):
        SegmentationArrays(np.zeros((2, 4, 4, 3)), np.zeros((2, 5, 4)), ("a",))


def test_download_checks_extracts_and_resumes_offline(tmp_path, monkeypatch):
    """`cvae-seg download` on file:// sources: MD5 checked, archives extracted, files already
    there not fetched again, a wrong MD5 refused by name; no network."""
    import hashlib

    from cvae_seg.data import download as downloads

    served = tmp_path / "served"
    served.mkdir()
    (served / "inner.txt").write_text("payload")
    with tarfile.open(served / "pack.tgz", "w:gz") as tar:
        tar.add(served / "inner.txt", arcname="pack/inner.txt")
    listing = served / "list.txt"
    listing.write_text("a list")
    md5 = hashlib.md5(listing.read_bytes()).hexdigest()
    sources = [((served / "pack.tgz").as_uri(), None), (listing.as_uri(), md5)]
    monkeypatch.setitem(downloads.SOURCES, "toy", sources)
    folder = downloads.download("toy", tmp_path / "data", progress=False)
    assert (folder / "pack" / "inner.txt").read_text() == "payload"
    assert (folder / "list.txt").read_text() == "a list"
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]
    (served / "pack.tgz").unlink()  # present locally: not fetched again
    downloads.download("toy", tmp_path / "data", progress=False)
    monkeypatch.setitem(downloads.SOURCES, "toy", [(listing.as_uri(), "0" * 32)])
    with pytest.raises(ValueError, match=r"list\.txt: MD5 differs"):
        downloads.download("toy", tmp_path / "data", progress=False)
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        downloads.download("imagenet", tmp_path / "data")
    (tmp_path / "afile").write_text("")
    with pytest.raises(OSError, match=r"download root .*afile: cannot make .*expected a folder"):
        downloads.download("toy", tmp_path / "afile", progress=False)


def test_download_tries_the_mirrors_first_then_names_every_address(tmp_path, monkeypatch):
    from cvae_seg.data import download as downloads

    served, mirror = tmp_path / "served", tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "list.txt").write_text("from the mirror")
    base = served.as_uri() + "/"
    monkeypatch.setitem(downloads.SOURCES, "toy", [(base + "list.txt", None)])
    monkeypatch.setattr(downloads, "MIRRORS", {base: (mirror.as_uri() + "/",)})
    folder = downloads.download("toy", tmp_path / "data", progress=False)
    assert (folder / "list.txt").read_text() == "from the mirror"  # the origin has no file
    monkeypatch.setitem(downloads.SOURCES, "toy", [(base + "other.txt", None)])
    with pytest.raises(OSError, match=r"other\.txt could not be downloaded from") as refused:
        downloads.download("toy", tmp_path / "data", progress=False)
    assert str(mirror.as_uri()) in str(refused.value) and base + "other.txt" in str(refused.value)


def test_broken_files_name_themselves(tmp_path):
    """A truncated image, an empty split list and a malformed COCO file each fail naming the
    file, where they used to fail as "image file is truncated", "need at least one array to
    stack" and a bare JSONDecodeError (issue 18)."""
    root = write_lfw(tmp_path / "lfw")
    image = root / "lfw_funneled" / "Cy_Young" / "Cy_Young_0002.jpg"
    image.write_bytes(image.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"Cy_Young_0002\.jpg cannot be decoded.*truncated"):
        load_lfw_parts(root, "val")
    (root / "parts_test.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"parts_test\.txt names no images"):
        load_lfw_parts(root, "test")
    (tmp_path / "images").mkdir()
    for text in ("{not json", "[1, 2]"):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError, match=r"COCO annotation file .*bad\.json cannot be read"):
            load_coco(tmp_path / "bad.json", tmp_path / "images")

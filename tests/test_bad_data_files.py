"""Corrupt data files and settings that used to fail with a raw traceback, or not at all.

Each case checks what a user relies on: the error names the file (or the config key) and
says what to do, and `raised_reading_input` counts it as the user's mistake, so that the
command prints it as one line with exit status 2. A few cases run the command itself. The
files are tiny, written into the test's folder (`helpers.layouts` for the official layouts).
"""

import gzip
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_CONFIG, TINY_DEMO
from helpers.cli import error_lines
from helpers.layouts import write_coco, write_cub, write_lfw
from PIL import Image

from cvae_seg import cli
from cvae_seg.cli.errors import one_line, raised_reading_input
from cvae_seg.config import DataConfig, load_config
from cvae_seg.data import download as downloads
from cvae_seg.data import load_coco, load_cub, load_lfw_parts, load_mnist, load_split
from cvae_seg.training import build_model

TINY = [str(DEMO_CONFIG), *TINY_DEMO, "train.max_steps=2", "train.eval_interval=2", "--quiet"]


@pytest.fixture(autouse=True)
def _no_data_root_from_the_environment(monkeypatch):
    monkeypatch.delenv("CVAE_SEG_DATA", raising=False)


def _user_error(call, *names: str) -> str:
    """Run ``call``, which must raise ValueError naming every one of ``names``, counted as a
    user error by the command's rule and printable as one line. Returns the message."""
    with pytest.raises(ValueError) as caught:
        call()
    message = str(caught.value)
    missing = [name for name in names if name not in message]
    assert not missing, f"{missing} not in: {message}"
    assert raised_reading_input(caught.value), message
    assert len(one_line(caught.value).splitlines()) == 1
    return message


def _command_refuses(argv, names, capsys) -> str:
    """The command exits 2 with one line on stderr naming every one of ``names``."""
    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and len(error_lines(err)) == 1, err
    missing = [name for name in names if name not in err]
    assert not missing, f"{missing} not in: {err}"
    return err


def _cut(path: Path) -> None:
    """Keep the first third of ``path``, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _pack(folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)


# -------------------------------------------------------------------------------- MNIST
def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("damage", ["truncated", "not_gzip"])
def test_a_broken_mnist_gz_names_itself(damage, tmp_path):
    """gzip's EOFError / BadGzipFile name no file; the loader names it and says to fetch it."""
    rng = np.random.default_rng(0)
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(_idx(rng.integers(0, 255, (40, 28, 28)))))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.arange(40) % 10))
    assert load_mnist(tmp_path, "test")[0].shape == (40, 28, 28)  # intact, it loads
    if damage == "truncated":
        _cut(images)
    else:
        images.write_bytes(b"<html>404 Not Found</html>")
    _user_error(lambda: load_mnist(tmp_path, "test"), str(images), "delete it", "download mnist")


# ---------------------------------------------------------------------------------- LFW
@pytest.mark.parametrize("damage", ["truncated", "not_an_archive"])
def test_a_broken_lfw_archive_names_itself(damage, tmp_path):
    """The archive read in place: tarfile's ReadError is no OSError and names no file."""
    root = write_lfw(tmp_path / "lfw")
    archive = root / "lfw-funneled.tgz"
    _pack(root / "lfw_funneled", archive)
    shutil.rmtree(root / "lfw_funneled")
    assert len(load_lfw_parts(root, "train", size=16).images) == 3  # intact, it loads
    if damage == "truncated":
        _cut(archive)
    else:
        archive.write_bytes(b"<html>404 Not Found</html>")
    _user_error(lambda: load_lfw_parts(root, "train", size=16), str(archive), "delete it")


def test_the_command_reports_a_truncated_lfw_archive_in_one_line(tmp_path, capsys):
    root = write_lfw(tmp_path / "lfw")
    _pack(root / "lfw_funneled", root / "lfw-funneled.tgz")
    shutil.rmtree(root / "lfw_funneled")
    _cut(root / "lfw-funneled.tgz")
    argv = ["train", *TINY, "data.dataset=lfw", f"data.root={root}", "data.batch_size=2",
            "--work-dir", tmp_path / "work"]  # fmt: skip
    _command_refuses(argv, ["lfw-funneled.tgz cannot be read", "delete it"], capsys)


# ----------------------------------------------------------------------------- download
def test_download_names_a_corrupt_archive_already_there(tmp_path, monkeypatch):
    """A file already there is not fetched again, so a corrupt archive there must be named,
    with the advice to delete it; following the advice fetches and extracts it."""
    served = tmp_path / "served"
    (served / "pack").mkdir(parents=True)
    (served / "pack" / "inner.txt").write_text("payload")
    _pack(served / "pack", served / "pack.tgz")
    monkeypatch.setitem(downloads.SOURCES, "toy", [((served / "pack.tgz").as_uri(), None)])
    kept = tmp_path / "data" / "toy" / "pack.tgz"
    kept.parent.mkdir(parents=True)
    kept.write_bytes((served / "pack.tgz").read_bytes()[:40])  # an interrupted copy
    message = _user_error(
        lambda: downloads.download("toy", tmp_path / "data", progress=False),
        str(kept),
        "delete it",
        "cvae-seg download toy",
    )
    assert f"--root {tmp_path / 'data'}" in message
    kept.unlink()
    folder = downloads.download("toy", tmp_path / "data", progress=False)
    assert (folder / "pack" / "inner.txt").read_text() == "payload"


# ---------------------------------------------------------------------------------- CUB
def _edit(path: Path, line: int, replacement: str | None) -> None:
    """Replace (None: drop) line ``line`` (1-based) of a table."""
    lines = path.read_text().splitlines()
    if replacement is None:
        del lines[line - 1]
    else:
        lines[line - 1] = replacement
    path.write_text("\n".join(lines) + "\n")


CUB_DAMAGE = {
    # case: (table, line, new text or None to drop it, what the error must say)
    "id_not_a_number": ("images.txt", 1, "one 001.Some_bird/x.jpg", "images.txt:1: expected 2"),
    "images_lack_an_id": ("images.txt", 3, None, "images.txt has no line for image id(s) [3]"),
    "boxes_lack_an_id": (
        "bounding_boxes.txt", 8, None, "bounding_boxes.txt has no line for image id(s) [8]"
    ),
    "split_lacks_an_id": (
        "train_test_split.txt", 5, None, "images.txt lists image id(s) [5], which train_test"
    ),
    "split_flag_not_0_or_1": ("train_test_split.txt", 2, "2 yes", "image 2 has 'yes'"),
    "box_not_numbers": ("bounding_boxes.txt", 4, "4 20 10 wide 20", "image 4 has box"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CUB_DAMAGE))
def test_cub_tables_that_are_malformed_or_disagree_are_named(case, tmp_path):
    """These used to raise a bare KeyError or int()/float() ValueError, or (a missing split
    line, a flag other than 0/1) silently drop an image or call it a test image."""
    root = write_cub(tmp_path)
    table, line, replacement, says = CUB_DAMAGE[case]
    _edit(root / table, line, replacement)
    for split in ("train", "test"):
        _user_error(lambda split=split: load_cub(root, split, size=16), table, says)


# --------------------------------------------------------------------------------- COCO
def _coco_with_a_crowd(root: Path) -> Path:
    """`write_coco` with a crowd region (bottom-right 8x8) added to image 1 of train.json."""
    write_coco(root)
    path = root / "annotations" / "train.json"
    document = json.loads(path.read_text())
    crowd = [[12, 12, 20, 12, 20, 20, 12, 20]]
    document["annotations"].append(
        {"id": 9, "image_id": 1, "category_id": 1, "segmentation": crowd, "area": 64,
         "bbox": [12, 12, 8, 8], "iscrowd": 1}
    )  # fmt: skip
    path.write_text(json.dumps(document))
    return path


def test_coco_crowds_take_the_configs_ignore_index(tmp_path):
    _coco_with_a_crowd(tmp_path / "coco")
    config = DataConfig(dataset="coco", root=str(tmp_path / "coco"), size=20, ignore_index=200)
    label = load_split(config, "train").labels[0]
    assert label[15, 15] == 200 and label[3, 3] == 1 and label[15, 3] == 0
    assert set(np.unique(label)) == {0, 1, 200}


@pytest.mark.parametrize(
    ("ignore_index", "says"), [(None, "e.g. 255"), (1, "expected a value in 2..255")]
)
def test_coco_crowds_without_a_usable_ignore_index_are_refused(ignore_index, says, tmp_path):
    """Unset, crowds would be painted 255 although the loss skips no value; 1 is a class."""
    path = _coco_with_a_crowd(tmp_path / "coco")
    root = str(tmp_path / "coco")
    config = DataConfig(dataset="coco", root=root, size=20, ignore_index=ignore_index)
    _user_error(lambda: load_split(config, "train"), str(path), "data.ignore_index", says)


def test_the_command_asks_for_data_ignore_index_for_coco_crowds(tmp_path, capsys):
    path = _coco_with_a_crowd(tmp_path / "coco")
    argv = ["train", *TINY, "data.dataset=coco", f"data.root={tmp_path / 'coco'}",
            "data.batch_size=2", "--work-dir", tmp_path / "work"]  # fmt: skip
    _command_refuses(argv, [str(path), "data.ignore_index", "255"], capsys)


def _rle_of_side(side: int) -> dict:
    """A compressed RLE (as pycocotools writes it) of an all-ones side x side mask."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(np.ones((side, side), np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _drop(entry: dict, key: str) -> None:
    del entry[key]


COCO_DAMAGE = {
    # case: (edit of write_coco's train.json document, what the error must say); the images
    # are 20x20, annotation id 1 is on image id 1. They used to load with an annotation or a
    # class missing, or fail in pycocotools naming neither annotation nor file.
    "category_not_listed": (
        lambda d: d["annotations"][1].update(category_id=7),
        ["annotation id(s) [2] have category_id 7", "not in its categories [1]"],
    ),
    "no_categories": (lambda d: d.update(categories=[]), ["lists no categories"]),
    "empty_segmentation": (
        lambda d: d["annotations"][0].update(segmentation=[]),
        ["annotation id 1 (image id 1) has an empty segmentation", "3 points or more"],
    ),
    "bbox_only": (
        lambda d: _drop(d["annotations"][0], "segmentation"),
        ["annotation id 1 (image id 1) has no segmentation", "polygons"],
    ),
    "two_point_polygon": (
        lambda d: d["annotations"][0].update(segmentation=[[0, 0, 10, 10]]),
        ["annotation id 1 (image id 1) has a polygon [0, 0, 10, 10]", "3 points or more"],
    ),
    "rle_of_another_size": (
        lambda d: d["annotations"][0].update(segmentation=_rle_of_side(10), iscrowd=0),
        ["annotation id 1 (image id 1) has an RLE of size [10, 10]", '"size": [height, width]'],
    ),
    "image_without_height": (
        lambda d: _drop(d["images"][0], "height"),
        ["image id 1 has no ['height']", '"width" and "height"'],
    ),
    "image_without_file_name": (
        lambda d: _drop(d["images"][1], "file_name"),
        ["image id 2 has no ['file_name']", '"file_name"'],
    ),
}


@pytest.mark.parametrize("case", sorted(COCO_DAMAGE))
def test_coco_entries_that_are_malformed_are_named(case, tmp_path):
    root = write_coco(tmp_path / "coco")
    path = root / "annotations" / "train.json"
    assert load_coco(path, root / "images", size=16).labels.max() == 1  # intact, it loads
    document = json.loads(path.read_text())
    edit, says = COCO_DAMAGE[case]
    edit(document)
    path.write_text(json.dumps(document))
    _user_error(lambda: load_coco(path, root / "images", size=16), str(path), *says)


def test_coco_category_ids_asked_twice_are_refused(tmp_path):
    """[1, 1] loaded two classes of one category; the second was never painted."""
    root = write_coco(tmp_path / "coco")
    path = root / "annotations" / "train.json"
    call = lambda: load_coco(path, root / "images", category_ids=[1, 1])  # noqa: E731
    _user_error(call, str(path), "category_ids [1, 1] name [1] more than once")


def test_coco_16_bit_images_are_refused(tmp_path):
    """PIL's convert("RGB") clips 16-bit values at 255: the image came out all white."""
    root = write_coco(tmp_path / "coco")
    image = root / "images" / "2.jpg"
    Image.fromarray(np.full((20, 20), 4000, np.uint16)).save(image, format="PNG")
    path = root / "annotations" / "train.json"
    _user_error(lambda: load_coco(path, root / "images"), str(image), "'I;16'", "to 8 bits")


# ------------------------------------------------------------------------ model settings
def test_an_unknown_encoder_weights_name_is_refused_in_one_line(tmp_path, capsys):
    """smp's KeyError "Wrong pretrained weights" becomes an error naming encoder_weights and
    smp's names; the value is no local file (smp would download a known name)."""
    argv = ["train", *TINY, "model.encoder_name=resnet18", "model.encoder_weights=foo.pth",
            "--work-dir", tmp_path / "work"]  # fmt: skip
    names = ["encoder_weights 'foo.pth'", "'resnet18'", "'imagenet'", "None (random"]
    _command_refuses(argv, names, capsys)


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["model.encoder_name=resnet18", "model.backbone_kwargs={foo: 1}"],
         ["unexpected argument 'foo'", "only to 'tu-' (timm) encoders, not 'resnet18'"]),
        (["data.batch_size=1000"], ["data.batch_size=1000", "training set"]),
    ],
)  # fmt: skip
def test_a_run_refused_while_set_up_leaves_no_folder_behind(overrides, names, tmp_path, capsys):
    """smp drops an argument it does not name for its own encoders (refused now); either
    refusal removes the folders the run made, and keeps a work dir that was there."""
    work = tmp_path / "new" / "work"
    argv = ["train", *TINY, *overrides, "--work-dir", work]
    _command_refuses(argv, names, capsys)
    assert not (tmp_path / "new").exists()
    work.mkdir(parents=True)
    _command_refuses(argv, [], capsys)
    assert work.is_dir()


def test_the_command_shows_a_settings_warning_in_one_line(tmp_path, capsys):
    """A warning about the user's settings reads like the command's errors: one line naming
    the command, not the library file that raised it (here pydantic's) and its source."""
    argv = ["train", *TINY, "data.dataset=lfw", f"data.root={tmp_path / 'nowhere'}",
            "--work-dir", tmp_path / "work"]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("cvae-seg train: warning: data.dataset='lfw' does not use data.")
    assert lines[1].startswith("cvae-seg train: error: ") and "nowhere" in lines[1]


def test_sohn2015_refuses_a_data_size_it_cannot_take_when_built():
    """It used to build and fail at the first step with a RuntimeError traceback."""
    # the demo's tu- encoder does not apply to sohn2015: back to the default name
    arch = ["model.arch=sohn2015", "model.encoder_name=resnet18"]
    config = load_config(DEMO_CONFIG, [*TINY_DEMO, *arch, "data.size=36"])
    _user_error(lambda: build_model(config, 2), "data.size=36", "'sohn2015'", "divisible by 8")
    config = load_config(DEMO_CONFIG, [*TINY_DEMO, *arch, "data.size=40"])  # 8 | 40, 32 does not
    assert build_model(config, 2).backbone.output_stride == 8

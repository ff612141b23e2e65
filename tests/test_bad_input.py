"""Bad input as a new user gives it (issue 18): every mistake refused in one line that names
the thing at fault and what was expected, with exit status 2 and no traceback; a run that
goes non-finite stopped with status 1, naming the step, with its checkpoint intact; the
Python API raising ValueError or TypeError with the same kind of message.

Most cases run `cvae_seg.cli.main` in this process (fast); a few run the command and the
tools in a real process, to show the no-traceback path end to end. The fixtures are tiny:
the demo config at 32 px with a two-update run, and LFW, CUB and COCO trees of a few images
written by `helpers.layouts`. docs/reliability.md counts these cases.
"""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DEMO_CONFIG, TINY_DEMO
from helpers.cli import error_lines
from helpers.layouts import write_coco, write_cub, write_lfw

import cvae_seg
import cvae_seg.evaluation
from cvae_seg import cli
from cvae_seg.training import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(DEMO_CONFIG)
TINY = [*TINY_DEMO, "train.max_steps=2", "train.eval_interval=2"]  # a run of two updates
SMALL_DATA = "data.batch_size=2"  # the LFW, CUB and COCO trees hold a few images per split


# ------------------------------------------------------------------------------ helpers
def _status(argv) -> int:
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exit_info:  # argparse's usage errors
        return exit_info.code


def _refused(capsys, argv, names, status=2) -> str:
    """Run the command in this process and check the refusal: the exit status, one line on
    stderr that names every one of ``names``, no traceback. Returns the line."""
    code = _status(argv)
    err = capsys.readouterr().err
    assert code == status, err
    assert "Traceback" not in err, err
    lines = error_lines(err)
    assert len(lines) == 1, err
    message = lines[0]
    assert message.startswith("cvae-seg"), message
    missing = [name for name in names if name not in message]
    assert not missing, f"{missing} not in: {message}"
    return message


def _run(*args, launcher=(sys.executable, "-m", "cvae_seg.cli"), cwd=ROOT):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run(
        [*launcher, *map(str, args)], capture_output=True, text=True, timeout=240, env=env, cwd=cwd
    )


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Each case in its own folder (a default work dir lands there), with no data root set."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CVAE_SEG_DATA", raising=False)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """A finished two-update demo run (2 classes, latent_channels 8): its work dir."""
    work = tmp_path_factory.mktemp("demo_run")
    cli.run(["train", DEMO, *TINY, "--work-dir", str(work), "--quiet"])
    return work


@pytest.fixture(scope="module")
def lfw_checkpoint(tmp_path_factory) -> Path:
    """last.pt of a two-update run on a tiny LFW tree: 3 classes (background, skin, hair)."""
    base = tmp_path_factory.mktemp("lfw_run")
    root = write_lfw(base / "lfw")
    data = ["data.dataset=lfw", f"data.root={root}", SMALL_DATA]
    cli.run(["train", DEMO, *TINY, *data, "--work-dir", str(base / "work"), "--quiet"])
    return base / "work" / "last.pt"


# ------------------------------------------------------------------------ config files
CONFIG_FILES = {
    "duplicate_key": (
        "model:\n  arch: Unet\n  arch: FPN\n",
        ["bad.yaml, line 3", "duplicate key 'arch'", "first given on line 2"],
    ),
    "duplicate_section": (
        "model: {arch: Unet}\ntrain: {lr: 0.1}\nmodel: {arch: FPN}\n",
        ["bad.yaml, line 3", "duplicate key 'model'"],
    ),
    "empty_file": ("", ["bad.yaml is empty", "expected sections such as model"]),
    "comments_only": ("# settings to come\n", ["bad.yaml is empty"]),
    "yaml_syntax_error": (
        "model:\n  arch: Unet\ntrain: {lr: 0.1\n",
        ["bad.yaml, line 4", "not valid YAML", "expected ',' or '}'"],
    ),
    "tab_indentation": (
        "model:\n  arch: Unet\n\tobjective: cvae\n",
        ["bad.yaml, line 3", "not valid YAML", "'\\t'"],
    ),
    "top_level_list": ("- model\n- train\n", ["bad.yaml", "expected a mapping of sections"]),
    "section_as_a_number": ("train: 3\n", ["train: Input should be a valid dictionary", "got 3"]),
    "misspelt_section": ("trian:\n  lr: 0.1\n", ["trian: unknown key (did you mean train?)"]),
    "missing_base_file": (
        "_base_: nowhere.yaml\n",
        ["nowhere.yaml (the _base_ of", "bad.yaml) does not exist"],
    ),
    "base_as_a_list": ("_base_: [a.yaml, b.yaml]\n", ["_base_ must name one config file"]),
    "base_includes_itself": ("_base_: bad.yaml\n", ["bad.yaml includes itself through _base_"]),
    "not_text": (b"\x80\x02 a pickle, not YAML", ["bad.yaml is not UTF-8 text", "YAML config"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILES))
def test_config_file(case, tmp_path, capsys):
    text, names = CONFIG_FILES[case]
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    _refused(capsys, ["train", path], names)
    assert not (tmp_path / "work_dirs").exists()  # refused before any work dir was made


# ---------------------------------------------------------------------------- overrides
OVERRIDES = {
    "near_miss_key": (
        "train.max_step=3",
        ["train.max_step: unknown key (did you mean max_steps?)", "valid keys: amp"],
    ),
    "word_for_a_number": ("train.lr=fast", ["train.lr: Input should be a valid number", "'fast'"]),
    "fraction_for_a_count": ("train.max_steps=2.5", ["train.max_steps", "integer", "2.5"]),
    "unknown_choice": ("model.objective=vae", ["model.objective", "'cvae'", "(got 'vae')"]),
    "zero_latent_channels": (
        "model.latent_channels=0",
        ["model.latent_channels: Input should be greater than or equal to 1", "(got 0)"],
    ),
    "no_equals_sign": ("train.lr", ["override 'train.lr' must look like key.sub=value"]),
    "value_not_yaml": ("train.lr=[1", ["train.lr", "not valid YAML", "close brackets"]),
    "key_below_a_value": ("train.lr.x=3", ["override 'train.lr.x=3': lr is not a section"]),
    "zero_std": ("data.std=[0.5,0,0.5]", ["data.std.1: Input should be greater than 0"]),
    "nan_mean": ("data.mean=[.nan,0.5,0.5]", ["data.mean.0", "finite number"]),
    "infinite_lr": ("train.lr=.inf", ["train.lr", "finite number"]),
    "two_std_values": ("data.std=[1,1]", ["data.std.2: Field required", "[1, 1]"]),
    "size_below_8": ("data.size=7", ["data.size", "greater than or equal to 8", "got 7"]),
    "zero_batch": ("data.batch_size=0", ["data.batch_size", "got 0"]),
    "unknown_dataset": ("data.dataset=imagenet", ["data.dataset", "'lfw'", "'imagenet'"]),
    "every_scale_off": (
        "model.scale_weights=[0,0,0]",
        ["model.scale_weights: expected three weights >= 0, not all 0"],
    ),
    "weights_named_none": (
        "model.encoder_weights=None",
        ["model.encoder_weights: 'None' is a string", "null"],
    ),
    "classes_in_backbone_kwargs": (
        "model.backbone_kwargs={classes: 5}",
        ["model.backbone_kwargs: classes=5 cannot be set here"],
    ),
    "activation_in_backbone_kwargs": (
        "model.backbone_kwargs={activation: softmax2d}",
        ["model.backbone_kwargs: activation='softmax2d'", "raw logits"],
    ),
    "beta_of_one_or_more": ("train.betas=[0.9,1.5]", ["train.betas.1", "less than 1", "1.5"]),
    "negative_train_seed": ("train.seed=-5", ["train.seed", "got -5"]),
    "zero_kernel": ("model.gaussian_kernel_sizes=[0,3,3]", ["model.gaussian_kernel_sizes.0"]),
}


@pytest.mark.parametrize("case", sorted(OVERRIDES))
def test_override(case, capsys):
    override, names = OVERRIDES[case]
    _refused(capsys, ["train", DEMO, override], names)


MODEL_SETTINGS = {
    "unknown_arch": ("model.arch=Unett", ["model.arch: unknown model 'Unett'", "Unet, "]),
    "unknown_encoder": (
        "model.encoder_name=resnet9999",
        ["encoder_name 'resnet9999' is not an encoder", "closest: resnet"],
    ),
    "unknown_timm_encoder": ("model.encoder_name=tu-no_such_net", ["'tu-no_such_net'", "timm"]),
    "setting_of_another_head": (
        "model.head=ssn",
        ["model.latent_channels does not apply to head 'ssn'", "rank"],
    ),
    "setting_of_another_arch": (
        "model.mlp_hidden=[8]",
        ["model.mlp_hidden does not apply to arch 'Unet'"],
    ),
}


@pytest.mark.parametrize("case", sorted(MODEL_SETTINGS))
def test_model_setting(case, capsys):
    override, names = MODEL_SETTINGS[case]
    _refused(capsys, ["train", DEMO, *TINY, override, "--quiet"], names)


DATA_SETTINGS = {
    "side_fpn_cannot_take": (
        ["model.arch=FPN", "data.size=33"],
        ["data.size=33: arch 'FPN' cannot take it", "divisible by 32"],
    ),
    "batch_above_the_data": (
        ["data.batch_size=64"],
        ["data.batch_size=64 is more than the 24 items of the training set"],
    ),
    "known_truth_side": (
        ["data.dataset=known_truth", "data.size=30"],
        ["data.dataset=known_truth (data.size", "multiple of 8", "got 30"],
    ),
    "known_truth_holdout_of_every_layout": (
        ["data.dataset=known_truth", "data.size=32", "data.known_truth_holdout=0.999"],
        ["data.known_truth_holdout)", "holdout must leave layouts to train on"],
    ),
    "shapes_modes_not_summing_to_1": (
        ["data.shapes_modes=[0.5,0.6]"],
        ["data.dataset=shapes (data.size, data.shapes_modes)", "sum to 1"],
    ),
    "cache_dir_is_a_file": (
        ["data.cache_dir=taken"],
        ["data.cache_dir taken is a file; expected a folder"],
    ),
}


@pytest.mark.parametrize("case", sorted(DATA_SETTINGS))
def test_data_setting(case, tmp_path, capsys):
    overrides, names = DATA_SETTINGS[case]
    (tmp_path / "taken").write_text("a file of the user's")
    _refused(capsys, ["train", DEMO, *TINY, *overrides, "--quiet"], names)


def test_a_side_that_is_no_multiple_of_32_trains_with_unet(tmp_path):
    """smp 0.6's Unet takes any side (its decoder resizes each feature map to the size of
    its skip connection), so a 40 px run is not refused."""
    argv = ["train", DEMO, *TINY, "data.size=40", "--work-dir", tmp_path / "w", "--quiet"]
    assert _status(argv) == 0 and load_checkpoint(tmp_path / "w" / "last.pt")["step"] == 2


# ---------------------------------------------------------------------------- arguments
ARGUMENTS = {
    "missing_config": (["train", "no_such.yaml"], ["no_such.yaml does not exist"]),
    "config_is_a_folder": (["train", ROOT / "configs"], ["configs is not a file"]),
    "unknown_flag": (["train", DEMO, "--epochs", "3"], ["unrecognized arguments: --epochs 3"]),
    "negative_seed": (["train", DEMO, "--seed", "-1"], ["--seed", "0 or more, got -1"]),
    "zero_processes": (["train", DEMO, "--nproc-per-node", "0"], ["--nproc-per-node", "got 0"]),
    "partial_iterations_negative": (
        ["evaluate", DEMO, DEMO, "--partial", "--iterations", "-3"],
        ["--iterations", "at least 1, got -3"],
    ),
    "partial_iterations_zero": (
        ["evaluate", DEMO, DEMO, "--partial", "--iterations", "0"],
        ["--iterations", "at least 1, got 0"],
    ),
    "zero_images": (["visualize", DEMO, DEMO, "--num-images", "0"], ["--num-images", "got 0"]),
    "occlude_above_one": (
        ["visualize", DEMO, DEMO, "--occlude", "1.5"],
        ["--occlude", "[0, 1)", "got 1.5"],
    ),
    "occlude_negative": (["visualize", DEMO, DEMO, "--occlude", "-0.2"], ["--occlude", "-0.2"]),
    "samples_as_a_word": (["visualize", DEMO, DEMO, "--num-samples", "two"], ["'two'"]),
    "unknown_split": (["evaluate", DEMO, DEMO, "--split", "dev"], ["--split", "'dev'"]),
    "missing_checkpoint": (["evaluate", DEMO, "no_such.pt"], ["no_such.pt does not exist"]),
    "missing_baseline": (
        ["visualize", DEMO, DEMO, "--baseline", "nn.pt"],
        ["--baseline", "nn.pt does not exist"],
    ),
    "unknown_data_set_to_download": (["download", "imagenet"], ["'imagenet'", "'lfw'"]),
    "no_command": ([], ["required: COMMAND"]),
    "unknown_command": (["fit"], ["'fit'", "'train'"]),
}


@pytest.mark.parametrize("case", sorted(ARGUMENTS))
def test_argument(case, capsys):
    argv, names = ARGUMENTS[case]
    _refused(capsys, argv, names)


def test_a_user_error_is_checked_before_processes_start(capsys):
    """--nproc-per-node reads the config before it starts a worker: one line, status 2."""
    _refused(capsys, ["train", DEMO, "--nproc-per-node", "2", "train.no_such_key=1"], ["no_such"])


# ------------------------------------------------------------------- the run and device
def _copy_run(demo_run: Path, tmp_path: Path) -> Path:
    work = tmp_path / "run"
    shutil.copytree(demo_run, work)
    return work


RESUMES = {
    "max_steps_below_the_checkpoint": (
        ["train.max_steps=1"],
        ["train.max_steps=1 is below step 2 of checkpoint", "set train.max_steps to 2 or more"],
    ),
    "other_latent_size": (
        ["train.max_steps=3", "model.latent_channels=16"],
        ["does not fit", "model.latent_channels: checkpoint 8, config 16", "differ in shape"],
    ),
    "other_arch": (
        ["train.max_steps=3", "model.arch=FPN"],
        ["model.arch: checkpoint 'Unet', config 'FPN'"],
    ),
}


@pytest.mark.parametrize("case", sorted(RESUMES))
def test_resume_refused_leaves_the_run_as_it_was(case, demo_run, tmp_path, capsys):
    overrides, names = RESUMES[case]
    work = _copy_run(demo_run, tmp_path)
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    argv = ["train", DEMO, *TINY, *overrides, "--work-dir", work, "--resume", "--quiet"]
    _refused(capsys, argv, names)
    assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()} == before


def test_resume_with_a_changed_lr_applies_it_and_every_record_agrees(demo_run, tmp_path, caplog):
    """A changed train.lr on resume is applied, said in the log, and recorded alike in
    config.yaml, last.pt's config and optimizer, and train.csv (tests/test_training_loop.py
    checks the same through `train`)."""
    import csv

    from cvae_seg.config import load_config

    work = _copy_run(demo_run, tmp_path)
    changed = ["train.max_steps=3", "train.eval_interval=3", "train.lr=5e-4", "--quiet"]
    assert _status(["train", DEMO, *TINY, *changed, "--work-dir", work, "--resume"]) == 0
    assert "resumed with train.lr=0.0005 (the checkpoint trained with 0.001)" in caplog.text
    state = load_checkpoint(work / "last.pt")
    assert load_config(work / "config.yaml").train.lr == state["config"]["train"]["lr"] == 5e-4
    assert [group["lr"] for group in state["optimizer"]["param_groups"]] == [5e-4]
    with open(work / "train.csv", newline="") as handle:
        assert [float(row["lr"]) for row in csv.DictReader(handle)][-1] == 5e-4


def test_resume_with_changed_data_settings_names_each(demo_run, tmp_path, caplog):
    """Going on at another size or with other normalisation is allowed but said, key by
    key; where the data lives (data.root) may change silently."""
    work = _copy_run(demo_run, tmp_path)
    changed = ["train.max_steps=3", "train.eval_interval=3", "data.size=64", "data.flip=true",
               f"data.root={tmp_path}", "--quiet"]  # fmt: skip
    assert _status(["train", DEMO, *TINY, *changed, "--work-dir", work, "--resume"]) == 0
    said = [r.getMessage() for r in caplog.records if "resumed with data." in r.getMessage()]
    assert len(said) == 2, said
    assert said[0].startswith("resumed with data.flip=True (checkpoint ") and "False)" in said[0]
    assert said[1].startswith("resumed with data.size=64 (checkpoint ") and "32)" in said[1]


def test_resume_from_a_missing_file(capsys):
    _refused(capsys, ["train", DEMO, "--resume", "gone.pt"], ["--resume", "gone.pt does not exist"])


def test_resume_without_an_earlier_run(tmp_path, capsys):
    argv = ["train", DEMO, "--resume", "--work-dir", tmp_path / "new"]
    _refused(capsys, argv, ["new/last.pt does not exist", "holds no earlier run"])


def test_resume_written_before_the_config_resumes_the_work_dir(tmp_path, capsys):
    """`train --resume configs/x.yaml`: the YAML is the config (a checkpoint never is)."""
    argv = ["train", "--resume", DEMO, "--work-dir", tmp_path / "new"]
    _refused(capsys, argv, ["new/last.pt does not exist", "holds no earlier run"])


def test_resume_from_a_config_instead_of_a_checkpoint(tmp_path, capsys):
    argv = ["train", DEMO, *TINY, "--work-dir", tmp_path / "w", "--resume", DEMO, "--quiet"]
    _refused(capsys, argv, ["checkpoint", "demo.yaml is a YAML config; expected a .pt"])


def test_a_fresh_run_over_an_earlier_one_says_so(demo_run, tmp_path, caplog):
    """As in mmsegmentation, a fresh run writes over the work dir; never unsaid."""
    work = _copy_run(demo_run, tmp_path)
    with caplog.at_level(logging.WARNING):
        assert _status(["train", DEMO, *TINY, "--work-dir", work, "--quiet"]) == 0
    assert f"work dir {work} already holds a run (last.pt, best.pt" in caplog.text
    assert "--resume continues it instead" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _status(["train", DEMO, *TINY, "--work-dir", tmp_path / "new", "--quiet"]) == 0
    assert "already holds a run" not in caplog.text


def test_resume_from_a_folder_names_the_file_it_expects(demo_run, capsys):
    argv = ["train", DEMO, *TINY, "--resume", demo_run, "--quiet"]
    _refused(capsys, argv, ["is a folder; expected a .pt file such as", "last.pt"])


@pytest.mark.parametrize("where", ["a_file", "below_a_file"])
def test_work_dir_that_cannot_be_a_folder(where, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file of the user's")
    work = tmp_path / "taken" if where == "a_file" else tmp_path / "taken" / "run"
    message = _refused(capsys, ["train", DEMO, *TINY, "--work-dir", work], [f"work dir {work}"])
    assert "is a file" in message or "cannot be made" in message
    assert (tmp_path / "taken").read_text() == "a file of the user's"


@pytest.mark.parametrize("command", ["train", "evaluate", "visualize"])
def test_cuda_on_a_machine_without_a_gpu(command, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [command, DEMO] + ([] if command == "train" else [DEMO]) + ["--device", "cuda"]
    _refused(capsys, argv, ["device 'cuda'", "0 CUDA GPU(s)"])


def test_a_device_that_does_not_exist(capsys):
    _refused(capsys, ["train", DEMO, "--device", "tpu9"], ["'tpu9'", "expected cpu, cuda"])


# ---------------------------------------------------------------------------- data sets
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])


def _broken_lfw(how: str, tmp_path: Path) -> Path:
    root = write_lfw(tmp_path / "lfw")
    if how == "truncated_jpeg":
        _truncate(root / "lfw_funneled" / "Ann_Lee" / "Ann_Lee_0001.jpg")
    elif how == "truncated_ppm":
        _truncate(root / "parts_lfw_funneled_gt_images" / "Ann_Lee_0001.ppm")
    elif how == "empty_split_list":
        (root / "parts_train.txt").write_text("\n")
    elif how == "missing_image":
        (root / "lfw_funneled" / "Ann_Lee" / "Ann_Lee_0001.jpg").unlink()
    elif how == "missing_split_list":
        (root / "parts_train.txt").unlink()
    return root


def _broken_coco(how: str, tmp_path: Path) -> Path:
    root = write_coco(tmp_path / "coco")
    annotations = root / "annotations" / "train.json"
    if how == "malformed_json":
        annotations.write_text('{"images": [')
    elif how == "json_not_a_mapping":
        annotations.write_text("[1, 2]")
    elif how == "missing_annotations":
        annotations.unlink()
    elif how == "truncated_image":
        _truncate(root / "images" / "1.jpg")
    return root


def _broken_cub(how: str, tmp_path: Path) -> Path:
    root = write_cub(tmp_path / "cub")
    if how == "bounding_box_fields":
        (root / "bounding_boxes.txt").write_text("1 20.0 10.0\n")
    elif how == "truncated_image":
        _truncate(next((root / "images").rglob("*_0001_*.jpg")))
    return root


DATA = {
    "lfw_truncated_jpeg": ("lfw", _broken_lfw, ["Ann_Lee_0001.jpg cannot be decoded", "truncated"]),
    "lfw_truncated_ppm": ("lfw", _broken_lfw, ["Ann_Lee_0001.ppm cannot be decoded", "truncated"]),
    "lfw_empty_split_list": ("lfw", _broken_lfw, ["parts_train.txt names no images"]),
    "lfw_missing_image": ("lfw", _broken_lfw, ["Ann_Lee_0001.jpg"]),
    "lfw_missing_split_list": ("lfw", _broken_lfw, ["parts_train.txt is missing", "LFW Part"]),
    "coco_malformed_json": ("coco", _broken_coco, ["train.json cannot be read"]),
    "coco_json_not_a_mapping": ("coco", _broken_coco, ["train.json cannot be read"]),
    "coco_missing_annotations": ("coco", _broken_coco, ["train.json is missing"]),
    "coco_truncated_image": ("coco", _broken_coco, ["1.jpg cannot be decoded"]),
    "cub_bounding_box_fields": ("cub", _broken_cub, ["bounding_boxes.txt:1: expected 5 fields"]),
    "cub_truncated_image": ("cub", _broken_cub, ["Some_bird_0001_101.jpg cannot be decoded"]),
}


@pytest.mark.parametrize("case", sorted(DATA))
def test_broken_data_set(case, tmp_path, capsys):
    dataset, breaker, names = DATA[case]
    root = breaker(case.split("_", 1)[1], tmp_path)
    argv = ["train", DEMO, *TINY, f"data.dataset={dataset}", f"data.root={root}", SMALL_DATA]
    _refused(capsys, argv, names)


@pytest.mark.parametrize(
    ("dataset", "names"),
    [
        ("lfw", ["LFW root", "does not exist", "download_data.py"]),
        ("cub", ["CUB root", "does not exist", "download_data.py"]),
        ("mnist", ["MNIST root", "train-images-idx3-ubyte", "download_data.py mnist"]),
    ],
)
def test_missing_data_root_says_where_to_get_the_data(dataset, names, tmp_path, capsys):
    argv = ["train", DEMO, *TINY, f"data.dataset={dataset}", f"data.root={tmp_path / 'none'}"]
    if dataset == "mnist":  # the MNIST task's model and validation metric
        argv += ["model.arch=mnist_mlp", "train.best_metric=nll"]
    _refused(capsys, argv, names)


def test_no_data_root_at_all_says_how_to_set_and_fetch_one(capsys):
    names = ["no data root for lfw", "data.root", "CVAE_SEG_DATA", "cvae-seg download lfw"]
    _refused(capsys, ["train", DEMO, *TINY, "data.dataset=lfw"], names)


# ---------------------------------------------------------------- evaluate and visualize
@pytest.mark.parametrize("command", ["evaluate", "visualize"])
def test_a_3_class_checkpoint_on_2_class_data(command, lfw_checkpoint, capsys, caplog):
    """Scores named iou_skin and iou_hair on shapes data would look believable: refused,
    after the warning that the data set is not the training's."""
    argv = [command, DEMO, lfw_checkpoint, *TINY_DEMO, "--device", "cpu"]
    names = ["predicts the classes ['background', 'skin', 'hair']", "['background', 'object']"]
    _refused(capsys, argv, names)
    assert "data.dataset is 'shapes'" in caplog.text and "trained on 'lfw'" in caplog.text


def _edited_checkpoint(demo_run: Path, tmp_path: Path, edit) -> Path:
    state = load_checkpoint(demo_run / "last.pt")
    edit(state)
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    return path


def test_a_checkpoint_of_other_classes_on_the_same_data_set_is_refused(demo_run, tmp_path, capsys):
    """Same data set, other classes (a COCO file with other categories, say): the scores
    would carry the wrong class names, so the command refuses, naming both lists."""

    def other_classes(state):
        state["classes"] = ["background", "ear"]

    checkpoint = _edited_checkpoint(demo_run, tmp_path, other_classes)
    argv = ["evaluate", DEMO, str(checkpoint), *TINY_DEMO, "--device", "cpu"]
    _refused(capsys, argv, ["predicts the classes ['background', 'ear']", "'object'"])


def _latent_16(state):
    state["config"]["model"]["latent_channels"] = 16


def _truncated_copy(demo_run: Path, tmp_path: Path) -> Path:
    path = tmp_path / "cut.pt"
    path.write_bytes((demo_run / "last.pt").read_bytes()[:5000])
    return path


def _empty_folder(demo_run: Path, tmp_path: Path) -> Path:
    (tmp_path / "folder").mkdir()
    return tmp_path / "folder"


CHECKPOINTS = {
    "truncated": (_truncated_copy, ["cut.pt could not be read", "truncated"]),
    "a_config_file": (lambda run, tmp: Path(DEMO), ["demo.yaml is a YAML config", "config first"]),
    "tensors_of_another_latent_size": (
        lambda run, tmp: _edited_checkpoint(run, tmp, _latent_16),
        ["edited.pt does not fit", "differ in shape", "prior_net"],
    ),
    "another_version": (
        lambda run, tmp: _edited_checkpoint(run, tmp, lambda state: state.update(version=7)),
        ["edited.pt has version 7", "reads version 1"],
    ),
    "pretrained_folder_without_config": (
        _empty_folder,
        ["folder/config.json is missing", "save_pretrained"],
    ),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_unusable_checkpoint(case, demo_run, tmp_path, capsys):
    make, names = CHECKPOINTS[case]
    _refused(capsys, ["evaluate", DEMO, make(demo_run, tmp_path), *TINY_DEMO], names)


# ------------------------------------------------------------------- non-finite stops
def test_lr_1e6_stops_naming_the_step_with_last_pt_intact(tmp_path, capsys):
    """Status 1 (a run that diverged: not a typo, not a bug); last.pt from before the first
    update, readable, its weights finite."""
    argv = ["train", DEMO, *TINY, "train.lr=1e6", "train.max_steps=6", "--work-dir", "w"]
    message = _refused(capsys, [*argv, "--quiet"], ["stopped: step", "last good checkpoint"], 1)
    assert "(rank 0)" in message and ("loss" in message or "forward pass" in message)
    state = load_checkpoint(tmp_path / "w" / "last.pt")
    assert state["step"] == 0
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not list((tmp_path / "w").glob(".*tmp*"))


def test_nan_in_a_batch_stops_before_the_model_sees_it(tmp_path, monkeypatch, capsys):
    import cvae_seg.training.loop as loop

    original, calls = loop._next_batch, []

    def poisoned(run, batches):
        x, y = original(run, batches)
        calls.append(1)
        if len(calls) == 2:
            x = x.clone()
            x[0, 0, 0, 0] = float("nan")
        return x, y

    monkeypatch.setattr(loop, "_next_batch", poisoned)
    argv = ["train", DEMO, *TINY, "train.max_steps=4", "--work-dir", "w", "--quiet"]
    _refused(capsys, argv, ["stopped: step 2 (rank 0)", "input batch holds 1 non-finite"], 1)
    assert load_checkpoint(tmp_path / "w" / "last.pt")["step"] == 0


def test_a_nan_batch_leaves_weights_and_batchnorm_statistics_untouched():
    """train_step refuses the batch before the forward pass, which would move BatchNorm's
    running statistics to NaN and spoil every later prediction."""
    from cvae_seg.config import load_config
    from cvae_seg.training import build_model, train_step

    model = build_model(load_config(DEMO, TINY), num_classes=2).train()
    optimizer = torch.optim.Adam(model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 2, (2, 32, 32))
    x[1, 2, 3, 4] = float("inf")
    with pytest.raises(FloatingPointError, match="input batch holds 1 non-finite values"):
        train_step(model, x, y, optimizer)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------- the Python API
@pytest.fixture(scope="module")
def unet():
    return cvae_seg.create_model("Unet", encoder_name="tu-test_resnet", classes=3,
                                 latent_channels=4).eval()  # fmt: skip


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


def _labels(value):
    y = torch.zeros(2, 32, 32, dtype=torch.long)
    y[0, 0, 0] = value
    return y


CALLS = {
    "label_7_for_3_classes": (
        lambda m: m.loss(_x(2, 3, 32, 32), _labels(7)),
        ValueError,
        r"1 label\(s\) outside 0\.\.2 .*e\.g\. 7; the model was built with classes=3",
    ),
    "negative_label": (lambda m: m.loss(_x(2, 3, 32, 32), _labels(-1)), ValueError, r"e\.g\. -1"),
    "x_without_a_batch_axis": (
        lambda m: m(_x(3, 32, 32)),
        ValueError,
        r"x must be \(B, 3, H, W\) images, got \(3, 32, 32\)",
    ),
    "x_of_one_channel": (lambda m: m(_x(2, 1, 32, 32)), ValueError, r"got \(2, 1, 32, 32\)"),
    "x_in_uint8": (
        lambda m: m(_x(2, 3, 32, 32, dtype=torch.uint8)),
        TypeError,
        r"floating-point image tensor, got torch\.uint8; convert uint8 images",
    ),
    "x_in_float64": (
        lambda m: m(_x(2, 3, 32, 32, dtype=torch.float64)),
        TypeError,
        r"x is torch\.float64 but the model's weights are torch\.float32",
    ),
    "y_of_floats": (
        lambda m: m.loss(_x(2, 3, 32, 32), torch.zeros(2, 32, 32)),
        TypeError,
        r"y must hold integer class labels, got dtype torch\.float32",
    ),
    "y_of_another_size": (
        lambda m: m.loss(_x(2, 3, 32, 32), torch.zeros(2, 16, 32, dtype=torch.long)),
        ValueError,
        r"y must be \(B, H, W\) labels matching x \(2, 3, 32, 32\), got shape \(2, 16, 32\)",
    ),
    "zero_samples": (lambda m: m.sample(_x(2, 3, 32, 32), 0), ValueError, r"num_samples.*got 0"),
}


@pytest.mark.parametrize("case", sorted(CALLS))
def test_model_call(case, unet):
    call, error, message = CALLS[case]
    with pytest.raises(error, match=message):
        call(unet)


@pytest.mark.parametrize("iterations", [0, -3])
def test_partial_observation_without_iterations(iterations, unet):
    """Zero or negative iterations would make the "iterative" column the plain one."""
    from cvae_seg.evaluation import partial_observation

    with pytest.raises(ValueError, match=f"num_iterations must be a positive .*{iterations}"):
        partial_observation(unet, [], torch.device("cpu"), [0, 0, 0], num_iterations=iterations)


def _loader(batches=1, size=32):
    return [{"image": torch.randn(2, 3, size, size), "mask": torch.randint(0, 3, (2, size, size))}
            for _ in range(batches)]  # fmt: skip


EVALUATION_CALLS = {
    "tuple_batches": (
        lambda m: cvae_seg.evaluation.evaluate(
            m, [(torch.randn(2, 3, 32, 32), torch.zeros(2, 32, 32))], ["a", "b", "c"], "cpu"
        ),
        TypeError,
        "each batch must be a dict with 'image'",
    ),
    "empty_loader": (
        lambda m: cvae_seg.evaluation.evaluate_likelihood(m, [], "cpu", 2),
        ValueError,
        "the loader gave no batches",
    ),
    "class_names_a_string": (
        lambda m: cvae_seg.evaluation.evaluate(m, _loader(), "abc", "cpu", likelihood=False),
        TypeError,
        "class_names must be a list of names",
    ),
    "one_class_name_too_many": (
        lambda m: cvae_seg.evaluation.evaluate(m, _loader(), list("abcd"), "cpu"),
        ValueError,
        r"class_names names 4 classes .* the model predicts 3",
    ),
    "plain_smp_model": (
        lambda m: cvae_seg.evaluation.evaluate(m.backbone, _loader(), list("abc"), "cpu"),
        TypeError,
        r"expected a cvae_seg model .* cvae_seg.CVAE\(smp_model\)",
    ),
    "drop_prob_in_percent": (
        lambda m: cvae_seg.evaluation.partial_observation(
            m, _loader(), "cpu", [0, 0, 0], drop_probs=(50,)
        ),
        ValueError,
        r"drop_probs must be a list of probabilities in \(0, 1\] \(0.25, not 25\)",
    ),
    "block_size_zero": (
        lambda m: cvae_seg.evaluation.partial_observation(
            m, _loader(), "cpu", [0, 0, 0], block_sizes=(0,)
        ),
        ValueError,
        "block_sizes must be a non-empty list of positive integers",
    ),
    "fill_of_two_channels": (
        lambda m: cvae_seg.evaluation.partial_observation(m, _loader(), "cpu", [0, 0]),
        ValueError,
        r"fill must be one finite value per input channel \(3\)",
    ),
    "sample_count_not_a_list": (
        lambda m: cvae_seg.evaluation.evaluate_annotators(m, _loader(), 3, "cpu", 16),
        ValueError,
        "sample_counts must be a non-empty list of positive integers, got 16",
    ),
}


@pytest.mark.parametrize("case", sorted(EVALUATION_CALLS))
def test_evaluation_calls_name_what_they_expected(case, unet):
    call, error, message = EVALUATION_CALLS[case]
    with pytest.raises(error, match=message):
        call(unet)


def test_evaluation_takes_a_device_name_and_scores_as_with_a_device(unet):
    loader = _loader(2)
    torch.manual_seed(0)
    named = cvae_seg.evaluation.evaluate(unet, loader, list("abc"), "cpu", num_samples=2)
    torch.manual_seed(0)
    given = cvae_seg.evaluation.evaluate(unet, loader, list("abc"), torch.device("cpu"),
                                         num_samples=2)  # fmt: skip
    assert named == given


BUILDS = {
    "latent_channels_0": (
        ("Unet",),
        {"latent_channels": 0},
        r"latent_channels must be a positive integer, got 0",
    ),
    "mnist_latent_channels_0": (
        ("mnist_mlp",),
        {"latent_channels": 0, "mlp_hidden": (8,)},
        r"latent_channels must be a positive integer, got 0",
    ),
    "zero_classes": (("Unet",), {"classes": 0}, r"classes must be a positive integer, got 0"),
    "unknown_arch": (("Unett",), {}, r"unknown model 'Unett'; expected one of Unet, "),
    "unknown_encoder": (
        ("Unet",),
        {"encoder_name": "resnet9999"},
        r"encoder_name 'resnet9999' is not an encoder \(closest: resnet",
    ),
    "unknown_objective": (("Unet",), {"objective": "vae"}, r"objective must be one of .*'vae'"),
}


@pytest.mark.parametrize("case", sorted(BUILDS))
def test_create_model(case):
    args, kwargs, message = BUILDS[case]
    if args[0] == "Unet":
        kwargs = {"encoder_name": "tu-test_resnet", **kwargs}
    with pytest.raises(ValueError, match=message):
        cvae_seg.create_model(*args, **kwargs)


# ------------------------------------------------------------- in a real process
TOOL_TRAIN = (sys.executable, str(ROOT / "tools" / "train.py"))
TOOL_EVALUATE = (sys.executable, str(ROOT / "tools" / "evaluate.py"))


def _one_line_no_traceback(result, status: int, names) -> None:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr, result.stderr
    lines = [line for line in error_lines(result.stderr) if line.startswith("cvae-seg")]
    assert len(lines) == 1, result.stderr
    assert all(name in lines[0] for name in names), lines[0]


def test_process_duplicate_key(tmp_path):
    (tmp_path / "dup.yaml").write_text("model:\n  arch: Unet\n  arch: FPN\n")
    result = _run("train", tmp_path / "dup.yaml", cwd=tmp_path)
    _one_line_no_traceback(result, 2, ["dup.yaml, line 3", "duplicate key 'arch'"])


def test_process_tool_bad_override():
    result = _run(DEMO, "train.lr=[1", launcher=TOOL_TRAIN)
    _one_line_no_traceback(result, 2, ["train.lr", "not valid YAML"])


def test_process_tool_3_class_checkpoint(lfw_checkpoint):
    result = _run(DEMO, lfw_checkpoint, *TINY_DEMO, "--device", "cpu", launcher=TOOL_EVALUATE)
    _one_line_no_traceback(result, 2, ["['background', 'skin', 'hair']"])


def test_process_tool_truncated_image(tmp_path):
    root = _broken_lfw("truncated_jpeg", tmp_path)
    argv = [DEMO, *TINY, "data.dataset=lfw", f"data.root={root}", "--work-dir", tmp_path / "w"]
    argv.append(SMALL_DATA)
    result = _run(*argv, launcher=TOOL_TRAIN)
    _one_line_no_traceback(result, 2, ["Ann_Lee_0001.jpg cannot be decoded"])


def test_process_tool_non_finite_stop(tmp_path):
    argv = [DEMO, *TINY, "train.lr=1e6", "train.max_steps=6", "--quiet", "--work-dir", "w"]
    result = _run(*argv, launcher=TOOL_TRAIN, cwd=tmp_path)
    _one_line_no_traceback(result, 1, ["stopped: step", "last good checkpoint"])
    assert load_checkpoint(tmp_path / "w" / "last.pt")["step"] == 0


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["data.dataset=mnist"], ["model.arch='Unet'", "data.dataset='mnist'", "mnist_mlp"]),
        (["model.arch=mnist_mlp"], ["model.arch='mnist_mlp'", "data.dataset='shapes'"]),
        (
            ["data.dataset=mnist", "model.arch=mnist_mlp", "train.best_metric=pixel_accuracy"],
            ["train.best_metric='pixel_accuracy'", "train.best_metric=nll"],
        ),
        (
            ["train.best_metric=nll", "eval.likelihood_during_training=false"],
            ["train.best_metric='nll'", "eval.likelihood_during_training=true"],
        ),
    ],
)
def test_settings_that_only_work_together_are_refused_before_training(overrides, names, capsys):
    """Found out otherwise at the first step (a model for other data) or the first
    evaluation (a tracked metric validation does not report), after minutes of training."""
    _refused(capsys, ["train", DEMO, *TINY, *overrides], names)

"""evaluate and visualize check what they were given before any work: the output path, the
flags that the data set would ignore, the --baseline of Figure 3, and the data settings a
checkpoint was trained with (taken from it, or refused when they name another data set).

The models are untrained exports (save_pretrained folders), made in a second; MNIST commands
point data.root at a folder that does not exist, so a refusal that names the flag proves it
came before the data was read.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_DEMO as TINY
from helpers.cli import refused_in_process as _refused

from cvae_seg import cli
from cvae_seg.cli.arguments import parse
from cvae_seg.cli.compare import row_names
from cvae_seg.cli.errors import UserError
from cvae_seg.config import load_config
from cvae_seg.training import build_model, load_for_evaluation
from cvae_seg.visualization import check_baseline, quadrant_grid

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")
MNIST_Q1 = str(ROOT / "configs" / "mnist_q1_cvae.yaml")
MNIST_TINY = ["model.mlp_hidden=[8]", "model.latent_channels=2"]


def _export(folder: Path, config_path: str, overrides: list[str], classes: list[str]) -> str:
    """An untrained model saved as training saves its best one (config and classes kept)."""
    config = load_config(config_path, overrides)
    model = build_model(config, len(classes))
    model.save_pretrained(
        str(folder), training_config=config.model_dump(mode="json"), classes=classes
    )
    return str(folder)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("exports")
    mnist_nn = str(ROOT / "configs" / "mnist_q2_nn.yaml")
    return {
        "shapes": _export(root / "shapes" / "pretrained", DEMO, TINY, ["background", "object"]),
        "mnist_q1": _export(root / "mnist_q1", MNIST_Q1, MNIST_TINY, ["pixel"]),
        "mnist_q2_nn": _export(root / "mnist_q2_nn", mnist_nn, MNIST_TINY, ["pixel"]),
    }


@pytest.fixture
def no_mnist(tmp_path) -> str:
    """data.root of MNIST at a folder that does not exist: reading the data would fail."""
    return f"data.root={tmp_path / 'no_mnist_here'}"


# ------------------------------------------------------------------------ the output path
def test_visualize_refuses_an_out_name_that_is_not_png(tmp_path, capsys):
    message = _refused(["visualize", DEMO, DEMO, "--out", str(tmp_path / "grid.jpg")], capsys)
    assert "grid.jpg" in message and "PNG" in message


def test_out_that_is_a_folder_is_refused_before_any_work(tmp_path):
    """Refused at once, in one line naming --out: the checkpoint given is not even a model,
    so an error about the output proves it came before the checkpoint was read."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    for command in ("evaluate", "visualize"):
        result = subprocess.run(
            [sys.executable, "-m", "cvae_seg.cli", command, DEMO, DEMO, "--out", str(tmp_path)],
            capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
        )  # fmt: skip
        message = result.stderr.strip()
        assert result.returncode == 2 and "Traceback" not in message, message
        assert len(message.splitlines()) == 1, message
        assert message.startswith(f"cvae-seg {command}: error: --out {tmp_path} is a folder")
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_out_under_a_file_is_refused(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    message = _refused(["evaluate", DEMO, DEMO, "--out", str(a_file / "eval.json")], capsys)
    assert f"--out {a_file / 'eval.json'}" in message and f"{a_file}, which is a file" in message


def test_out_that_is_the_checkpoint_is_refused(tmp_path, capsys):
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"weights")
    message = _refused(["visualize", DEMO, str(checkpoint), "--out", str(checkpoint)], capsys)
    assert "--out" in message and "would destroy" in message
    assert checkpoint.read_bytes() == b"weights"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any folder")
def test_out_in_an_unwritable_folder_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    message = _refused(["evaluate", DEMO, DEMO, "--out", str(locked / "new" / "e.json")], capsys)
    assert "--out" in message and f"folder {locked} is not writable" in message


def test_default_out_that_is_a_folder_is_refused(tmp_path, capsys):
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"weights")
    (tmp_path / "eval_test.json").mkdir()
    message = _refused(["evaluate", DEMO, str(checkpoint), "--split", "test"], capsys)
    assert f"--out not given, and the default output {tmp_path / 'eval_test.json'}" in message


def test_evaluate_a_pretrained_folder_given_as_dot(exports, monkeypatch, capsys):
    """``evaluate CONFIG .`` inside a save_pretrained folder writes beside the folder."""
    folder = Path(exports["shapes"])
    monkeypatch.chdir(folder)
    result = cli.run(["evaluate", DEMO, ".", *TINY, "--no-likelihood", "--device", "cpu"])
    written = folder.parent / "eval_val.json"
    assert json.loads(written.read_text())["pixel_accuracy"] == result["pixel_accuracy"]
    assert capsys.readouterr().out.strip().endswith(str(written))


# ------------------------------------------------------------- flags that would be ignored
def test_iterations_without_partial_is_refused(capsys):
    message = _refused(["evaluate", DEMO, DEMO, "--iterations", "3"], capsys)
    assert "--iterations" in message and "only with --partial" in message
    assert parse(["evaluate", DEMO, DEMO, "--partial"]).iterations == 5  # the default


@pytest.mark.parametrize(
    "flags",
    [["--partial"], ["--partial", "--iterations", "2"], ["--prediction", "mean"],
     ["--no-likelihood"], ["--reliability", "r.png"]],
    ids=lambda flags: flags[0],
)  # fmt: skip
def test_evaluate_refuses_flags_mnist_ignores(flags, exports, no_mnist, capsys):
    argv = ["evaluate", MNIST_Q1, exports["mnist_q1"], no_mnist, *flags, "--device", "cpu"]
    message = _refused(argv, capsys)
    assert f"{flags[0]} does not apply to MNIST quadrant completion" in message


def test_reliability_without_calibration_samples_is_refused(exports, tmp_path, capsys):
    argv = ["evaluate", DEMO, exports["shapes"], "eval.calibration_samples=0",
            "--reliability", tmp_path / "r.png", "--device", "cpu"]  # fmt: skip
    message = _refused(argv, capsys)
    assert "--reliability" in message and "eval.calibration_samples=0" in message
    message = _refused(["evaluate", DEMO, DEMO, "--reliability", tmp_path / "r.jpg"], capsys)
    assert "--reliability" in message and "ending in .png" in message


def test_visualize_refuses_occlude_for_mnist(exports, no_mnist, capsys):
    argv = ["visualize", MNIST_Q1, exports["mnist_q1"], no_mnist, "--occlude", "0.3"]
    message = _refused([*argv, "--device", "cpu"], capsys)
    assert "--occlude does not apply to MNIST" in message and "mnist_observed" in message


def test_visualize_refuses_a_baseline_outside_mnist(exports, capsys):
    argv = ["visualize", DEMO, exports["shapes"], *TINY, "--baseline", exports["mnist_q2_nn"]]
    message = _refused([*argv, "--device", "cpu"], capsys)
    assert "--baseline applies only to MNIST" in message and "data.dataset=shapes" in message


@pytest.mark.parametrize(
    ("baseline", "why"),
    [("shapes", "is a CVAE, not a QuadrantCVAE"), ("mnist_q2_nn", "observes 2 quadrant(s)")],
)
def test_visualize_refuses_a_baseline_of_another_task(baseline, why, exports, no_mnist, capsys):
    argv = ["visualize", MNIST_Q1, exports["mnist_q1"], no_mnist, "--baseline", exports[baseline]]
    message = _refused([*argv, "--device", "cpu"], capsys)
    assert message.startswith(f"cvae-seg visualize: error: --baseline {exports[baseline]}: ")
    assert why in message


def test_visualize_compare_draws_every_model_on_the_same_images(exports, tmp_path):
    """--compare: the images and truths once, then one row per model."""
    from PIL import Image

    other = _export(tmp_path / "gsnn_run" / "pretrained", DEMO, [*TINY, "model.objective=gsnn"],
                    ["background", "object"])  # fmt: skip
    out = tmp_path / "side_by_side.png"
    argv = ["visualize", DEMO, exports["shapes"], *TINY, "--compare", other, "--out", str(out)]
    cli.run([*argv, "--num-images", "2", "--num-samples", "2", "--occlude", "0.3"])
    tile, scale = 32 + 2, 2  # framed tiles, drawn twice as large as visualize draws them
    assert Image.open(out).height == 3 * tile * scale + 16  # inputs, names, 2 model rows


def test_compared_rows_are_named_by_run_folder_then_parents_then_file(tmp_path):
    run, other_run = tmp_path / "a" / "run", tmp_path / "b" / "run"
    for folder in (run / "pretrained", other_run):
        folder.mkdir(parents=True)
    for file in (run / "best.pt", run / "last.pt", other_run / "best.pt", tmp_path / "cvae.pt"):
        file.write_bytes(b"")
    assert row_names([run / "pretrained", tmp_path / "cvae.pt"]) == ["run", "cvae"]
    assert row_names([run / "best.pt", other_run / "best.pt"]) == ["a/run", "b/run"]
    assert row_names([run / "best.pt", run / "last.pt"]) == ["run/best", "run/last"]
    with pytest.raises(UserError, match=r"--compare .*best\.pt: this model is given twice"):
        row_names([run / "best.pt", run / ".." / "run" / "best.pt"])


def test_visualize_compare_refuses_a_repeat_and_a_second_path_before_loading(exports, capsys):
    shapes = exports["shapes"]
    message = _refused(["visualize", DEMO, shapes, *TINY, "--compare", shapes], capsys)
    assert message.startswith(f"cvae-seg visualize: error: --compare {shapes}: this model is")
    message = _refused(["visualize", DEMO, shapes, "--compare", shapes, DEMO, *TINY], capsys)
    assert f"{DEMO} is not a key.sub=value override" in message
    assert f"give it a --compare of its own (--compare {DEMO})" in message
    parsed = parse(["visualize", DEMO, shapes, "--compare", shapes, "data.size=32"])
    assert parsed.compare == [Path(shapes)] and parsed.overrides == ["data.size=32"]


@pytest.mark.parametrize(
    ("overrides", "classes", "why"),
    [(["data.size=48"], ["background", "object"], "data.size=48 (the model's: 32)"),
     ([], ["background", "object", "edge"], "classes ['background', 'object', 'edge'] (the "),
     ([], None, "is a YAML config")],
    ids=["size", "classes", "not_a_checkpoint"],
)  # fmt: skip
def test_visualize_compare_refuses_a_model_unlike_the_checkpoint_before_the_data_loads(
    overrides, classes, why, exports, tmp_path, capsys
):
    """Named by the flag and path; the data would fail to load (data.root missing), so the
    refusal came first."""
    other = _export(tmp_path / "other", DEMO, [*TINY, *overrides], classes) if classes else DEMO
    unreadable = ["data.dataset=lfw", f"data.root={tmp_path / 'no_lfw_here'}"]
    argv = ["visualize", DEMO, exports["shapes"], *TINY, *unreadable, "--compare", other]
    message = _refused([*argv, "--device", "cpu"], capsys)
    assert message.startswith(f"cvae-seg visualize: error: --compare {other}: ")
    assert why in message


def test_visualize_refuses_compare_for_mnist(exports, no_mnist, capsys):
    argv = ["visualize", MNIST_Q1, exports["mnist_q1"], no_mnist, "--compare", exports["mnist_q1"]]
    message = _refused([*argv, "--device", "cpu"], capsys)
    assert "--compare does not apply to MNIST" in message


def test_quadrant_grid_refuses_a_baseline_of_other_quadrants(exports):
    """Python callers get the same check, before any drawing (no data set is touched)."""
    from cvae_seg.training import load_trained

    cpu = torch.device("cpu")
    model, nn = (load_trained(exports[name], cpu)[0] for name in ("mnist_q1", "mnist_q2_nn"))
    with pytest.raises(ValueError, match=r"baseline observes 2 quadrant\(s\) and the model 1"):
        quadrant_grid(model, None, [0], baseline=nn)
    with pytest.raises(TypeError, match="not a QuadrantCVAE"):
        check_baseline(model, load_trained(exports["shapes"], cpu)[0])
    check_baseline(model, model)  # the same quadrants: accepted


# --------------------------------------------------------- the data settings of the training
def test_another_data_set_is_named_in_a_warning(exports, caplog):
    """shapes and known_truth have the same class names: only the data set tells them apart.
    Scoring on other data is allowed (a study of transfer), but never unsaid."""
    config = ROOT / "configs" / "known_truth.yaml"
    with caplog.at_level(logging.WARNING):
        load_for_evaluation(exports["shapes"], config, [], torch.device("cpu"))
    assert f"{config}: data.dataset is 'known_truth'" in caplog.text
    assert f"checkpoint {exports['shapes']} was trained on 'shapes'" in caplog.text


def test_model_settings_the_checkpoint_overrules_are_named(exports, caplog):
    """The model comes from the checkpoint: an override of a model setting changes nothing,
    and says so, instead of scoring the trained model as if it were the asked one."""
    cpu = torch.device("cpu")
    with caplog.at_level(logging.WARNING):
        model, config, _ = load_for_evaluation(
            exports["shapes"], DEMO, [*TINY, "model.objective=gsnn", "data.ignore_index=1"], cpu
        )
    assert model.objective == config.model.objective == "cvae"
    assert "model.objective='gsnn' (trained: 'cvae')" in caplog.text
    assert config.data.ignore_index is None
    assert "data.ignore_index=1 replaced by None" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_for_evaluation(exports["shapes"], DEMO, TINY, cpu)  # the training's own settings
    assert "model settings are not used" not in caplog.text


def test_normalisation_and_targets_come_from_the_checkpoint(exports, caplog):
    cpu = torch.device("cpu")
    given = [*TINY, "data.mean=[0.1,0.2,0.3]", "data.std=[1,1,1]"]
    with caplog.at_level(logging.WARNING):
        _, config, _ = load_for_evaluation(exports["shapes"], DEMO, given, cpu)
    assert config.data.mean == (0.5, 0.5, 0.5) and config.data.std == (0.5, 0.5, 0.5)
    assert "data.mean=(0.1, 0.2, 0.3) replaced by (0.5, 0.5, 0.5)" in caplog.text
    assert "data.std=(1.0, 1.0, 1.0) replaced by (0.5, 0.5, 0.5)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _, config, _ = load_for_evaluation(
            exports["mnist_q1"], MNIST_Q1, ["data.binarize=true"], cpu
        )
    assert config.data.binarize is False
    assert "data.binarize=True replaced by False" in caplog.text

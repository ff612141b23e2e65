"""The `cvae-seg` command: help, user errors (exit 2, one line, no traceback) and bugs
(traceback kept), through the installed command, the tools and torchrun."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import refused_in_process

from cvae_seg import cli
from cvae_seg.cli import commands
from cvae_seg.cli.errors import one_line, raised_reading_input

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")
COMMANDS = ["train", "evaluate", "visualize", "download"]


def _run(*args, launcher=(sys.executable, "-m", "cvae_seg.cli"), timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run(
        [*launcher, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


@pytest.fixture(scope="module")
def not_a_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "broken.pt"
    path.write_bytes(b"\x80\x02 this is not a torch file")
    return str(path)


# ------------------------------------------------------------------------------- help
def test_console_script_help():
    executable = shutil.which("cvae-seg")
    launcher = (executable,) if executable else (sys.executable, "-m", "cvae_seg.cli")
    result = _run("--help", launcher=launcher)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"cvae-seg {command}" in capsys.readouterr().out


def test_version(capsys):
    from cvae_seg.version import __version__

    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"cvae-seg {__version__}"


# ------------------------------------------------------- user errors, in a real process
USER_ERRORS = {
    "unknown_key": (["train", DEMO, "train.no_such_key=1"], ["train.no_such_key", "unknown key"]),
    "missing_config": (["train", "configs/no_such.yaml"], ["configs/no_such.yaml", "not exist"]),
    "missing_checkpoint": (["evaluate", DEMO, "no_such.pt"], ["no_such.pt", "does not exist"]),
    "zero_images": (["visualize", DEMO, DEMO, "--num-images", "0"], ["--num-images", "got 0"]),
    "occlude_above_one": (["visualize", DEMO, DEMO, "--occlude", "1.5"], ["--occlude", "1.5"]),
    "negative_iterations": (
        ["evaluate", DEMO, DEMO, "--partial", "--iterations", "-3"],
        ["--iterations", "-3"],
    ),
}


@pytest.mark.parametrize("case", sorted(USER_ERRORS))
def test_user_error_exits_2_with_one_message(case):
    argv, names = USER_ERRORS[case]
    result = _run(*argv)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"cvae-seg {argv[0]}: error:")
    assert all(name in message for name in names), message


def test_unreadable_checkpoint_through_the_tool(not_a_checkpoint):
    """tools/evaluate.py forwards to the command: same message, same status."""
    tool = (sys.executable, str(ROOT / "tools" / "evaluate.py"))
    result = _run(DEMO, not_a_checkpoint, launcher=tool)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not_a_checkpoint in result.stderr and "could not be read" in result.stderr


# ---------------------------------------------------------- user errors, in this process
@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["train", DEMO, "model.latent_channels=-4"], ["model.latent_channels"]),
        (["train", DEMO, "no_dot_override"], ["no_dot_override", "key.sub=value"]),
        (["train", DEMO, "train.lr=[1"], ["train.lr", "not valid YAML"]),
        (["train", DEMO, "--resume", "no_such_last.pt"], ["--resume", "no_such_last.pt"]),
        (["train", DEMO, "--seed", "-1"], ["--seed", "-1"]),
        (["evaluate", DEMO, DEMO, "--split", "dev"], ["--split", "dev"]),
        (["evaluate", DEMO, DEMO, "--iterations", "0"], ["--iterations", "got 0"]),
        (["visualize", DEMO, DEMO, "--num-samples", "two"], ["--num-samples", "'two'"]),
        (["download", "imagenet"], ["imagenet", "lfw"]),
    ],
)
def test_user_error_in_process(argv, names, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any work dir the command would make lands here
    message = refused_in_process(argv, capsys)
    assert all(name in message for name in names), message


def test_device_without_a_gpu(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["train", DEMO, "--device", "cuda"]) == 2
    assert "device 'cuda'" in capsys.readouterr().err


def test_unreadable_checkpoint_in_process(not_a_checkpoint, capsys):
    assert cli.main(["visualize", DEMO, not_a_checkpoint]) == 2
    assert not_a_checkpoint in capsys.readouterr().err


# --------------------------------------------------------------------------- bugs
@pytest.mark.parametrize("error", [RuntimeError, ValueError, TypeError, KeyError])
def test_a_bug_keeps_its_traceback(error, monkeypatch):
    def broken(args):
        raise error("a bug inside the command")

    monkeypatch.setitem(commands.COMMANDS, "train", broken)
    with pytest.raises(error, match="a bug inside the command"):
        cli.main(["train", DEMO])


def test_the_boundary_is_where_the_error_was_raised():
    from cvae_seg.config import load_config

    with pytest.raises(ValueError) as from_config:
        load_config(DEMO, ["train.no_such_key=1"])
    assert raised_reading_input(from_config.value)
    try:
        _ = [1, 2][5]
    except IndexError as not_an_input_error:
        assert not raised_reading_input(not_an_input_error)
    try:
        int("x")  # a ValueError, but raised here, outside every reader of user input
    except ValueError as elsewhere:
        assert not raised_reading_input(elsewhere)


def test_bug_in_a_process_prints_the_traceback(tmp_path):
    script = tmp_path / "buggy.py"
    script.write_text(
        "import sys\n"
        "from cvae_seg import cli\n"
        "from cvae_seg.cli import commands\n"
        "def broken(args):\n"
        "    raise RuntimeError('injected bug')\n"
        "commands.COMMANDS['train'] = broken\n"
        f"raise SystemExit(cli.main(['train', {DEMO!r}]))\n"
    )
    result = _run(launcher=(sys.executable, str(script)))
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuntimeError: injected bug" in result.stderr


# ------------------------------------------------------------------------- torchrun
@pytest.mark.slow
def test_user_error_under_torchrun():
    """The first worker prints the one-line message, every worker exits 2, with no traceback
    of ours and nothing recorded as one. torchrun then reports the failed workers in its own
    summary (a traceback of torchrun's launcher, exit status 1): that part is torchrun's."""
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone")
    train = str(ROOT / "tools" / "train.py")
    result = _run(
        "--nproc_per_node=2", train, DEMO, "train.no_such_key=1", launcher=launcher, timeout=240
    )
    assert result.returncode != 0
    assert result.stderr.count("cvae-seg train: error:") == 1, result.stderr
    assert "train.no_such_key: unknown key" in result.stderr
    assert re.search(r"exitcode\s*:\s*2", result.stderr), result.stderr
    frames = re.findall(r'File "([^"]+)"', result.stderr)
    assert not [f for f in frames if "cvae_seg" in f or f.endswith("train.py")], frames
    assert "UserError" not in result.stderr and "ValueError" not in result.stderr


def test_the_launch_flag_is_not_passed_to_the_workers():
    from cvae_seg.cli.launch import without_launch_flag

    argv = ["train", DEMO, "--nproc-per-node", "2", "a.b=1", "--nproc-per-node=3", "--quiet"]
    assert without_launch_flag(argv) == ["train", DEMO, "a.b=1", "--quiet"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("train.no_such_key=1", "train.no_such_key: unknown key"),  # seen before any worker
        ("data.batch_size=3", "data.batch_size=3 is the global batch"),  # seen by the workers
    ],
)
def test_user_error_with_several_processes_is_one_line_and_status_2(override, names, tmp_path):
    """`cvae-seg train --nproc-per-node 2`: the command's own launcher, so a user error ends
    with status 2 and one message, and no launcher traceback (unlike raw torchrun)."""
    result = _run(
        "train", DEMO, override, "--nproc-per-node", "2", "--quiet", "--work-dir",
        str(tmp_path / "run"), timeout=240,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("cvae-seg train: error:") == 1 and names in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
def test_several_processes_train_through_the_command(tmp_path):
    tiny = [
        "train.max_steps=2", "train.eval_interval=2", "data.size=32", "data.shapes_train=16",
        "data.shapes_val=8", "data.num_workers=0", "model.encoder_name=tu-test_resnet",
    ]  # fmt: skip
    work_dir = tmp_path / "run"
    result = _run(
        "train", DEMO, *tiny, "--nproc-per-node", "2", "--quiet", "--work-dir", str(work_dir),
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (work_dir / "last.pt").is_file() and (work_dir / "metrics.csv").is_file()


def test_evaluate_refuses_a_checkpoint_of_other_classes(monkeypatch, capsys):
    """Scores named after classes the data does not have would look believable (issue 18)."""
    import cvae_seg.training
    from cvae_seg.config import load_config

    tiny = ["data.size=32", "data.shapes_val=4"]

    def three_class_model(checkpoint, config_path, overrides, device):
        return None, load_config(config_path, overrides), ["background", "skin", "hair"]

    monkeypatch.setattr(cvae_seg.training, "load_for_evaluation", three_class_model)
    assert cli.main(["evaluate", DEMO, DEMO, *tiny, "--device", "cpu"]) == 2
    message = capsys.readouterr().err
    assert "['background', 'skin', 'hair']" in message and "'object'" in message


def test_messages_are_one_line():
    assert one_line(ValueError("checkpoint x.pt does not fit:\n\tsize mismatch a\n")) == (
        "checkpoint x.pt does not fit: size mismatch a"
    )
    long = one_line(ValueError("size mismatch\n" * 200))
    assert len(long) <= 600 and long.endswith(" ...") and "\n" not in long

"""Training engine, configs and the tools, end to end on generated data."""

import csv
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from cvae_seg.config import load_config
from cvae_seg.engine import StepSampler, load_checkpoint, load_trained, train

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import evaluate as evaluate_tool  # noqa: E402
import train as train_tool  # noqa: E402
import visualize as visualize_tool  # noqa: E402

TINY = [
    "data.size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.shapes_train=24",
    "data.shapes_val=8",
    "eval.batch_size=8",
    "eval.num_samples=2",
]


def _config(*overrides):
    return load_config(ROOT / "configs" / "demo.yaml", [*TINY, *overrides])


def test_sampler_is_a_function_of_seed_and_step():
    sampler = StepSampler(size=10, batch_size=3, seed=5)
    first = [item for _, item in zip(range(30), sampler, strict=False)]
    indices = [i for i, _ in first]
    assert sorted(indices[:9]) == sorted(set(indices[:9]))  # one epoch: no repeats
    assert indices[:9] != indices[9:18]  # a new order every epoch
    resumed = StepSampler(size=10, batch_size=3, seed=5, start_step=4)
    assert [item for _, item in zip(range(18), resumed, strict=False)] == first[12:30]
    with pytest.raises(ValueError, match="fewer than one batch"):
        StepSampler(size=2, batch_size=3, seed=0)


def test_resume_continues_the_same_run_bit_for_bit(tmp_path):
    config = _config(
        "train.max_steps=6", "train.eval_interval=3", "data.noise=0.4", "data.flip=true"
    )
    straight = train(config, tmp_path / "straight", progress=False)
    half = _config("train.max_steps=3", "train.eval_interval=3", "data.noise=0.4", "data.flip=true")
    train(half, tmp_path / "resumed", progress=False)
    resumed = train(
        config, tmp_path / "resumed", resume=tmp_path / "resumed" / "last.pt", progress=False
    )
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight["last"] == {**resumed["last"], "elapsed_s": straight["last"]["elapsed_s"]}
    with open(tmp_path / "resumed" / "metrics.csv") as handle:
        assert [row["step"] for row in csv.DictReader(handle)] == ["3", "6"]


def test_work_dir_holds_config_metrics_and_checkpoints(tmp_path):
    result = train(_config("train.max_steps=4", "train.eval_interval=2"), tmp_path, progress=False)
    assert {"config.yaml", "metrics.csv", "last.pt", "best.pt"} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert not list(tmp_path.glob("*.tmp"))
    assert {"config.json", "model.safetensors", "README.md"} <= {
        p.name for p in (tmp_path / "pretrained").iterdir()
    }
    assert load_config(tmp_path / "config.yaml").train.max_steps == 4  # the resolved config reloads
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 4 and set(state["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert {"optimizer", "scheduler", "scaler", "sampler", "best"} <= set(state)
    assert result["last"]["step"] == 4 and "nll" in result["last"]


def test_non_finite_loss_stops_with_the_step_and_terms(tmp_path, monkeypatch):
    from cvae_seg.model import CVAE

    original = CVAE.forward

    def exploding(self, x, y=None):
        out = original(self, x, y)
        if y is not None:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(CVAE, "forward", exploding)
    with pytest.raises(FloatingPointError, match=r"step 1 \(rank 0\): the loss is nan \(nll_x4="):
        train(_config("train.max_steps=2"), tmp_path, progress=False)


def test_broken_checkpoints_are_named(tmp_path):
    train(_config("train.max_steps=2", "train.eval_interval=2"), tmp_path, progress=False)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.pt could not be read"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt is not a cvae_seg checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")


SHIPPED = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))


def _write_random_mnist(root: Path, count: int = 40) -> Path:
    """Random digits in the official IDX layout (the MNIST configs' generated data)."""
    import gzip

    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(header + images.tobytes())
        )
        labels = bytes([0, 0, 8, 1]) + count.to_bytes(4, "big") + bytes(count)
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)
    return root


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_smoke_trains_on_generated_data(name, tmp_path):
    if name.startswith("mnist"):
        root = _write_random_mnist(tmp_path / "mnist")
        data = [f"data.root={root}", "data.mnist_val_size=8", "data.batch_size=4",
                "model.mlp_hidden=[32,32]", "eval.batch_size=8", "eval.num_samples=2"]  # fmt: skip
    else:
        data = [*TINY, "data.dataset=shapes", "data.size=64"]
    steps = ["train.max_steps=2", "train.eval_interval=2"]
    config = load_config(ROOT / "configs" / name, [*data, *steps])
    result = train(config, tmp_path, progress=False)
    metric = "nll" if name.startswith("mnist") else "pixel_accuracy"
    assert result["step"] == 2 and math.isfinite(result["last"][metric])


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"train\.max_step: unknown key; valid keys: .*max_steps"):
        _config("train.max_step=3")
    with pytest.raises(ValueError, match=r"model\.objective: Input should be 'cnn', 'gdnn'"):
        _config("model.objective=vae")
    with pytest.raises(ValueError, match=r"must look like key\.sub=value"):
        _config("train.max_steps")
    with pytest.raises(FileNotFoundError, match=r"nothing\.yaml"):
        load_config(tmp_path / "nothing.yaml")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: child.yaml\n")
    with pytest.raises(ValueError, match="includes itself"):
        load_config(child)


def test_config_base_files_merge():
    config = load_config(ROOT / "configs" / "lfw_hybrid.yaml")
    assert config.model.objective == "hybrid" and config.model.arch == "sohn2015"
    assert (
        config.data.dataset == "lfw"
        and config.data.noise == 0.4
        and config.train.max_steps == 10000
    )
    assert config.train.lr == 3e-4 and config.data.batch_size == 32 and config.model.alpha == 0.5
    assert load_config(ROOT / "configs" / "cub_cnn.yaml").train.max_steps == 16000


def test_tools_train_evaluate_visualize(tmp_path):
    config = str(ROOT / "configs" / "demo.yaml")
    work_dir = tmp_path / "run"
    train_tool.main([config, *TINY, "train.max_steps=3", "--work-dir", str(work_dir), "--quiet"])
    checkpoint = work_dir / "last.pt"
    result = evaluate_tool.main([config, str(checkpoint), *TINY, "--partial", "--iterations", "1"])
    saved = json.loads((work_dir / "eval_val.json").read_text())
    assert (
        saved["pixel_accuracy"] == result["pixel_accuracy"]
        and saved["likelihood_method"] == "importance"
    )
    grid = [row for row in saved["partial_observation"]]
    assert len(grid) == 9 and all("iterative" in row for row in grid)
    picture = visualize_tool.main(
        [
            config,
            str(checkpoint),
            *TINY,
            "--num-images",
            "2",
            "--num-samples",
            "3",
            "--occlude",
            "0.3",
        ]
    )
    from PIL import Image

    width, height = Image.open(picture).size
    assert width == 2 * 7 * 34 and height > 2 * 2 * 34  # 7 tiles of 32+2 px, 2 rows, scale 2
    _, trained, classes = load_trained(checkpoint, torch.device("cpu"))
    # the exported best model evaluates like the best checkpoint
    best = evaluate_tool.main([config, str(work_dir / "best.pt"), *TINY, "--no-likelihood"])
    shared = evaluate_tool.main(
        [
            config,
            str(work_dir / "pretrained"),
            *TINY,
            "--no-likelihood",
            "--out",
            str(tmp_path / "p.json"),
        ]
    )
    assert shared["pixel_accuracy"] == best["pixel_accuracy"]
    assert classes == ["background", "object"] and trained.model.objective == "cvae"
    # --resume without a path continues from the work dir's last.pt
    train_tool.main(
        [config, *TINY, "train.max_steps=4", "--work-dir", str(work_dir), "--resume", "--quiet"]
    )
    assert load_checkpoint(checkpoint)["step"] == 4


def test_demo_script_trains_and_draws(tmp_path):
    sys.path.insert(0, str(ROOT / "demo"))
    import run_demo

    picture = run_demo.main([*TINY, "--steps", "2", "--work-dir", str(tmp_path)])
    assert picture == tmp_path / "demo_samples.png" and picture.stat().st_size > 0


def test_kl_warmup_raises_the_kl_weight_linearly(tmp_path, monkeypatch):
    from cvae_seg.model import CVAE

    original, seen = CVAE.forward, []

    def recording(self, x, y=None):
        if y is not None and self.training:
            seen.append(self.kl_weight)
        return original(self, x, y)

    monkeypatch.setattr(CVAE, "forward", recording)
    config = _config("train.max_steps=5", "train.kl_warmup_steps=4", "model.kl_weight=2.0")
    train(config, tmp_path, progress=False)
    assert seen == [0.5, 1.0, 1.5, 2.0, 2.0]
    model, _, _ = load_trained(tmp_path / "best.pt", torch.device("cpu"))
    assert model.kl_weight == 2.0


@pytest.mark.parametrize("arch", ["Unet", "mnist_mlp"])
def test_config_log_variance_bound_reaches_both_gaussian_nets(arch):
    """model.logvar_bound (the cap on the std of q and p) is not lost between config and nets."""
    from cvae_seg.engine import build_model

    model = build_model(_config(f"model.arch={arch}", "model.logvar_bound=9"), 2)
    assert model.prior_net.logvar_bound == model.recognition_net.logvar_bound == 9

"""cvae_seg.training.loop: `train` end to end on generated data, and `train_step` alone."""

import csv
import math
from pathlib import Path

import pytest
import torch
from conftest import TINY_DEMO, tiny_demo_config
from helpers.stops import stop_at_training_step

from cvae_seg import CVAEOutput
from cvae_seg.config import load_config
from cvae_seg.models.smp import CVAE
from cvae_seg.training import build_model, load_checkpoint, load_trained, train, train_step

ROOT = Path(__file__).resolve().parents[1]


_config = tiny_demo_config


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


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
    assert [row["step"] for row in _rows(tmp_path / "resumed" / "metrics.csv")] == ["3", "6"]


def test_train_csv_after_a_resume_mid_interval_matches_the_uninterrupted_log(tmp_path, monkeypatch):
    overrides = ["train.max_steps=6", "train.eval_interval=3", "train.log_interval=4"]
    train(_config(*overrides), tmp_path / "straight", progress=False)
    with monkeypatch.context() as patch:  # killed at step 5: last.pt is step 3, mid-interval
        stop_at_training_step(patch, 5)
        with pytest.raises(KeyboardInterrupt):
            train(_config(*overrides), tmp_path / "killed", progress=False)
    assert [r["step"] for r in _rows(tmp_path / "killed" / "train.csv")] == ["4"]
    checkpoint = tmp_path / "killed" / "last.pt"
    train(_config(*overrides), tmp_path / "killed", resume=checkpoint, progress=False)
    straight = _rows(tmp_path / "straight" / "train.csv")
    assert [r["step"] for r in straight] == ["4", "6"]
    assert _rows(tmp_path / "killed" / "train.csv") == straight


def test_checkpoint_interval_keeps_last_pt_between_evaluations_for_a_resume(tmp_path, monkeypatch):
    overrides = ["train.max_steps=6", "train.eval_interval=6", "train.checkpoint_interval=2"]
    train(_config(*overrides), tmp_path / "straight", progress=False)
    with monkeypatch.context() as patch:  # killed at step 5: last.pt is step 4, not validated
        stop_at_training_step(patch, 5)
        with pytest.raises(KeyboardInterrupt):
            train(_config(*overrides), tmp_path / "killed", progress=False)
    checkpoint = tmp_path / "killed" / "last.pt"
    assert load_checkpoint(checkpoint)["step"] == 4
    assert not (tmp_path / "killed" / "best.pt").exists()  # no validation before step 6
    train(_config(*overrides), tmp_path / "killed", resume=checkpoint, progress=False)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(checkpoint)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert [r["step"] for r in _rows(tmp_path / "killed" / "metrics.csv")] == ["6"]


def test_train_csv_rows_average_the_steps_summed_when_the_sums_are_not_kept(tmp_path):
    """A checkpoint without running sums (written by another number of processes, or by
    cvae_seg 0.x) restarts them at the resume: the next row is the mean of the steps since."""
    every_step = ["train.max_steps=4", "train.eval_interval=3", "train.log_interval=1"]
    train(_config(*every_step), tmp_path / "every_step", progress=False)
    losses = [float(r["loss"]) for r in _rows(tmp_path / "every_step" / "train.csv")]
    overrides = ["train.max_steps=3", "train.eval_interval=3", "train.log_interval=4"]
    train(_config(*overrides), tmp_path / "run", progress=False)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    del state["running_by_rank"]
    torch.save(state, tmp_path / "run" / "old.pt")
    overrides[0] = "train.max_steps=5"
    train(_config(*overrides), tmp_path / "run", resume=tmp_path / "run" / "old.pt", progress=False)
    rows = _rows(tmp_path / "run" / "train.csv")
    assert [r["step"] for r in rows] == ["3", "4", "5"]
    assert float(rows[0]["loss"]) == pytest.approx(sum(losses[:3]) / 3, rel=1e-6)
    assert float(rows[1]["loss"]) == pytest.approx(losses[3], rel=1e-6)  # step 4 alone


def test_resume_below_the_checkpoint_step_is_refused(tmp_path):
    train(_config("train.max_steps=2", "train.eval_interval=2"), tmp_path, progress=False)
    with pytest.raises(
        ValueError, match=r"train\.max_steps=1 is below step 2 of checkpoint .*last"
    ):
        train(_config("train.max_steps=1"), tmp_path, resume=tmp_path / "last.pt", progress=False)
    again = train(_config("train.max_steps=2"), tmp_path, resume=tmp_path / "last.pt")
    assert again["step"] == 2 and again["last"]["step"] == 2  # nothing to do: the last metrics


def test_work_dir_holds_config_metrics_and_checkpoints(tmp_path):
    (tmp_path / ".last.pt.tmp-999999999").write_bytes(b"an interrupted write")
    result = train(_config("train.max_steps=4", "train.eval_interval=2"), tmp_path, progress=False)
    assert {"config.yaml", "metrics.csv", "train.csv", "last.pt", "best.pt"} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*"))
    assert {"config.json", "model.safetensors", "README.md"} <= {
        p.name for p in (tmp_path / "pretrained").iterdir()
    }
    assert load_config(tmp_path / "config.yaml").train.max_steps == 4  # the resolved config reloads
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 4 and set(state["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert {"optimizer", "scheduler", "scaler", "sampler", "best", "running_by_rank"} <= set(state)
    assert result["last"]["step"] == 4 and "nll" in result["last"]


def test_non_finite_loss_stops_with_the_step_and_terms(tmp_path, monkeypatch):
    original = CVAE.loss

    def exploding(self, x, y):
        out = original(self, x, y)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(CVAE, "loss", exploding)
    with pytest.raises(FloatingPointError, match=r"step 1 \(rank 0\): the loss is nan \(nll_x4="):
        train(_config("train.max_steps=2"), tmp_path, progress=False)


def test_kl_warmup_raises_the_kl_weight_linearly(tmp_path, monkeypatch):
    original, seen = CVAE.loss, []

    def recording(self, x, y):
        if self.training:
            seen.append(self.kl_weight)
        return original(self, x, y)

    monkeypatch.setattr(CVAE, "loss", recording)
    config = _config("train.max_steps=5", "train.kl_warmup_steps=4", "model.kl_weight=2.0")
    train(config, tmp_path, progress=False)
    assert seen == [0.5, 1.0, 1.5, 2.0, 2.0]
    model, _, _ = load_trained(tmp_path / "best.pt", torch.device("cpu"))
    assert model.kl_weight == 2.0


def test_train_step_is_a_loop_of_your_own():
    model = build_model(_config(), num_classes=2).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 2, (2, 32, 32))
    before = [p.detach().clone() for p in model.parameters()]
    terms = train_step(model, x, y, optimizer, grad_clip=1.0)
    assert {"loss", "kl"} <= set(terms) and all(math.isfinite(v) for v in terms.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    bad = x.clone()
    bad[0, 0, :2, :3] = float("nan")
    with pytest.raises(FloatingPointError, match="the input batch holds 6 non-finite values"):
        train_step(model, bad, y, optimizer)
    model.loss = lambda x, y: CVAEOutput(torch.tensor(float("nan")), {"loss": torch.tensor(1.0)})
    after = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match=r"the loss is nan \(loss=1\)"):
        train_step(model, x, y, optimizer)
    assert all(torch.equal(a, b) for a, b in zip(after, model.parameters(), strict=True))


FAST = {"demo.yaml", "known_truth.yaml", "mnist_q1_cvae.yaml"}  # the others: pytest -m slow
SHIPPED = [
    pytest.param(name, marks=() if name in FAST else pytest.mark.slow)
    for name in sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
]


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
        data = [*TINY_DEMO, "data.dataset=shapes", "data.size=64"]
    steps = ["train.max_steps=2", "train.eval_interval=2"]
    config = load_config(ROOT / "configs" / name, [*data, *steps])
    result = train(config, tmp_path, progress=False)
    metric = "nll" if name.startswith("mnist") else "pixel_accuracy"
    assert result["step"] == 2 and math.isfinite(result["last"][metric])


def test_a_changed_learning_rate_applies_on_resume_and_is_recorded(tmp_path):
    train(_config("train.max_steps=2", "train.eval_interval=2"), tmp_path, progress=False)
    resumed = _config("train.max_steps=3", "train.eval_interval=3", "train.lr=2.5e-4")
    train(resumed, tmp_path, resume=tmp_path / "last.pt", progress=False)
    assert [float(r["lr"]) for r in _rows(tmp_path / "train.csv")] == [1e-3, 2.5e-4]
    state = load_checkpoint(tmp_path / "last.pt")
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [2.5e-4]
    assert load_config(tmp_path / "config.yaml").train.lr == 2.5e-4  # the record is true


def test_diverging_weights_stop_with_the_step_and_a_checkpoint_from_before(tmp_path):
    with pytest.raises(FloatingPointError, match=r"step [2-6] \(rank 0\): the (forward pass|loss)"):
        train(_config("train.max_steps=6", "train.lr=1e6"), tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "last.pt")  # written before the first update
    assert state["step"] == 0 and state["metrics"] == {}


def test_a_non_finite_validation_stops_before_saving(tmp_path, monkeypatch):
    import cvae_seg.training.loop as loop

    monkeypatch.setattr(loop, "validate", lambda *args, **kwargs: {"pixel_accuracy": math.nan})
    with pytest.raises(FloatingPointError, match=r"step 2 \(rank 0\): validation gave pixel_"):
        train(_config("train.max_steps=4", "train.eval_interval=2"), tmp_path, progress=False)
    assert (
        load_checkpoint(tmp_path / "last.pt")["step"] == 0 and not (tmp_path / "best.pt").exists()
    )


def test_train_step_stops_on_a_non_finite_gradient():
    model = build_model(_config(), num_classes=2).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 2, (2, 32, 32))
    first = next(model.parameters())
    first.register_hook(lambda grad: grad * float("inf"))
    before = first.detach().clone()
    with pytest.raises(FloatingPointError, match=r"the gradient norm is (inf|nan) \(.*loss="):
        train_step(model, x, y, optimizer)
    assert torch.equal(first.detach(), before)


def test_resume_with_another_model_is_refused_naming_the_setting(tmp_path):
    train(_config("train.max_steps=2", "train.eval_interval=2"), tmp_path, progress=False)
    changed = _config("train.max_steps=3", "model.latent_channels=16")
    message = r"does not fit .*model\.latent_channels: checkpoint 8, config 16; \d+ tensor\(s\)"
    with pytest.raises(ValueError, match=message):
        train(changed, tmp_path, resume=tmp_path / "last.pt", progress=False)
    assert load_config(tmp_path / "config.yaml").model.latent_channels == 8  # still the record


def test_amp_channels_last_clipping_and_cosine_train_on_the_cpu(tmp_path):
    options = ["train.amp=true", "train.channels_last=true", "train.grad_clip=1.0"]
    schedule = ["train.scheduler=cosine", "train.warmup_steps=1", "train.log_interval=1"]
    config = _config("train.max_steps=3", "train.eval_interval=3", *options, *schedule)
    result = train(config, tmp_path, progress=False)
    assert result["step"] == 3 and math.isfinite(result["last"]["nll"])
    lrs = [float(r["lr"]) for r in _rows(tmp_path / "train.csv")]
    assert lrs == pytest.approx([1e-3, 0.5e-3, 0.0], abs=1e-12)  # warm-up, then cosine to 0


def test_a_new_run_steps_with_fused_adam_and_a_loop_checkpoint_resumes_with_the_loop(tmp_path):
    """Fused Adam is one kernel for all parameters; a checkpoint of the loop version (written
    before cvae_seg used the fused one) must go on with the loop version, so that its resume
    stays the run it was."""
    config = _config("train.max_steps=2", "train.eval_interval=2")
    train(config, tmp_path / "run", progress=False)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["optimizer"]["param_groups"][0]["fused"] is True
    for group in state["optimizer"]["param_groups"]:
        group["fused"] = None  # as the loop version writes it
    torch.save(state, tmp_path / "run" / "loop.pt")
    longer = _config("train.max_steps=3", "train.eval_interval=3")
    train(longer, tmp_path / "run", resume=tmp_path / "run" / "loop.pt", progress=False)
    resumed = load_checkpoint(tmp_path / "run" / "last.pt")
    assert resumed["step"] == 3 and resumed["optimizer"]["param_groups"][0]["fused"] is None

"""benchmarks/mnist_table1.py end to end on the shared MNIST copy (tiny MLPs, two updates)."""

import json
from pathlib import Path

import mnist_table1
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"no MNIST copy at {SHARED_MNIST}")
def test_mnist_table1_writes_its_table(tmp_path):
    out = tmp_path / "table"
    report = mnist_table1.main(
        ["--data-root", str(SHARED_MNIST), "--budget", "ci", "--quadrants", "2",
         "--work-dir", str(tmp_path / "work"), "--out", str(out),
         "--extra", "model.mlp_hidden=[16]", "model.latent_channels=4"]
    )  # fmt: skip
    assert sorted(report["runs"]) == ["q2_cvae", "q2_gsnn", "q2_nn"]
    assert set(report["runs"]["q2_cvae"]) >= {"val_importance", "test_monte_carlo", "seconds"}
    assert set(report["runs"]["q2_nn"]) >= {"val_exact", "test_exact"}
    assert report["samples"] == {"monte_carlo": 2, "importance": 2}
    assert report["likelihood"] == "Bernoulli on grey levels"
    assert json.loads(out.with_suffix(".json").read_text()) == json.loads(json.dumps(report))
    table = out.with_suffix(".md").read_text()
    assert "| CVAE (IS, S=2) |" in table and "(44.96 / 44.73)" in table

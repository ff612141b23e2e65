"""benchmarks/speed.py end to end with the tiny encoder (one timed repeat)."""

import json

import pytest
import speed as speed_benchmark


@pytest.mark.slow
def test_speed_benchmark_writes_ratios(tmp_path):
    out = tmp_path / "speed.json"
    tiny = ["--encoder", "tu-test_resnet", "--size", "64", "--batch", "2", "--repeats", "1",
            "--warmup", "1", "--objectives", "cnn", "cvae", "--out", str(out)]  # fmt: skip
    result = speed_benchmark.main(tiny)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [row["objective"] for row in result["cvae"]] == ["cnn", "cvae"]
    for row in result["cvae"]:
        assert row["train_ratio"] == pytest.approx(
            row["train_step_s"] / result["plain"]["train_step_s"]
        )
        assert row["sample_s"] > 0 and row["predict_over_plain_eval"] > 0
    assert result["settings"]["encoder"] == "tu-test_resnet"
    assert result["command"].startswith("speed.py --encoder")

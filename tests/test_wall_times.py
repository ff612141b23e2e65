"""benchmarks/wall_times.py: what it records for one command, and that a failure is loud."""

import json
import sys

import pytest
import wall_times


def test_a_command_is_timed_with_its_cpu_and_the_load(monkeypatch, tmp_path):
    burn = "s = 0\nfor i in range(2_000_000): s += i\nprint('done', s)"
    monkeypatch.setitem(wall_times.COMMANDS, "burn", [sys.executable, "-c", burn])
    run = wall_times.time_command("burn", str(tmp_path))
    assert run["last_line"].startswith("done") and run["wall_s"] > 0
    assert 0 < run["cpu_s"] <= run["wall_s"] + 1 and run["load_before"] >= 0


def test_a_failing_command_raises(monkeypatch, tmp_path):
    monkeypatch.setitem(wall_times.COMMANDS, "fail", [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match=r"fail failed \(3\)"):
        wall_times.time_command("fail", str(tmp_path))


def test_measuring_one_command_again_keeps_the_others(monkeypatch, tmp_path):
    out = tmp_path / "times.json"
    monkeypatch.setitem(wall_times.COMMANDS, "a", [sys.executable, "-c", "print('a')"])
    monkeypatch.setitem(wall_times.COMMANDS, "b", [sys.executable, "-c", "print('b')"])
    first = wall_times.main(["--out", str(out), "--only", "a", "b"])
    second = wall_times.main(["--out", str(out), "--only", "b"])
    assert second["runs"]["a"] == first["runs"]["a"]  # kept as measured, with its date
    assert second["runs"]["b"]["last_line"] == "b" and "date" in second["runs"]["b"]
    first["hardware"] = "another machine"
    out.write_text(json.dumps(first))
    with pytest.raises(SystemExit, match="another machine"):
        wall_times.main(["--out", str(out), "--only", "a"])

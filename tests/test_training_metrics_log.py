"""cvae_seg.training.metrics_log: CSV tables that resume, running means that count."""

import csv

from cvae_seg.training import CsvTable, MetricsLog, RunningMeans


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_table_keeps_rows_up_to_the_resume_step(tmp_path):
    table = CsvTable(tmp_path / "t.csv")
    for step in (2, 4, 6):
        table.append({"step": step, "loss": step / 10})
    table.append({"step": 8, "loss": 0.8, "extra": 1})  # a new column joins the header
    assert [r["extra"] for r in _rows(tmp_path / "t.csv")] == ["", "", "", "1"]
    resumed = CsvTable(tmp_path / "t.csv", resume_step=4)
    assert [r["step"] for r in resumed.rows] == ["2", "4"]
    resumed.append({"step": 6, "loss": 0.65})
    assert [(r["step"], r["loss"]) for r in _rows(tmp_path / "t.csv")][-1] == ("6", "0.65")
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary left
    assert CsvTable(tmp_path / "t.csv").rows == []  # a new run (step 0) starts afresh


def test_running_means_divide_by_the_steps_summed():
    running = RunningMeans()
    running.add({"loss": 1.0, "kl": 0.5})
    running.add({"loss": 3.0, "kl": 1.5})
    assert running.means() == {"loss": 2.0, "kl": 1.0}
    copy = RunningMeans()
    copy.load_state_dict(running.state_dict())
    copy.add({"loss": 5.0, "kl": 1.0})
    assert copy.means() == {"loss": 3.0, "kl": 1.0} and running.count == 2
    running.reset()
    running.add({"loss": 4.0})
    assert running.means() == {"loss": 4.0}


def test_metrics_log_off_the_main_process_writes_nothing(tmp_path):
    quiet = MetricsLog(tmp_path, resume_step=0, enabled=False)
    quiet.train_row({"step": 1, "loss": 1.0})
    quiet.eval_row({"step": 1, "nll": 1.0})
    quiet.close()
    assert list(tmp_path.iterdir()) == []

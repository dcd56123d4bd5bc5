import json

from prunebench.cli import main


def test_list_prints_plugins_with_distribution(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "methods (prunebench.methods):" in out
    assert "magnitude" in out and "prunebench 0." in out and "storage" in out and "classification" in out


def test_validate_reports_bad_suite(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "suite: x\nversion: one\ntask: {name: classification, model: lenet5, data: {name: synthetic}}\n"
        "protocols: {equal_compression: {structure: [unstructured], rates: [2]}}\n"
    )
    assert main(["validate", str(bad)]) == 1
    assert f"{bad}: version: expected an integer, got 'one'" in capsys.readouterr().out



def test_leaderboard_command_writes_pages(tmp_path, capsys):
    store = tmp_path / "results"
    store.mkdir()
    rec = {
        "schema": 1, "suite": "s", "suite_version": 1, "smoke": False, "task": "classification", "model": "m",
        "dataset": "d", "protocol": "equal_compression", "point_id": "magnitude-unstructured-4x-s0",
        "method": {"name": "magnitude", "version": "1"}, "structure": "unstructured", "seed": 0,
        "target": {"rate": 4.0, "structure": "unstructured", "quantization": None}, "status": "passed",
        "primary_metric": "top1", "metrics": {"top1": 90.0}, "dense_metrics": {"top1": 91.0},
        "accuracy_drop": 1.0, "achieved_rate": 4.0, "hardware": {}, "epochs_spent": 1.0,
        "created": "2026-01-01T00:00:00Z",
    }
    (store / "s.jsonl").write_text(json.dumps(rec) + "\n")
    out_dir = tmp_path / "lb"
    assert main(["leaderboard", "--results", str(store), "--out", str(out_dir), "--print"]) == 0
    page = (out_dir / "s.md").read_text()
    assert "90.00" in page and "magnitude" in page
    assert (out_dir / "README.md").is_file()
    assert "90.00" in capsys.readouterr().out

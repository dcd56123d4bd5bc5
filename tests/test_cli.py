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
    assert f"{bad}: version: expected an integer >= 1, got 'one'" in capsys.readouterr().out



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


def _rec(seed, top1, created="2026-01-01T00:00:00Z"):
    return {
        "schema": 1, "suite": "s", "suite_version": 1, "smoke": False, "task": "classification",
        "protocol": "equal_compression", "point_id": f"magnitude-unstructured-4x-s{seed}",
        "method": {"name": "magnitude", "version": "1"}, "structure": "unstructured", "seed": seed,
        "target": {"rate": 4.0, "structure": "unstructured", "quantization": None}, "status": "passed",
        "primary_metric": "top1", "metrics": {"top1": top1}, "dense_metrics": {"top1": 91.0},
        "accuracy_drop": 91.0 - top1, "achieved_rate": 4.0, "created": created,
    }


def _store(path, records):
    path.mkdir()
    (path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_compare_shows_each_cell_beside_the_reference_with_the_difference(tmp_path, capsys):
    mine = _store(tmp_path / "mine", [_rec(0, 89.0), _rec(1, 91.0)])
    ref = _store(tmp_path / "ref", [_rec(0, 88.0), _rec(1, 88.0), _rec(2, 88.0)])
    assert main(["compare", str(mine), "--reference", str(ref)]) == 0
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if "magnitude v1" in line]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:5] == ["s", "equal_compression", "unstructured", "magnitude v1", "4×"]
    assert cells[5] == "top1" and cells[6].startswith("90.00 ± ") and cells[7] == "88.00 ± 0.00"
    assert cells[8] == "+2.00" and cells[9] == "2/3"
    assert main(["compare", str(tmp_path / "empty")]) == 1


def test_publish_copies_records_and_leaves_the_source(tmp_path, capsys):
    mine = _store(tmp_path / "mine", [_rec(0, 89.0)])
    ref = _store(tmp_path / "ref", [_rec(1, 88.0)])
    assert main(["publish", str(mine), "--into", str(ref)]) == 0
    from prunebench.results import ResultStore

    assert sorted(r["seed"] for r in ResultStore(ref).records()) == [0, 1]
    assert [r["seed"] for r in ResultStore(mine).records()] == [0]
    assert main(["publish", str(mine), "--into", str(mine)]) == 2


import pytest

from prunebench.tracking import Tracker

wandb = pytest.importorskip("wandb")

RECORD = {
    "suite": "tiny", "suite_version": 1, "task": "classification", "model": "lenet5", "dataset": "synthetic",
    "protocol": "equal_accuracy", "point_id": "magnitude-unstructured-s0", "structure": "unstructured", "seed": 0,
    "target": {"rate": 4.0}, "method": {"name": "magnitude", "version": "1"}, "primary_metric": "top1",
    "metrics": {"top1": 91.5, "per_class_recall": [90.0, 93.0]}, "dense_metrics": {"top1": 92.0},
    "hardware": {"storage": {"stored_bits": 1234, "layer.fc.format": "csr"}},
    "search": {"lo": 2.0, "hi": 8.0, "steps": 0, "tolerance": 1.0, "runs": 2, "rate_found": 4.0,
               "trace": [{"rate": 2.0, "top1": 91.9, "within": True}]},
    "accuracy_drop": 0.5, "achieved_rate": 4.0, "status": "passed",
}


def test_offline_run_is_written_and_holds_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "sekret-key-0123456789abcdef0123456789abcdef")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = Tracker("offline", directory=tmp_path).log_record(RECORD)
    assert run_dir is not None and "offline-run" in run_dir
    files = [p for p in (tmp_path / "wandb").rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert b"sekret-key" not in p.read_bytes(), f"API key written to {p}"
    # the run (its name, config and summary) is in the offline run file
    assert any(b"magnitude-unstructured-s0" in p.read_bytes() for p in files if p.suffix == ".wandb")


def test_offline_run_files_hold_no_machine_path_or_host_name(tmp_path, monkeypatch):
    import socket
    import sys

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    tracker = Tracker("offline", directory=tmp_path / "out")
    tracker.log_record(RECORD)
    tracker.close()
    files = [p for p in (tmp_path / "out" / "wandb").rglob("*") if p.is_file()]
    assert files
    machine = [str(tmp_path).encode(), sys.prefix.encode(), sys.executable.encode()]
    # a short host name ("vm") turns up by chance in the binary run file: check it as a whole field
    host = socket.gethostname().encode()
    machine += [host] if len(host) >= 6 else [b'"' + host + b'"', b"host: " + host, b"\n" + host + b"\n"]
    for p in files:
        data = p.read_bytes()
        for needle in machine:
            assert needle not in data, f"{needle!r} written to {p.relative_to(tmp_path)}"


def test_off_logs_nothing(tmp_path):
    assert Tracker("off", directory=tmp_path).log_record(RECORD) is None
    assert not (tmp_path / "wandb").exists()


def test_bad_mode_is_rejected():
    with pytest.raises(ValueError, match="'onlin'"):
        Tracker("onlin")

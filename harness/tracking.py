"""wandb logging: one wandb run per benchmark run, grouped by suite.

``offline`` (the default) writes runs under ``<dir>/wandb`` and needs no
network; ``wandb sync`` uploads them later.  ``off`` logs nothing.  The API
key is never read, logged or stored here; wandb reads it itself.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .records import RunRecord

__all__ = ["Tracker", "WANDB_MODES"]

WANDB_MODES = ("offline", "online", "off")


def _flatten(prefix: str, value: Any, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = value


def _private_settings(wandb):
    """wandb settings that keep this machine out of the run files: no host name,
    interpreter or program path, git state, code, metadata or system stats
    (the record's own versions and git commit are logged as config instead)."""
    return wandb.Settings(
        silent=True,
        console="off",
        # a loaded 2-core machine can take a while to start the wandb service
        init_timeout=300,
        host="prunebench",
        program="prunebench",
        disable_code=True,
        save_code=False,
        disable_git=True,
        x_disable_meta=True,
        x_disable_stats=True,
        x_disable_machine_info=True,
    )


def _drop_debug_logs(run_dir: Path) -> None:
    """wandb's own debug logs name the machine's paths and processes; ``wandb
    sync`` needs only the run's ``.wandb`` file and ``files/``, so they go."""
    import shutil

    shutil.rmtree(run_dir / "logs", ignore_errors=True)
    for name in ("debug.log", "debug-internal.log"):
        link = run_dir.parent / name
        if link.is_symlink() and not link.exists():
            link.unlink()


class Tracker:
    def __init__(self, mode: str = "offline", directory: str | Path = ".", project: str = "prunebench"):
        if mode not in WANDB_MODES:
            raise ValueError(f"wandb mode must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
        self.mode = mode
        self.directory = Path(directory)
        self.project = project
        self._wandb = None
        if mode != "off":
            try:
                import wandb
            except ImportError:
                warnings.warn(
                    "wandb is not installed, so runs are not logged to wandb "
                    "(pip install 'prunebench[tracking]', or pass --wandb off)",
                    stacklevel=2,
                )
                self.mode = "off"
            else:
                self._wandb = wandb

    def close(self) -> None:
        """Stop wandb's service (it may still write its debug logs after a run
        finishes), then remove those logs from every run under the directory."""
        if self._wandb is None or self.mode == "off":
            return
        self._wandb.teardown()
        root = self.directory / "wandb"
        if root.is_dir():
            for run_dir in root.iterdir():
                if run_dir.is_dir() and not run_dir.is_symlink():
                    _drop_debug_logs(run_dir)

    def log_record(self, record: "RunRecord | Mapping") -> str | None:
        """Log one run record as its own wandb run; returns the run's directory."""
        if self.mode == "off" or self._wandb is None:
            return None
        from .records import RunRecord

        if not isinstance(record, RunRecord):
            record = RunRecord.from_json(record)
        wandb = self._wandb
        self.directory.mkdir(parents=True, exist_ok=True)
        plain = record.to_dict()
        config = {
            k: plain.get(k)
            for k in ("suite", "suite_version", "task", "model", "dataset", "protocol", "structure", "seed",
                      "target", "method", "budget_epochs", "git_commit", "versions", "torch_threads")
        }
        run = wandb.init(
            project=self.project,
            group=record.suite,
            job_type=record.protocol,
            name=f"{record.suite}::{record.protocol}[{record.point_id}]",
            config=config,
            mode=self.mode,
            dir=str(self.directory),
            reinit="finish_previous",
            settings=_private_settings(wandb),
        )
        summary: dict = {}
        for key in ("metrics", "dense_metrics", "hardware", "search"):
            _flatten(key, plain.get(key) or {}, summary)
        for key in ("accuracy_drop", "achieved_rate", "epochs_spent", "wall_time_s"):
            if isinstance(plain.get(key), (int, float)):
                summary[key] = plain[key]
        summary["status"] = record.status
        run.log({k: v for k, v in summary.items() if not k.startswith("hardware/") or "/layer." not in k})
        trace = record.search.trace if record.search is not None else []
        if trace:
            metric = record.primary_metric
            table = wandb.Table(columns=["rate", metric, "within"],
                                data=[[t["rate"], t.get(metric), t["within"]] for t in trace])
            run.log({"search_trace": table})
        run_dir = Path(run.dir).parent
        run.finish(exit_code=0 if record.status != "error" else 1)
        _drop_debug_logs(run_dir)
        return str(run_dir)

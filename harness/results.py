"""Append-only JSONL results store: one file per suite, one record per line.

Records go to ``<root>/<suite>.jsonl``.  Appends are safe under concurrent
writers in separate processes (pytest-xdist, several CLI runs): each append
takes ``<file>.lock``, then writes the whole line with a single ``os.write``
on an ``O_APPEND`` descriptor and fsyncs it.  A line damaged by a crash is
skipped with a warning naming the file and line; it never stops a read.

Leaderboards are regenerated from this store alone (``leaderboard.py``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import warnings
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any

from filelock import FileLock

__all__ = [
    "ResultStore",
    "CorruptRecordWarning",
    "to_jsonable",
    "dumps_record",
    "sanitize_name",
    "portable_text",
    "environment_info",
    "git_commit",
    "git_dirty",
]

#: packages whose versions go into every record when installed
ALWAYS_PACKAGES = ("torch", "numpy", "timm", "prunebench")
OPTIONAL_PACKAGES = ("torchvision", "mmdet", "mmcv", "mmengine", "pycocotools", "wandb", "datasets")
#: output dirs of the harness itself; writing results must not make the tree "dirty"
GIT_IGNORED_DIRS = ("results/", "leaderboards/")

LOCK_TIMEOUT_S = 120.0
LOCK_POLL_S = 0.005


class CorruptRecordWarning(UserWarning):
    """A line of a results file could not be parsed and was skipped."""


def sanitize_name(name: str) -> str:
    """File-safe form of a suite name: only ``[A-Za-z0-9._-]``, never hidden/``..``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(name)).lstrip(".")
    return safe or "_"


def to_jsonable(value: Any) -> Any:
    """Plain JSON data: inf/nan -> None, numpy/torch scalars and arrays -> Python."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)  # IntEnum and friends -> plain int
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_jsonable(v) for v in value), key=repr)
    if isinstance(value, PurePath):
        return str(value)
    # numpy scalars/arrays and torch tensors all have tolist(); duck-typed so
    # this module imports neither
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return to_jsonable(tolist())
    raise TypeError(f"cannot store a {type(value).__name__} in a result record: {value!r}")


def _machine_prefixes() -> list[tuple[str, str]]:
    """This machine's directories and what a record says instead, longest first."""
    import site
    import sys
    import tempfile

    found: dict[str, str] = {}
    for path in [*site.getsitepackages(), site.getusersitepackages()]:
        found[path] = "<site-packages>"
    found[sys.prefix] = "<venv>"
    found[sys.base_prefix] = "<python>"
    found[tempfile.gettempdir()] = "<tmp>"
    found[str(Path.home())] = "~"
    try:
        found[os.getcwd()] = "."
    except OSError:
        pass
    real = {os.path.realpath(p): label for p, label in found.items()}
    found.update(real)
    # a prefix "/" or "" would rewrite every path; "/root"-like homes stay
    pairs = [(p.rstrip("/"), label) for p, label in found.items() if len(p.rstrip("/")) > 1]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def portable_text(text: str) -> str:
    """``text`` with this machine's directories (site-packages, the venv, the
    working directory, the temp dir, the home directory) replaced by
    placeholders, so a record or a failure message carries no machine path."""
    for prefix, label in _machine_prefixes():
        # the whole directory name only: "/root" must not rewrite "/rootfs"
        text = re.sub(re.escape(prefix) + r"(?![\w.-])", label, text)
    return text


def _portable(value: Any) -> Any:
    if isinstance(value, str):
        return portable_text(value) if "/" in value else value
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v) for v in value]
    return value


def dumps_record(record: Mapping[str, Any]) -> str:
    """One line of canonical JSON (no trailing newline); no machine path in any string."""
    return json.dumps(_portable(to_jsonable(record)), sort_keys=True, allow_nan=False, separators=(",", ":"))


class ResultStore:
    """Append-only store of result records under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path_for(self, suite: str) -> Path:
        return self.root / f"{sanitize_name(suite)}.jsonl"

    def append(self, record: Mapping[str, Any]) -> None:
        suite = record.get("suite")
        if not isinstance(suite, str) or not suite:
            raise ValueError(f"a result record needs a non-empty 'suite' string, got {suite!r}")
        data = (dumps_record(record) + "\n").encode("utf-8")
        path = self.path_for(suite)
        self.root.mkdir(parents=True, exist_ok=True)
        # appends hold the lock for well under a millisecond: poll often
        with FileLock(f"{path}.lock").acquire(timeout=LOCK_TIMEOUT_S, poll_interval=LOCK_POLL_S):
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size:
                    # a crash may have left an unterminated line; end it so this
                    # record stays on a line of its own
                    os.lseek(fd, size - 1, os.SEEK_SET)
                    if os.read(fd, 1) != b"\n":
                        data = b"\n" + data
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(f"{path}: short write ({written} of {len(data)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)

    def files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("*.jsonl") if p.is_file())

    def suites(self) -> list[str]:
        """Suite names seen in the store (from the records, not file names)."""
        return sorted({r["suite"] for r in self.records() if isinstance(r.get("suite"), str)})

    def records(self, suite: str | None = None) -> list[dict]:
        """All records (files in name order), or one suite's, each file in order."""
        if suite is None:
            return [rec for path in self.files() for rec in _read_file(path)]
        path = self.path_for(suite)
        if not path.is_file():
            return []
        # two names may sanitise to the same file: keep only this suite's records
        return [rec for rec in _read_file(path) if rec.get("suite") == suite]


def _read_file(path: Path) -> list[dict]:
    lock_path = Path(f"{path}.lock")
    # take the writers' lock when we can, so an in-flight write is never seen;
    # a read-only store is read without it
    if os.access(path.parent, os.W_OK) and (not lock_path.exists() or os.access(lock_path, os.W_OK)):
        with FileLock(str(lock_path), timeout=LOCK_TIMEOUT_S):
            raw = path.read_bytes()
    else:
        raw = path.read_bytes()
    out = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, UnicodeDecodeError) as err:
            warnings.warn(f"{path}:{lineno}: skipping corrupt record ({err})", CorruptRecordWarning, stacklevel=3)
            continue
        if not isinstance(rec, dict):
            warnings.warn(
                f"{path}:{lineno}: skipping corrupt record (a JSON {type(rec).__name__}, not an object)",
                CorruptRecordWarning,
                stacklevel=3,
            )
            continue
        out.append(rec)
    return out


# -- environment -------------------------------------------------------------


def _git(args: list[str], cwd: str | Path | None) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None  # git missing, cwd gone, hung
    if proc.returncode != 0:
        return None
    return proc.stdout.decode("utf-8", "replace")


def git_commit(cwd: str | Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the repo at ``cwd`` (default: the working dir)."""
    out = _git(["rev-parse", "--verify", "--quiet", "HEAD"], cwd)
    out = out.strip() if out else ""
    return out or None


def git_dirty(cwd: str | Path | None = None) -> bool | None:
    """Whether the work tree has changes outside results/ and leaderboards/.

    None when ``cwd`` is not in a git repo or git is missing.
    """
    out = _git(["status", "--porcelain", "-z", "--untracked-files=normal"], cwd)
    if out is None:
        return None
    # -z: "XY path\0", renames/copies add the source path as the next entry;
    # porcelain paths are relative to the repo root
    entries = out.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        paths = [path]
        if "R" in status or "C" in status:
            if i < len(entries):
                paths.append(entries[i])
            i += 1
        if any(not p.startswith(GIT_IGNORED_DIRS) for p in paths):
            return True
    return False


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment_info(cwd: str | Path | None = None) -> dict:
    """Where a result came from: Python, platform, package versions and git state.

    Flat dict: ``python``, ``platform``, one key per installed package of
    interest (missing ones are omitted), ``git_commit`` and ``git_dirty``.
    Deliberately no environment variables: they may hold secrets
    (WANDB_API_KEY, tokens) and records are committed.
    """
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    for dist in (*ALWAYS_PACKAGES, *OPTIONAL_PACKAGES):
        version = _version(dist)
        if version is not None:
            info[dist] = version
    info["git_commit"] = git_commit(cwd)
    info["git_dirty"] = git_dirty(cwd)
    return info

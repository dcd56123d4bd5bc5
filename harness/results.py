"""The results store: one JSON file per run point, written atomically.

A record lives at ``<root>/<suite>/<point_key>.json``, where ``point_key``
hashes the point's identity (``records.point_identity``).  Writing is a
temporary file in the same folder, fsync, then rename: a reader or a crash
never sees half a record, a re-run of the same point replaces its file, and
no lock is needed, so the store is safe on the shared filesystems of a
cluster.  A killed run leaves at most a stray temporary file (``.*.tmp``),
which readers ignore.

Stores written before this layout (``<root>/<suite>.jsonl``, one record per
line) are still read; ``prunebench migrate-store`` converts them.  When two
records share a point key, the newest ``created`` wins.

Leaderboards are regenerated from this store alone (``leaderboard.py``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import tempfile
import warnings
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from filelock import FileLock

if TYPE_CHECKING:
    from .records import RunRecord

__all__ = [
    "ResultStore",
    "CorruptRecordWarning",
    "to_jsonable",
    "dumps_record",
    "sanitize_name",
    "portable_text",
    "write_atomic",
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
    """Run records under ``root``, one file per run point."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def suite_dir(self, suite: str) -> Path:
        return self.root / sanitize_name(suite)

    def path_for(self, suite: str, point_key: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{8,64}", str(point_key)):
            raise ValueError(f"point_key must be a hex digest, got {point_key!r}")
        return self.suite_dir(suite) / f"{point_key}.json"

    def put(self, record: "RunRecord | Mapping[str, Any]") -> Path:
        """Write ``record`` (replacing an earlier one of the same point) atomically."""
        from .records import migrate

        to_dict = getattr(record, "to_dict", None)  # a RunRecord
        record = to_dict() if callable(to_dict) else migrate(dict(record))
        suite = record.get("suite")
        if not isinstance(suite, str) or not suite:
            raise ValueError(f"a result record needs a non-empty 'suite' string, got {suite!r}")
        path = self.path_for(suite, record["point_key"])
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (dumps_record(record) + "\n").encode("utf-8"))
        return path

    #: the name older code used; a store no longer appends
    append = put

    def get(self, suite: str, point_key: str) -> dict | None:
        """The stored record of one point, or None."""
        path = self.path_for(suite, point_key)
        if path.is_file():
            rec = _read_json(path)
            if rec is not None:
                return rec
        for rec in self._legacy(suite):
            if _key(rec) == point_key:
                return rec
        return None

    def files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("*/*.json") if p.is_file() and not p.name.startswith("."))

    def legacy_files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("*.jsonl") if p.is_file())

    def _legacy(self, suite: str | None = None) -> list[dict]:
        recs = [rec for path in self.legacy_files() for rec in _read_file(path)]
        return recs if suite is None else [r for r in recs if r.get("suite") == suite]

    def suites(self) -> list[str]:
        """Suite names seen in the store (from the records, not file names)."""
        return sorted({r["suite"] for r in self.records() if isinstance(r.get("suite"), str)})

    def records(self, suite: str | None = None) -> list[dict]:
        """Every point's record (the newest when one is stored twice), in a
        stable order: suite, then creation time, then point key."""
        newest: dict[tuple, dict] = {}
        candidates = self._legacy(suite) + [r for r in map(_read_json, self.files()) if r is not None]
        for rec in candidates:
            if suite is not None and rec.get("suite") != suite:
                continue
            ident = (str(rec.get("suite")), _key(rec))
            old = newest.get(ident)
            if old is None or str(rec.get("created") or "") >= str(old.get("created") or ""):
                newest[ident] = rec
        return sorted(newest.values(), key=lambda r: (str(r.get("suite")), str(r.get("created") or ""), _key(r)))

    def run_records(self, suite: str | None = None) -> list["RunRecord"]:
        """:meth:`records` read as RunRecords, older schemas migrated."""
        from .records import RunRecord

        return [RunRecord.from_json(rec) for rec in self.records(suite)]

    def migrate_legacy(self) -> int:
        """Write every legacy JSONL record as its own file and remove the JSONL
        files (and their lock files); returns how many records were written."""
        legacy = self.legacy_files()
        if not legacy:
            return 0
        written = 0
        for rec in self.records():
            path = self.path_for(rec["suite"], _key(rec))
            if not path.is_file():
                self.put(rec)
                written += 1
        for path in legacy:
            path.unlink()
            Path(f"{path}.lock").unlink(missing_ok=True)
        return written

    def export_jsonl(self, suite: str) -> str:
        """One suite's records as JSON lines (for tools that want one file)."""
        return "".join(dumps_record(rec) + "\n" for rec in self.records(suite))


def _key(rec: Mapping) -> str:
    """A stored record's point key (computed for records older than schema 2)."""
    key = rec.get("point_key")
    if isinstance(key, str):
        return key
    from .records import migrate

    return migrate(dict(rec))["point_key"]


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once: a temporary file in the same
    folder, fsync, rename, fsync of the folder (a reader never sees half)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # the rename itself survives a power cut only once the folder is synced
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _read_json(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_bytes())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        warnings.warn(f"{path}: skipping corrupt record ({err})", CorruptRecordWarning, stacklevel=3)
        return None
    if not isinstance(rec, dict):
        warnings.warn(f"{path}: skipping corrupt record (a JSON {type(rec).__name__}, not an object)",
                      CorruptRecordWarning, stacklevel=3)
        return None
    return rec


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

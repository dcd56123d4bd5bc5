"""Data helpers every task family shares: where a dataset may live, which items
a ``limit_*`` keeps, and generating a dataset into the cache exactly once.

Kept here, not in one family's data module, so classification, detection and
lanes pick the same items for the same limit and cache generated data the same way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import torch

__all__ = ["LIMIT_SEED", "candidate_dirs", "limit_indices", "generate_once"]

#: seed of the permutation that ``limit_train`` / ``limit_test`` take a prefix of
LIMIT_SEED = 0


def candidate_dirs(path: str | None, data_root: str | None, default_subdirs: Sequence[str] = ()) -> list[Path]:
    """Where a dataset may live, in order, without repeats: ``path`` under data_root
    first when it is relative, then as given; without a path, data_root/<each default>."""
    cands: list[Path] = []
    if path:
        if data_root and not Path(path).is_absolute():
            cands.append(Path(data_root) / path)
        cands.append(Path(path).expanduser())
    elif data_root:
        cands += [Path(data_root) / sub for sub in default_subdirs]
    return list(dict.fromkeys(cands))


def limit_indices(n: int, limit: int | None) -> list[int] | None:
    """Which of ``n`` items a ``limit_*`` keeps: the first ``limit`` of a LIMIT_SEED
    permutation, in original order; None when the limit keeps everything.
    Every task uses this, so a limit picks the same items whatever the task."""
    if limit is None or limit >= n:
        return None
    g = torch.Generator().manual_seed(LIMIT_SEED)
    return torch.randperm(n, generator=g)[:limit].sort().values.tolist()


def generate_once(root: Path, generate: Callable[[Path], None]) -> Path:
    """``root``, filled by ``generate(folder)`` on first use: into a temporary folder
    beside it, renamed into place under a file lock, so neither a concurrent run nor
    an interrupted one ever sees a half-written dataset."""
    from filelock import FileLock

    marker = root / "COMPLETE"
    if marker.is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{root}.lock"):
        if marker.is_file():
            return root
        if root.exists():  # a folder without the marker is incomplete
            shutil.rmtree(root)
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp"))
        try:
            generate(tmp)
            (tmp / "COMPLETE").write_text("")
            os.replace(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return root

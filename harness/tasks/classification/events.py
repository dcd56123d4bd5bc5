"""Event-camera data for spiking networks: N-MNIST (Orchard et al., Front.
Neurosci. 2015, doi 10.3389/fnins.2015.00437) binned into spike frames.

On disk, N-MNIST is the two archives of the original release unpacked as
``NMNIST/Train/<digit>/<id>.bin`` and ``NMNIST/Test/<digit>/<id>.bin``.  Each
``.bin`` file is a stream of 40-bit events, 5 bytes each, big-endian fields::

    byte 0      x (0..33)
    byte 1      y (0..33)
    byte 2      bit 7: polarity (1 = ON), bits 6..0: timestamp bits 22..16
    bytes 3, 4  timestamp bits 15..0 (microseconds)

Files are read with ``tonic.io.read_mnist_file`` (tonic, the event-data
library, https://tonic.readthedocs.io).
:func:`write_nmnist_bin` writes the same format, for tests and generated data.

Binning (a choice, documented): the events of one sample are split into
``time_bins`` equal windows over [0, last timestamp]; a frame pixel is 1
when that pixel fired at least once with that polarity in that window (spikes
are binary), so a sample becomes a float tensor [time_bins * 2, 34, 34],
frames stacked in time order, OFF then ON polarity, which the ``events``
encoding of the spiking models (:mod:`.snn`) unstacks.  Use the model's
``time_steps`` equal to ``time_bins``.

``load_nmnist`` raises :class:`DatasetUnavailable` naming every folder it
looked in when the data is absent.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from ...interfaces import DatasetUnavailable, DependencyUnavailable
from .data import TensorSplit

__all__ = ["HOW_TO_GET", "SENSOR", "bin_events", "find_nmnist", "load_nmnist", "read_nmnist_bin", "write_nmnist_bin"]

#: N-MNIST sensor (width, height, polarities)
SENSOR = (34, 34, 2)
_SPLIT_DIRS = {"train": "Train", "test": "Test"}
HOW_TO_GET = (
    "download Train.zip and Test.zip of N-MNIST (https://www.garrickorchard.com/datasets/n-mnist, "
    "doi 10.17632/468j46mzdv.1) and unzip them into <data_root>/NMNIST/ so that "
    "<data_root>/NMNIST/Train/0/*.bin exists"
)
_EVENT_DTYPE = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])


def write_nmnist_bin(path: str | os.PathLike, x, y, t, p) -> None:
    """Write events in N-MNIST's 40-bit format (timestamps < 2^23 us)."""
    x, y, t, p = (np.asarray(a, dtype=np.int64) for a in (x, y, t, p))
    if not (len(x) == len(y) == len(t) == len(p)):
        raise ValueError("x, y, t and p must have the same length")
    if len(t) and (t.min() < 0 or t.max() >= 2**23):
        raise ValueError("timestamps must be in [0, 2^23) microseconds")
    if len(x) and (x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() > 255 or y.max() == 240):
        raise ValueError("x and y must be bytes (y = 240 marks an overflow event)")
    raw = np.empty((len(x), 5), dtype=np.uint8)
    raw[:, 0] = x
    raw[:, 1] = y
    raw[:, 2] = ((p & 1) << 7) | ((t >> 16) & 0x7F)
    raw[:, 3] = (t >> 8) & 0xFF
    raw[:, 4] = t & 0xFF
    Path(path).write_bytes(raw.tobytes())


def read_nmnist_bin(path: str | os.PathLike) -> np.ndarray:
    """Events of one file as a structured array with fields x, y, t, p (via tonic)."""
    try:
        from tonic.io import read_mnist_file
    except ImportError as err:
        raise DependencyUnavailable("tonic", f"not importable ({err})", "pip install 'prunebench[snn]'") from None
    return read_mnist_file(str(path), dtype=_EVENT_DTYPE)


def bin_events(events: np.ndarray, time_bins: int, sensor: tuple[int, int, int] = SENSOR) -> torch.Tensor:
    """Binary frames [time_bins * P, H, W] (see the module docstring)."""
    w, h, pols = sensor
    frames = np.zeros((time_bins, pols, h, w), dtype=np.float32)
    if len(events):
        t = events["t"].astype(np.int64)
        span = int(t.max()) + 1
        b = np.minimum((t * time_bins) // span, time_bins - 1)
        keep = (events["x"] < w) & (events["y"] < h)
        frames[b[keep], events["p"][keep], events["y"][keep], events["x"][keep]] = 1.0
    return torch.from_numpy(frames.reshape(time_bins * pols, h, w))


def find_nmnist(split: str, roots: Iterable[str | os.PathLike]) -> tuple[Path | None, list[str]]:
    """The folder holding ``split``'s digit folders, and every place looked in."""
    sub = _SPLIT_DIRS[split]
    looked: list[str] = []
    for root in roots:
        root = Path(root)
        for cand in (root / "NMNIST" / sub, root / "nmnist" / sub, root / sub):
            looked.append(str(cand))
            if cand.is_dir() and any(cand.glob("[0-9]/*.bin")):
                return cand, looked
    return None, list(dict.fromkeys(looked))


def load_nmnist(split: str, roots: Iterable[str | os.PathLike], time_bins: int, limit: int | None = None) -> TensorSplit:
    """N-MNIST ``split`` ("train" / "test") as binary spike frames [N, time_bins*2, 34, 34].

    ``limit`` keeps the first files in sorted (digit, name) order."""
    if split not in _SPLIT_DIRS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if time_bins < 1:
        raise ValueError(f"time_bins must be >= 1, got {time_bins!r}")
    folder, looked = find_nmnist(split, roots)
    if folder is None:
        raise DatasetUnavailable("nmnist", looked, HOW_TO_GET)
    files = sorted(folder.glob("[0-9]/*.bin"), key=lambda f: (f.parent.name, f.name))
    if limit is not None:
        files = files[:limit]
    xs = [bin_events(read_nmnist_bin(f), time_bins) for f in files]
    ys = [int(f.parent.name) for f in files]
    return TensorSplit(torch.stack(xs), torch.tensor(ys, dtype=torch.long), classes=10)

"""Comparison protocols: one module per protocol, registered under the
entry-point group ``prunebench.protocols`` (see :mod:`.base`).

- ``equal_compression``: compress to each listed rate and report accuracy.
- ``equal_accuracy``: the largest rate within a tolerance of the dense accuracy.
"""

from __future__ import annotations

from .base import ComparisonFigure, Compress, Protocol, RunPoint, ordered
from .equal_accuracy import EqualAccuracy, SearchResult, SearchStep, search_max_rate
from .equal_compression import EqualCompression

__all__ = ["Protocol", "RunPoint", "Compress", "ComparisonFigure", "EqualCompression", "EqualAccuracy",
           "SearchStep", "SearchResult", "search_max_rate", "ordered"]


"""Lane detection on TuSimple: the task (``task``), the loader and generator
(``data``), the row-anchor UFLD model and loss (``models``) and the official
TuSimple metric (``metric``)."""

from .task import LanesConfig, LanesTask

__all__ = ["LanesTask", "LanesConfig"]

"""Leaderboards from the results store: statistics (:mod:`.stats`), record
access and cells (:mod:`.cells`), the Pareto plot (:mod:`.plots`) and pages
(:mod:`.pages`).  Protocols contribute their own rows (prunebench.protocols)."""

from .cells import Row
from .pages import GENERATED_MARKER, comparison_rows, comparison_table, render, write_leaderboards
from .plots import method_colour
from .stats import Stat, mean_ci, t_975

__all__ = ["Stat", "mean_ci", "t_975", "Row", "render", "write_leaderboards", "comparison_rows", "comparison_table",
           "GENERATED_MARKER", "method_colour"]

"""The suite pages' plots: one colour per built-in method, and the budget plot's
panel per structure and rate."""

from matplotlib.colors import to_hex

from prunebench import registry
from prunebench.report.plots import budget_figure, method_colour
from prunebench.report.stats import Stat


def test_every_built_in_method_has_its_own_colour():
    names = registry.methods.names()
    colours = {name: method_colour(f"{name} v1") for name in names}
    shared = {c: sorted(n for n in names if colours[n] == c) for c in colours.values()}
    assert {c: ns for c, ns in shared.items() if len(ns) > 1} == {}
    assert method_colour("gmp v1") == method_colour("gmp v2 + qat")  # the name decides, not the version


def _cells():
    s = lambda mean, half=0.5: Stat(3, mean, half)  # noqa: E731
    return {
        ("filter", "magnitude v2", 4.0): {1.0: s(89.0), 3.0: s(89.5)},
        ("filter", "gmp v1", 4.0): {1.0: s(88.0), 3.0: s(89.0)},
        ("filter", "magnitude v2", 64.0): {1.0: s(55.0), 3.0: s(58.0)},
        ("unstructured", "magnitude v2", 16.0): {1.0: s(89.3), 3.0: s(89.9)},
        ("unstructured", "gmp v1", 16.0): {1.0: s(81.0), 3.0: s(84.0)},
        ("unstructured", "random v2", 16.0): {1.0: s(86.0), 3.0: s(86.5)},
        ("unstructured", "slr v2", 16.0): {1.0: s(87.0), 3.0: s(88.0)},
        ("unstructured", "admm v2", 16.0): {1.0: s(10.0, 0.0), 3.0: s(87.5)},  # collapsed at 1 epoch
    }


def test_budget_plot_has_one_panel_per_structure_and_rate_and_one_line_per_method():
    fig = budget_figure(_cells(), [1.0, 3.0], "top1", Stat(5, 90.2, 0.7))
    axes = fig.axes
    visible = {ax.get_title(): ax for ax in axes if ax.get_visible()}
    # 2 structures x 3 rates; a structure that never ran a rate has no panel
    assert len(axes) == 6
    assert sorted(visible) == ["filter · 4×", "filter · 64×", "unstructured · 16×"]
    panel = visible["unstructured · 16×"]
    # one errorbar line per method, in the method's colour
    colours = sorted(to_hex(line.get_color()) for line in panel.get_lines() if line.get_marker() == "o")
    assert colours == sorted(method_colour(m) for m in ("magnitude", "gmp", "random", "slr", "admm"))
    # admm's collapse at 1 epoch sits at the axis bottom with its value written, not stretching the axis
    bottom = panel.get_ylim()[0]
    assert 10.0 < bottom < 81.0
    assert [t.get_text() for t in panel.texts] == ["10"]


def test_budget_plot_of_nothing_is_none():
    assert budget_figure({}, [1.0, 3.0], "top1", None) is None


def test_variants_of_one_method_share_its_colour_and_differ_in_line_style():
    cells = {("unstructured", "gmp v1", 64.0): {12.0: Stat(3, 86.0, 1.0), 24.0: Stat(3, 87.0, 1.0)},
             ("unstructured", "gmp v1 (from scratch)", 64.0): {12.0: Stat(3, 86.1, 1.0), 24.0: Stat(3, 87.1, 1.0)}}
    fig = budget_figure(cells, [12.0, 24.0], "top1", None)
    lines = [line for line in fig.axes[0].get_lines() if line.get_marker() == "o"]
    assert len({to_hex(line.get_color()) for line in lines}) == 1
    assert sorted(line.get_linestyle() for line in lines) == ["-", "--"]

"""Helpers shared by the hardware models: per-layer figures summed into totals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from prunebench.interfaces import Figure

if TYPE_CHECKING:
    from prunebench.artifact import CompressedModel, LayerRecord

__all__ = ["ratio", "sum_layers"]


def ratio(num: int | float, den: int | float) -> float | None:
    """num/den, or None (not modelled) when den is zero."""
    return None if den == 0 else num / den


def sum_layers(
    artifact: "CompressedModel",
    layer_figures: Callable[["LayerRecord"], dict[str, Figure]],
    total_keys: Iterable[str],
) -> tuple[dict[str, Figure], dict[str, Figure]]:
    """(totals over ``total_keys``, every layer figure as ``layer.<name>.<key>``)."""
    totals: dict[str, Figure] = dict.fromkeys(total_keys, 0)
    per_layer: dict[str, Figure] = {}
    for layer in artifact.layers:
        figs = layer_figures(layer)
        for key in totals:
            totals[key] += figs[key]
        for key, value in figs.items():
            per_layer[f"layer.{layer.name}.{key}"] = value
    return totals, per_layer

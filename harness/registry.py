"""Plugin discovery over entry points, lazily and loudly.

Built-in plugins are registered through the same entry-point groups as
third-party ones; nothing is registered by importing a module.

- an unknown name lists the installed ones and suggests the closest;
- a plugin that fails to import is an error naming it and its distribution;
- two distributions claiming one name is an error naming both.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Generic, TypeVar

from .interfaces import HardwareModel, Method, Task
from .protocols.base import Protocol

__all__ = [
    "PluginError",
    "UnknownPlugin",
    "PluginInfo",
    "Registry",
    "methods",
    "hardware_models",
    "tasks",
    "GROUPS",
]

T = TypeVar("T")


class PluginError(RuntimeError):
    """A plugin could not be loaded or is registered twice."""


class UnknownPlugin(PluginError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


@dataclass(frozen=True)
class PluginInfo:
    name: str
    group: str
    value: str
    distribution: str
    version: str


def _dist_of(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "<unknown distribution>", "?"
    return dist.metadata["Name"] or dist.name, dist.version


_LABEL = re.compile(r"[A-Za-z0-9_-]+")


class Registry(Generic[T]):
    """Plugins of one entry-point group that must subclass ``base``."""

    def __init__(self, group: str, base: type, kind: str, *, variants: bool = False):
        self.group = group
        self.base = base
        self.kind = kind
        #: whether ``name:label`` names the plugin ``name`` under a label of its own (a suite
        #: may then list one plugin twice with different settings, e.g. an ablation)
        self.variants = variants
        self._cache: dict[str, type] = {}

    def _entries(self) -> dict[str, tuple[metadata.EntryPoint, PluginInfo]]:
        found: dict[str, tuple[metadata.EntryPoint, PluginInfo]] = {}
        for ep in metadata.entry_points(group=self.group):
            dist, version = _dist_of(ep)
            info = PluginInfo(ep.name, self.group, ep.value, dist, version)
            if ep.name in found:
                other = found[ep.name][1]
                # One distribution seen twice on sys.path is not a conflict.
                if (other.distribution, other.value) == (dist, ep.value):
                    continue
                raise PluginError(
                    f"{self.kind} {ep.name!r} is registered twice: by {other.distribution} "
                    f"{other.version} ({other.value}) and by {dist} {version} ({ep.value}). "
                    f"Uninstall one of them."
                )
            found[ep.name] = (ep, info)
        return found

    def names(self) -> list[str]:
        return sorted(self._entries())

    def infos(self) -> list[PluginInfo]:
        return [info for _, (_, info) in sorted(self._entries().items())]

    def info(self, name: str) -> PluginInfo:
        return self._lookup(name)[1]

    def plugin_name(self, name: str) -> str:
        """The registered name behind ``name``: ``magnitude`` for ``magnitude:long``
        where variants are allowed (the label: letters, digits, ``_`` and ``-``)."""
        if not self.variants or ":" not in name:
            return name
        plugin, label = name.split(":", 1)
        if not plugin or not _LABEL.fullmatch(label):
            raise UnknownPlugin(f"{self.kind} {name!r}: expected NAME or NAME:LABEL, the label made of "
                                f"letters, digits, '_' or '-'")
        return plugin

    def _lookup(self, name: str) -> tuple[metadata.EntryPoint, PluginInfo]:
        entries = self._entries()
        if name not in entries and self.variants:
            name = self.plugin_name(name)
        if name not in entries:
            installed = sorted(entries)
            close = difflib.get_close_matches(name, installed, n=1)
            hint = f" Did you mean: {close[0]}?" if close else ""
            raise UnknownPlugin(
                f"Unknown {self.kind} {name!r}.{hint} Installed {self.kind}s: "
                f"{', '.join(installed) or 'none'} (entry-point group {self.group!r})."
            )
        return entries[name]

    def get(self, name: str) -> type[T]:
        if name in self._cache:
            return self._cache[name]
        ep, info = self._lookup(name)
        try:
            obj = ep.load()
        except Exception as err:  # any import failure is the plugin's, say whose
            raise PluginError(
                f"{self.kind} {name!r} from distribution {info.distribution} {info.version} "
                f"failed to import ({info.value}): {type(err).__name__}: {err}"
            ) from err
        if not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise PluginError(
                f"{self.kind} {name!r} from distribution {info.distribution} points to {info.value}, "
                f"which is not a subclass of prunebench.{self.base.__name__}"
            )
        self._cache[name] = obj
        return obj


GROUPS = {
    "prunebench.methods": "method",
    "prunebench.hardware": "hardware model",
    "prunebench.tasks": "task",
    "prunebench.protocols": "protocol",
}

methods: Registry[Method] = Registry("prunebench.methods", Method, "method", variants=True)
hardware_models: Registry[HardwareModel] = Registry("prunebench.hardware", HardwareModel, "hardware model")
tasks: Registry[Task] = Registry("prunebench.tasks", Task, "task")
protocols: Registry[Protocol] = Registry("prunebench.protocols", Protocol, "protocol")

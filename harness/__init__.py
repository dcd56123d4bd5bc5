"""prunebench: a declarative benchmark harness for DNN compression.

Public API (everything a plugin author needs):

- ``Method``, ``HardwareModel``, ``Task``: the plugin ABCs;
- ``Target``, ``Structure``, ``Quantization``: what a method must reach;
- ``Trainer``, ``OptimizerConfig``, ``Callback``, ``KeepMasked``, ``BudgetExceeded``;
- ``CompressedModel``, ``LayerRecord``: the artifact hardware models score;
- ``DatasetUnavailable``, ``DependencyUnavailable``, ``NoConfig``.
"""

from .artifact import CompressedModel, LayerRecord
from .interfaces import DatasetUnavailable, DependencyUnavailable, HardwareModel, Headline, Method, NoConfig, Task
from .protocols import Protocol
from .target import Quantization, Structure, Target
from .trainer import BudgetExceeded, Callback, FitReport, KeepMasked, OptimizerConfig, Trainer

try:
    from importlib.metadata import version as _version

    __version__ = _version("prunebench")
except Exception:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "BudgetExceeded",
    "Callback",
    "CompressedModel",
    "DatasetUnavailable",
    "DependencyUnavailable",
    "FitReport",
    "HardwareModel",
    "Headline",
    "KeepMasked",
    "LayerRecord",
    "Method",
    "NoConfig",
    "OptimizerConfig",
    "Protocol",
    "Quantization",
    "Structure",
    "Target",
    "Task",
    "Trainer",
    "__version__",
]

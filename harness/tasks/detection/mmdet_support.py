"""The mmdetection side of the detection task: availability checks, config
loading, model building and safe checkpoint loading.

Everything here imports mmcv/mmengine/mmdet lazily, so prunebench imports and
lists its plugins on machines without them; a suite that needs them is
skipped with ``DependencyUnavailable`` saying how to install them.

Only configs shipped inside the installed mmdet package can be named (no path
from a suite file is ever executed); a suite adjusts a config through
``model_overrides``, plain data merged with mmengine's dotted keys.
"""

from __future__ import annotations

import copy
import functools
import importlib
import pickle
import re
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import torch

from ...interfaces import DependencyUnavailable

__all__ = [
    "require_mmdet",
    "mmdet_config_dir",
    "load_model_config",
    "build_detector",
    "load_mmengine_checkpoint",
    "mmengine_safe_globals",
    "check_overrides",
    "check_registry_types",
]

HOW_TO_INSTALL = (
    "run scripts/setup.sh (it builds mmcv 2.1.0 with ops once and caches the wheel: "
    "scripts/build_mmcv.sh), then pip install mmdet==3.3.0 mmengine pycocotools"
)


@functools.lru_cache(maxsize=None)
def require_mmdet() -> None:
    """Raise DependencyUnavailable unless mmdet, mmengine and mmcv's compiled ops import."""
    for package in ("mmcv", "mmengine", "mmdet", "pycocotools"):
        try:
            __import__(package)
        except ImportError as err:
            raise DependencyUnavailable(package, f"not importable ({err})", HOW_TO_INSTALL) from None
    try:
        import mmcv._ext  # noqa: F401  (the compiled ops: nms, roi_align, ...)
    except ImportError as err:
        raise DependencyUnavailable(
            "mmcv", f"installed without its compiled ops (mmcv._ext: {err}); detectors need nms and roi_align",
            HOW_TO_INSTALL,
        ) from None
    from mmdet.utils import register_all_modules
    from mmengine.logging import MMLogger

    register_all_modules(init_default_scope=True)
    # mmengine logs per-parameter init tables and eval summaries to the
    # *current* logger at INFO; make a quiet one current
    MMLogger.get_instance("prunebench", log_level="WARNING")


def mmdet_config_dir() -> Path:
    require_mmdet()
    import mmdet

    path = Path(mmdet.__file__).parent / ".mim" / "configs"
    if not path.is_dir():
        raise DependencyUnavailable("mmdet", f"its configs are missing ({path})", "reinstall mmdet==3.3.0 from a wheel")
    return path


def _resolve_config(name: str) -> Path:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or rel.suffix != ".py":
        raise ValueError(
            f"config must name a file inside mmdet's configs, like 'retinanet/retinanet_r18_fpn_1x_coco.py'; got {name!r}"
        )
    root = mmdet_config_dir()
    path = root / rel
    if not path.is_file():
        family = root / rel.parts[0]
        hint = ""
        if family.is_dir():
            import difflib

            close = difflib.get_close_matches(rel.name, [p.name for p in family.glob("*.py")], n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"no mmdet config {name!r} in {root}.{hint}")
    return path


def _drop_pretrained(node: Any) -> Any:
    """Remove ``init_cfg=dict(type='Pretrained', ...)`` entries: they download
    weights (torchvision://, open-mmlab://) at build time; a suite that wants
    pretrained weights names a local checkpoint instead."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "init_cfg" and isinstance(value, dict) and value.get("type") == "Pretrained":
                continue
            out[key] = _drop_pretrained(value)
        return out
    if isinstance(node, list):
        return [_drop_pretrained(v) for v in node]
    return node


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


#: mmcv's batched_nms passes an ``nms`` config's ``type`` to ``eval``: only these
NMS_TYPES = ("nms", "soft_nms")


def _type_problem(value: Any, parent: str) -> str | None:
    """Why ``value`` may not be the ``type`` of the config node ``parent``; None when it may.

    mmengine's registry resolves a ``type`` it does not hold by importing the
    dotted path (``type: os.system`` runs a shell command when the model is
    built), and mmcv's batched_nms ``eval``s an nms ``type``; so a ``type`` is
    a bare class name looked up in the registries alone, and an nms ``type``
    one of :data:`NMS_TYPES`."""
    if parent == "nms":
        if value not in NMS_TYPES:
            return f"expected one of {', '.join(NMS_TYPES)}, got {value!r} (mmcv evaluates this string)"
        return None
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        return f"expected a bare registered class name like 'FocalLoss', got {value!r} (dotted paths and objects are refused: they would be imported and executed)"
    return None


def _last_key(path: str) -> str:
    return re.split(r"[.\[]", path)[-1] if path else ""


def check_overrides(overrides: Mapping[str, Any]) -> None:
    """Refuse ``model_overrides`` that could make mmengine import or call code.

    Checked on plain data, before mmdet is imported, so ``prunebench validate``
    rejects such a suite: every ``type`` (as a dotted key's last part or as a
    nested key) must be a bare class name; keys starting with ``_`` (mmengine's
    ``_scope_``, ``_delete_``, ``_base_``) are refused. Raises ValueError
    naming the offending key."""

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                key = str(key)
                here = f"{path}.{key}" if path else key
                parts = key.split(".")
                if any(p.startswith("_") for p in parts):
                    raise ValueError(f"model_overrides.{here}: keys starting with '_' (mmengine's _scope_, _delete_, _base_) are not allowed")
                if parts[-1] == "type":
                    parent = parts[-2] if len(parts) > 1 else _last_key(path)
                    problem = _type_problem(value, parent)
                    if problem:
                        raise ValueError(f"model_overrides.{here}: {problem}")
                walk(value, here)
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(overrides, "")


def _holds(registry: Any, name: str) -> bool:
    """Whether ``registry`` or an ancestor holds ``name``. Never ``Registry.get``:
    for a name it does not hold, that imports the name as a module."""
    while registry is not None:
        if name in registry.module_dict:
            return True
        registry = registry.parent
    return False


def check_registry_types(model_cfg: Mapping[str, Any]) -> None:
    """Every ``type`` in the final model config is a bare name the registries
    hold (mmdet's configs use bare names); checked before anything is built."""
    from mmdet.registry import MODELS, TASK_UTILS
    from mmcv import ops as mmcv_ops
    from mmengine.registry import WEIGHT_INITIALIZERS

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            if "type" in node:
                value = node["type"]
                parent = _last_key(path)
                problem = _type_problem(value, parent)
                if problem is None and parent != "nms" and not (
                    any(_holds(reg, value) for reg in (MODELS, TASK_UTILS, WEIGHT_INITIALIZERS))
                    # mmdet's RoI extractors look a roi_layer type up in mmcv.ops
                    or (parent == "roi_layer" and isinstance(getattr(mmcv_ops, value, None), type))
                ):
                    problem = f"{value!r} is not a registered mmdet/mmcv/mmengine class"
                if problem:
                    raise ValueError(f"model config {path or 'model'}.type: {problem}")
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(model_cfg, "model")


#: where a detector config keeps its class count (one-stage, two-stage)
NUM_CLASSES_KEYS = ("bbox_head", "roi_head.bbox_head")


def load_model_config(name: str, num_classes: int, overrides: Mapping[str, Any]) -> dict:
    """The ``model`` dict of mmdet config ``name`` with overrides applied."""
    from mmengine.config import Config

    check_overrides(overrides)  # again here: a caller may skip DetectionConfig
    cfg = Config.fromfile(str(_resolve_config(name)))
    plain = {f"model.{k}": copy.deepcopy(v) for k, v in overrides.items()}
    if plain:
        try:
            cfg.merge_from_dict(plain)
        except Exception as err:  # mmengine raises several kinds; the key is what matters
            raise ValueError(f"model_overrides of {name}: {err}") from None
    model = cfg.to_dict()["model"]
    found = False
    for dotted in NUM_CLASSES_KEYS:
        node = model
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and "num_classes" in node:
            node["num_classes"] = num_classes
            found = True
    if not found:
        raise ValueError(f"{name}: found no num_classes under {' or '.join(NUM_CLASSES_KEYS)} of the model")
    model = _drop_pretrained(model)
    check_registry_types(model)
    return model


def build_detector(model_cfg: dict) -> torch.nn.Module:
    require_mmdet()
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict

    # detectors read their train/test settings by attribute
    model = MODELS.build(ConfigDict(copy.deepcopy(model_cfg)))
    model.init_weights()
    return model


def _history_buffer_method(owner: Any, name: str) -> Any:
    """Stands in for ``getattr`` while unpickling: mmengine pickles a
    HistoryBuffer's statistics table as ``getattr(HistoryBuffer, 'mean')``.
    Only those lookups resolve; a general ``getattr`` would let a crafted
    checkpoint reach arbitrary callables, so it is never allow-listed."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if owner is HistoryBuffer and name in ("min", "max", "current", "mean") + tuple(HistoryBuffer._statistics_methods):
        return getattr(owner, name)
    raise pickle.UnpicklingError(f"checkpoint asks for getattr({owner!r}, {name!r}); only HistoryBuffer statistics are allowed")


def mmengine_safe_globals() -> list:
    """What an mmengine checkpoint's meta and message_hub hold besides tensors."""
    import codecs

    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    found: list = [HistoryBuffer, np.dtype, np.ndarray, codecs.encode,
                   (_history_buffer_method, "builtins.getattr"), (_history_buffer_method, "__builtin__.getattr")]
    # numpy arrays and scalars pickle through these; the module moved in numpy 2
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        for attr in ("_reconstruct", "scalar"):
            try:
                found.append((getattr(importlib.import_module(mod), attr), f"{mod}.{attr}"))
            except (ImportError, AttributeError):
                pass
    found += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return found


def load_mmengine_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an mmengine/mmdet checkpoint, loaded with
    ``weights_only=True``: the few classes mmengine pickles into ``meta`` and
    ``message_hub`` (HistoryBuffer, numpy arrays) are allow-listed; anything
    else is refused as torch refuses it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with torch.serialization.safe_globals(mmengine_safe_globals()):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a checkpoint with a state dict, got {type(ckpt).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}

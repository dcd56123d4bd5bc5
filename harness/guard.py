"""The harness's guard around a method's ``compress``: what it trusts afterwards.

A method runs in the harness's process, so it can reach much more than the
model it is handed.  :func:`guarded_compress` calls it, then keeps nothing
of what it left behind but the numbers in the model's ``state_dict``:

- **a clean model.**  The compressed model's ``state_dict`` tensors are
  loaded (strict) into a model freshly built by ``task.build_model()``; that
  model is what the harness quantizes, verifies, evaluates and scores.  A
  method's model that holds hooks, extra or missing modules, parameters or
  buffers, a module of another type, a module method replaced on the
  instance, or a tensor of another shape is refused, naming them: it could
  compute through them (dense weights behind sparse ``.weight`` tensors).
- **no patching.**  The namespaces of the harness (every ``prunebench``
  module except the methods' own, and the classes defined there), of torch
  (``torch``, ``torch.nn.functional``, ``torch.Tensor``, the module-hook
  registry and torch's function / dispatch mode stacks), of the task's class
  and of every module class in the model are recorded before the method
  runs.  Whatever it rebound, added or removed is put back and the run is
  refused (:class:`HarnessTampered`, "patched the harness: ...").  The task
  object's own attributes are checked the same way and its tensors (its
  data) by a hash, so a method cannot rewrite the test labels either.
  Full isolation (each point in its own process) is the ``submitit``
  executor's job; this guard keeps a run in one process honest and keeps a
  method's patch from reaching later runs.
- **the budget.**  A forward pre-hook of the harness's own, on the first
  module with parameters that a training batch reaches, counts the samples
  (batch dimension) the model sees while grad is enabled and the module is
  in training mode or the model has parameters that require grad.  The
  count lives in a closure the trainer does not hold, so a method cannot
  reset it by resetting the trainer.  More samples than the budget allows
  (``budget_epochs x steps_per_epoch`` batches of the task's batch size,
  plus one batch), or more than the trainer counted (a loop of the
  method's own, a reset trainer), is refused.

The weights the method may change and the levels it may use are checked by
:func:`prunebench.verify.verify` on the clean model (``dense=`` and
``trained=`` cover the layers outside ``target.layers``).
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import sys
import types
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch
import torch.nn.modules.module as _torch_module
from torch import nn

from .verify import VerificationError, nonfinite

__all__ = [
    "HarnessTampered",
    "Guarded",
    "HarnessSnapshot",
    "SampleCounter",
    "guarded_compress",
    "clean_copy",
    "sample_budget",
    "HOOK_KINDS",
]


class HarnessTampered(VerificationError):
    """The method changed the harness, torch or the task; what could be put back was."""


#: per-module hook registries a method could compute or rewrite state through
HOOK_KINDS = {
    "_forward_pre_hooks": "forward pre-hooks",
    "_forward_hooks": "forward hooks",
    "_backward_pre_hooks": "backward pre-hooks",
    "_backward_hooks": "backward hooks",
    "_state_dict_pre_hooks": "state_dict pre-hooks",
    "_state_dict_hooks": "state_dict hooks",
    "_load_state_dict_pre_hooks": "load_state_dict pre-hooks",
    "_load_state_dict_post_hooks": "load_state_dict post-hooks",
}

_GLOBAL_HOOKS = tuple(
    name for name in (
        "_global_forward_pre_hooks", "_global_forward_hooks", "_global_forward_hooks_always_called",
        "_global_forward_hooks_with_kwargs", "_global_backward_pre_hooks", "_global_backward_hooks",
        "_global_module_registration_hooks", "_global_parameter_registration_hooks",
        "_global_buffer_registration_hooks",
    ) if isinstance(getattr(_torch_module, name, None), dict)
)

#: class attributes Python and torch set on their own (caches, lazily built annotations)
_NOISY = frozenset({
    "__annotations__", "__annotate__", "__slotnames__", "__abstractmethods__", "_abc_impl", "__doc__",
    "__parameters__", "__weakref__", "__dict__",
})

_MISSING = object()

#: harness modules a run uses after the method returns
_HARNESS_MODULES = (
    "prunebench", "prunebench.interfaces", "prunebench.target", "prunebench.quant", "prunebench.projections",
    "prunebench.verify", "prunebench.trainer", "prunebench.artifact", "prunebench.registry", "prunebench.records",
    "prunebench.results", "prunebench.baseline", "prunebench.runner", "prunebench.testing",
)


def _first_tensor(value: Any, depth: int = 0) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if depth > 3:
        return None
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _first_tensor(item, depth + 1)
            if found is not None:
                return found
    return None


def _lead(args: tuple) -> int:
    """Samples in a module call: the batch dimension of its first tensor input."""
    t = _first_tensor(args)
    if t is None:
        return 1
    return int(t.shape[0]) if t.dim() else 1


def _digest(t: torch.Tensor) -> str | None:
    """A hash of a tensor's bytes (None for layouts without plain storage)."""
    if t.layout != torch.strided or t.is_quantized or t.is_meta:
        return None
    flat = t.detach().contiguous().reshape(-1)
    raw = flat.view(torch.uint8) if flat.numel() else flat.to(torch.uint8)
    h = hashlib.blake2b(digest_size=16)
    h.update(str((tuple(t.shape), t.dtype)).encode())
    h.update(memoryview(raw.cpu().numpy()))
    return h.hexdigest()


_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


def _torch_wrapper(new: Any, old: Any) -> bool:
    """``new`` is torch's own wrapper of ``old`` (``import torch._dynamo`` wraps
    ``torch.manual_seed``), not a method's patch."""
    code = getattr(new, "__code__", None)
    return (getattr(new, "__wrapped__", None) is old and code is not None
            and os.path.abspath(code.co_filename).startswith(_TORCH_DIR))


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# ----------------------------------------------------------------- snapshot
class HarnessSnapshot:
    """What a method could patch, recorded before it runs; :meth:`restore` puts it back.

    ``restore`` returns what had changed ("prunebench.verify.verify", "task
    attribute _test_y (changed in place)"); empty when nothing did.
    """

    def __init__(self, spaces, task, task_state, global_hooks, modes):
        self._spaces = spaces
        self._task = task
        self._task_state = task_state
        self._global_hooks = global_hooks
        self._modes = modes
        # what restore needs, held here so a patched module global cannot change it
        self._missing = _MISSING
        self._noisy = _NOISY
        self._digest = _digest
        self._torch_wrapper = _torch_wrapper
        self._module_type = types.ModuleType

    @classmethod
    def take(
        cls,
        *,
        task: Any = None,
        model: nn.Module | None = None,
        classes: Iterable[type] = (),
        skip_modules: Iterable[str] = (),
    ) -> "HarnessSnapshot":
        skip = tuple(skip_modules)
        for name in _HARNESS_MODULES:  # loaded now, so a method cannot patch one it imports first
            importlib.import_module(name)
        owners: dict[int, tuple[str, Any, bool]] = {}

        def add(label: str, owner: Any, is_module: bool) -> None:
            owners.setdefault(id(owner), (label, owner, is_module))

        def add_class(c: type) -> None:
            for k in c.__mro__:
                if k is not object:
                    add(_qualname(k), k, False)

        # this module first: restore puts it back before it calls any helper of it
        add(__name__, sys.modules[__name__], True)
        for name, mod in list(sys.modules.items()):
            if not isinstance(mod, types.ModuleType):
                continue
            if not (name == "prunebench" or name.startswith("prunebench.")):
                continue
            if any(name == s or name.startswith(s + ".") for s in skip):
                continue
            add(name, mod, True)
            for value in list(vars(mod).values()):
                if isinstance(value, type) and value.__module__ == name:
                    add_class(value)
        for mod in (torch, torch.nn.functional, _torch_module):
            add(mod.__name__, mod, True)
        for c in (torch.Tensor, nn.Module, *classes):
            add_class(c)
        if task is not None:
            add_class(type(task))
        if model is not None:
            for m in model.modules():
                add_class(type(m))
        spaces = [(label, owner, is_module, dict(vars(owner))) for label, owner, is_module in owners.values()]
        task_state = None
        if task is not None:
            task_state = {
                k: (v, _digest(v) if isinstance(v, torch.Tensor) else None) for k, v in vars(task).items()
            }
        global_hooks = {name: set(getattr(_torch_module, name)) for name in _GLOBAL_HOOKS}
        return cls(spaces, task, task_state, global_hooks, _mode_depths())

    def restore(self) -> list[str]:
        """Put back every rebound, added or removed name; what changed, or []."""
        changed: list[str] = []
        missing, noisy, torch_wrapper, module_type = self._missing, self._noisy, self._torch_wrapper, self._module_type
        # first the namespaces, with builtins only: a patched global of this
        # module must not change how it is put back
        for label, owner, is_module, before in self._spaces:
            now = vars(owner)
            for key, value in before.items():
                if key in noisy or (is_module and key.startswith("__")):
                    continue
                current = now.get(key, missing)
                if current is not value:
                    if label.startswith("torch") and torch_wrapper(current, value):
                        continue  # torch wrapping its own function on a lazy import (torch._dynamo)
                    changed.append(f"{label}.{key}")
                    try:
                        if is_module:
                            now[key] = value
                        else:
                            setattr(owner, key, value)
                    except (AttributeError, TypeError):
                        pass
            for key in [k for k in now if k not in before]:
                if key in noisy or (is_module and (key.startswith("__") or isinstance(now[key], module_type))):
                    continue  # a lazily imported submodule, a warnings registry
                changed.append(f"{label}.{key} (added)")
                try:
                    if is_module:
                        del now[key]
                    else:
                        delattr(owner, key)
                except (AttributeError, TypeError):
                    pass
        for name, keys in self._global_hooks.items():
            registry = getattr(_torch_module, name)
            for key in [k for k in registry if k not in keys]:
                changed.append(f"torch global module hook {name}")
                registry.pop(key, None)
        depths = _mode_depths()
        for (what, pop), before_depth, now_depth in zip(_MODE_STACKS, self._modes, depths):
            if now_depth > before_depth:
                changed.append(f"a torch {what} mode left active")
                for _ in range(now_depth - before_depth):
                    pop()
        if self._task is not None:
            changed += self._restore_task()
        return changed

    def _restore_task(self) -> list[str]:
        out = []
        task, missing = self._task, self._missing
        now = vars(task)
        cls_name = type(task).__name__
        for key, (value, digest) in self._task_state.items():
            current = now.get(key, missing)
            if current is not value:
                out.append(f"{cls_name} attribute {key} (rebound)")
                now[key] = value
            elif digest is not None and self._digest(value) != digest:
                out.append(f"{cls_name} attribute {key} (changed in place)")
        for key in [k for k in now if k not in self._task_state]:
            value = now[key]
            # a method put on the instance, or a shadowed method of the class (a lazy cache is fine)
            shadowed = callable(getattr(type(task), key, None))
            if shadowed or (callable(value) and not isinstance(value, (torch.Tensor, nn.Module))):
                out.append(f"{cls_name} attribute {key} (added)")
                del now[key]
        return out


def _stack_depth(name: str) -> int:
    fn = getattr(torch._C, name, None)
    return int(fn()) if fn is not None else 0


_MODE_STACKS = tuple(
    (what, getattr(torch._C, pop, lambda: None))
    for what, pop in (("function", "_pop_torch_function_stack"), ("dispatch", "_pop_torch_dispatch_stack"))
)


def _mode_depths() -> tuple[int, int]:
    return (_stack_depth("_len_torch_function_stack"), _stack_depth("_len_torch_dispatch_stack"))


# ------------------------------------------------------------ sample count
class SampleCounter:
    """Counts the training samples ``model`` sees, at its module ``stem``.

    A sample counts when grad is enabled and the module is in training mode
    or some parameter of the model requires grad (training in eval mode
    counts too).  The count is held in the hook's closure, not on any object
    a method is given.
    """

    def __init__(self, model: nn.Module, stem: str):
        modules = dict(model.named_modules())
        self.model = model
        self.stem = stem
        self.module = modules.get(stem, model)
        params = tuple(model.parameters())
        tally = [0, 0]  # samples, largest batch
        grad_enabled = torch.is_grad_enabled

        def count(module, args):
            if grad_enabled() and (module.training or any(p.requires_grad for p in params)):
                n = _lead(args)
                tally[0] += n
                tally[1] = max(tally[1], n)

        self._tally = tally
        self._hook = count
        self._handle = self.module.register_forward_pre_hook(count, prepend=True)

    @property
    def samples(self) -> int:
        return self._tally[0]

    @property
    def largest_batch(self) -> int:
        return self._tally[1]

    def remove(self) -> bool:
        """Remove the hook; False when the method removed it or replaced the module."""
        hooks = self.module._forward_pre_hooks
        intact = hooks.get(self._handle.id) is self._hook
        intact = intact and dict(self.model.named_modules()).get(self.stem) is self.module
        self._handle.remove()
        return intact


def _probe(task: Any, fresh: nn.Module, budget_epochs: float) -> tuple[str, int | None]:
    """Where to count samples: the first module with parameters a training
    batch reaches (the example input's, when there is no training), and
    that batch's samples there (None when no training batch was run)."""
    seen: list[tuple[str, int]] = []
    handles = []
    for name, module in fresh.named_modules():
        if next(module.parameters(recurse=False), None) is not None:
            handles.append(module.register_forward_pre_hook(
                lambda m, args, name=name: seen.append((name, _lead(args))) if not seen else None))
    was_training = fresh.training
    batch_samples = None
    try:
        with torch.no_grad():
            if budget_epochs > 0:
                try:
                    batch = next(iter(task.train_batches(torch.Generator().manual_seed(0))), None)
                    if batch is not None:
                        fresh.train()
                        task.loss(fresh, batch)
                except Exception:  # a task whose loss needs grad: the example input names the stem
                    seen.clear()
                if seen:
                    batch_samples = seen[0][1]
            if not seen:
                fresh.eval()
                example = task.example_input()
                try:
                    fresh(example) if isinstance(example, torch.Tensor) else fresh(*example)
                except Exception:
                    pass
    finally:
        for h in handles:
            h.remove()
        fresh.train(was_training)
    return (seen[0][0] if seen else ""), batch_samples


def sample_budget(budget_epochs: float | None, steps_per_epoch: int | None, batch_samples: int | None) -> float:
    """Most training samples a method may show the model: the budget's
    batches (rounded up to whole steps) plus one batch of slack."""
    if budget_epochs is None:
        return math.inf
    if budget_epochs <= 0:
        return 0
    if not steps_per_epoch or not batch_samples:
        return math.inf
    steps = math.ceil(budget_epochs * steps_per_epoch - 1e-6)
    return (steps + 1) * batch_samples


def _forked_rng(device: torch.device):
    devices = []
    if device.type == "cuda" and torch.cuda.is_available():
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    return torch.random.fork_rng(devices=devices)


# ------------------------------------------------------------- clean model
def clean_copy(model: nn.Module, fresh: nn.Module, *, method: str = "the method",
               fresh_hooks: Mapping[tuple[str, str], int] | None = None, own_hooks: Iterable[Any] = ()) -> nn.Module:
    """Load ``model``'s ``state_dict`` tensors into ``fresh`` (strict), refusing
    a model that differs from a freshly built one in anything but numbers.

    ``own_hooks``: the harness's hook functions (copies of a module carry them)."""
    problems: list[str] = []
    mods, fmods = dict(model.named_modules()), dict(fresh.named_modules())
    base = dict(fresh_hooks) if fresh_hooks is not None else _hook_counts(fresh)
    own = {id(h) for h in own_hooks}
    hooks = {}
    for name, mod in mods.items():
        for attr, what in HOOK_KINDS.items():
            n = sum(1 for h in (getattr(mod, attr, None) or {}).values() if id(h) not in own)
            if n > base.get((name, attr), 0):
                hooks.setdefault(what, []).append(name or "<model>")
    for what, names in hooks.items():
        problems.append(f"{what} on {', '.join(names)}")
    extra = [n for n in mods if n not in fmods]
    missing = [n for n in fmods if n not in mods]
    if extra:
        problems.append(f"extra modules: {', '.join(extra)}")
    if missing:
        problems.append(f"missing modules: {', '.join(missing)}")
    for name in mods:
        if name in fmods:
            a, b = mods[name], fmods[name]
            if type(a) is not type(b):
                problems.append(f"module {name or '<model>'} is a {_qualname(type(a))}, "
                                f"the task builds a {_qualname(type(b))}")
                continue
            shadow = [k for k, v in vars(a).items()
                      if k not in vars(b) and k != "_compiled_call_impl"  # Module.compile(): harmless here
                      and callable(v) and hasattr(type(a), k) and not isinstance(v, (torch.Tensor, nn.Module))]
            if shadow:
                problems.append(f"module {name or '<model>'} has {', '.join(shadow)} replaced on the instance")
    for kind, ours, theirs in (("parameters", model.named_parameters(), fresh.named_parameters()),
                               ("buffers", model.named_buffers(), fresh.named_buffers())):
        ours, theirs = dict(ours), dict(theirs)
        extra = [n for n in ours if n not in theirs]
        missing = [n for n in theirs if n not in ours]
        if extra:
            problems.append(f"extra {kind}: {', '.join(extra)}")
        if missing:
            problems.append(f"missing {kind}: {', '.join(missing)}")
    if not problems:
        state = {k: v.detach().clone() for k, v in type(model).state_dict(model).items()}
        expected = fresh.state_dict()
        extra = [k for k in state if k not in expected]
        missing = [k for k in expected if k not in state]
        if extra:
            problems.append(f"extra state_dict keys: {', '.join(extra)}")
        if missing:
            problems.append(f"missing state_dict keys: {', '.join(missing)}")
        reshaped = [f"{k} {tuple(state[k].shape)} (built: {tuple(v.shape)})"
                    for k, v in expected.items() if k in state and state[k].shape != v.shape]
        if reshaped:
            problems.append(f"tensors of another shape: {', '.join(reshaped)}")
    if problems:
        raise VerificationError(
            f"{method} returned a model that is not the task's model with new numbers "
            f"(the harness evaluates only a freshly built model holding its state_dict):\n  "
            + "\n  ".join(problems)
        )
    fresh.load_state_dict(state, strict=True)
    fresh.train(model.training)
    return fresh


def _hook_counts(model: nn.Module) -> dict[tuple[str, str], int]:
    return {(name, attr): len(getattr(mod, attr, None) or ())
            for name, mod in model.named_modules() for attr in HOOK_KINDS}


# ------------------------------------------------------------------ guard
@dataclass
class Guarded:
    """What :func:`guarded_compress` hands back."""

    #: a freshly built model holding the method's state_dict
    model: nn.Module
    #: what ``compress`` returned (``{}`` for None)
    info: Mapping[str, Any]
    #: training samples the model saw while the method ran (the harness's own count)
    train_samples_seen: int
    #: most samples the budget allows (``inf`` without a budget)
    train_samples_allowed: float

    @property
    def trained(self) -> bool:
        return self.train_samples_seen > 0


def guarded_compress(
    method: Any,
    model: nn.Module,
    target: Any,
    trainer: Any,
    task: Any,
    *,
    budget_epochs: float | None,
    name: str = "the method",
    classes: Iterable[type] = (),
) -> Guarded:
    """``method.compress(model, target, trainer)`` under the harness's guard
    (see the module docstring); raises VerificationError (HarnessTampered
    for a patch) when the method broke a rule."""
    device = getattr(task, "device", torch.device("cpu"))
    with _forked_rng(torch.device(device)):  # the method sees the same random stream as without the guard
        fresh = task.build_model()
        stem, batch_samples = _probe(task, fresh, budget_epochs or 0.0)
    fresh_hooks = _hook_counts(fresh)
    snapshot = HarnessSnapshot.take(
        task=task, model=model, classes=classes,
        skip_modules=("prunebench.methods", type(method).__module__),
    )
    restore = snapshot.restore  # bound now: a patched class attribute cannot swap it
    counter = SampleCounter(model, stem)
    remove_counter = counter.remove
    try:
        info = method.compress(model, target, trainer)
    except BaseException as err:
        remove_counter()
        patched = restore()
        if patched:
            raise HarnessTampered(_patched_message(name, patched)) from err
        raise
    intact = remove_counter()
    patched = restore()
    if patched:
        raise HarnessTampered(_patched_message(name, patched))
    if not intact:
        raise VerificationError(
            f"{name} removed the harness's training-sample counter or replaced the module it sits on "
            f"({stem or 'the model'}); the budget cannot be checked"
        )
    seen = _summed_over_ranks(counter.samples)
    per_epoch = None
    if budget_epochs:
        try:
            per_epoch = task.steps_per_epoch()
        except ValueError:  # no training split: nothing can have been trained on it
            per_epoch = None
    batch = batch_samples or counter.largest_batch or None
    allowed = sample_budget(budget_epochs, per_epoch, batch)
    if seen > allowed:
        raise VerificationError(
            f"budget exceeded: {name} saw {seen} training samples, budget allows {int(allowed)} "
            f"({budget_epochs:g} epochs of {per_epoch} batches of {batch} samples, plus one batch)"
        )
    _check_trainer_count(trainer, seen, per_epoch, batch, name)
    clean = clean_copy(model, fresh, method=name, fresh_hooks=fresh_hooks, own_hooks=(counter._hook,))
    bad = nonfinite(clean)
    if bad:
        raise VerificationError(f"{name} left non-finite numbers in the model: {'; '.join(bad)}")
    return Guarded(model=clean, info=info or {}, train_samples_seen=seen, train_samples_allowed=allowed)


def _summed_over_ranks(n: int) -> int:
    """Under torchrun every rank trains on its share of each batch: the samples of all ranks."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return n
    counts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(counts, n)
    return int(sum(counts))


def _check_trainer_count(trainer: Any, seen: int, per_epoch: int | None, batch: int | None, name: str) -> None:
    """The trainer's epochs (what the record shows) must account for what the model saw."""
    if not seen or not per_epoch or not batch:
        return
    try:
        claimed = float(trainer.epochs_spent)
    except (TypeError, ValueError, AttributeError):
        raise VerificationError(f"{name} left the trainer's epochs_spent unreadable: {trainer.epochs_spent!r}") from None
    steps = math.ceil(max(claimed, 0.0) * per_epoch - 1e-6) if math.isfinite(claimed) else math.inf
    covered = (steps + 1) * batch
    if seen > covered:
        raise VerificationError(
            f"training not counted by the trainer: {name} showed the model {seen} training samples, "
            f"the trainer counted {claimed:g} epochs (at most {covered} samples); train only through "
            f"trainer.fit and leave its counters alone"
        )


def _patched_message(name: str, patched: list[str]) -> str:
    shown = ", ".join(dict.fromkeys(patched))
    return f"{name} patched the harness: {shown} (the run is refused; rebound and added names are put back)"

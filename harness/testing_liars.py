"""Lying methods: what the harness refuses, as runnable negative tests.

Each class here breaks one rule a method must keep and says it does not.
The harness must refuse every one of them (a VerificationError; in a suite
run, a record with status ``error``) with the message in :data:`LIARS`.
:class:`prunebench.testing.HarnessRefusesLiars` runs them on the conformance
kit's tiny task; ``tests/test_liars.py`` runs them through ``run_point``.

They work on any task whose layers are Conv2d / Linear; the one that
rewrites the test split needs a classification task holding its test split
as tensors (``_test_x``, ``_test_y``, ``_train_x``, ``_train_y`` or the same without ``_``).
"""

from __future__ import annotations

import copy
import math
import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .interfaces import Method
from .projections import magnitude_masks
from .quant import quantize_
from .trainer import KeepMasked

__all__ = ["Liar", "LIARS"]


def _prune(model, target) -> dict[str, torch.Tensor]:
    """Honest global magnitude pruning of target.layers to the rate; the masks."""
    modules = dict(model.named_modules())
    weights = {n: modules[n].weight.detach() for n in target.layers}
    masks = magnitude_masks(weights, "unstructured", target.keep_budget({n: w.numel() for n, w in weights.items()}))
    with torch.no_grad():
        for n, mask in masks.items():
            modules[n].weight.mul_(mask.to(modules[n].weight.dtype))
    return masks


def _excluded(model, target) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in target.layers]


class _Liar(Method):
    structures = ("unstructured",)


class TrainsOutsideTheTrainer(_Liar):
    """(a) Fine-tunes with an SGD loop of its own for four budgets; never calls trainer.fit."""

    def compress(self, model, target, trainer):
        masks = _prune(model, target)
        task = trainer.task
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        modules = dict(model.named_modules())
        model.train()
        for _ in range(max(1, math.ceil(4 * (trainer.budget_epochs or 1)))):
            for batch in task.train_batches(gen):
                opt.zero_grad()
                task.loss(model, batch).backward()
                opt.step()
                with torch.no_grad():
                    for n, mask in masks.items():
                        modules[n].weight.mul_(mask)
        return {"epochs_claimed": 0}


class ResetsTheTrainer(_Liar):
    """(b) Spends the budget, resets the trainer's counters, spends it again."""

    def compress(self, model, target, trainer):
        masks = _prune(model, target)
        for _ in range(2):
            trainer.fit(trainer.epochs_left, callbacks=[KeepMasked(masks)])
            trainer.epochs_spent, trainer.steps_taken = 0.0, 0
        return {}


class UnderReportsTraining(_Liar):
    """(b') Trains half the budget twice with a reset between: inside the budget,
    but the record would show half the training it did."""

    def compress(self, model, target, trainer):
        masks = _prune(model, target)
        half = trainer.steps_left // 2
        trainer.fit(steps=half, callbacks=[KeepMasked(masks)])
        trainer.epochs_spent, trainer.steps_taken = 0.0, 0
        trainer.fit(steps=half, callbacks=[KeepMasked(masks)])
        return {}


class TouchesExcludedLayers(_Liar):
    """(c) Prunes half of a layer it was told to leave alone and nudges every bias; no training."""

    def compress(self, model, target, trainer):
        _prune(model, target)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for n in _excluded(model, target)[:1]:
                w = modules[n].weight
                w.view(-1)[w.abs().flatten().argsort()[: w.numel() // 2]] = 0
            for m in model.modules():
                if isinstance(getattr(m, "bias", None), torch.Tensor):
                    m.bias.add_(0.01)
        return {}


class UnevenUniformLevels(_Liar):
    """(d) Says it quantizes to the uniform scheme; uses quantile (unevenly spaced) levels."""

    quantizes = True
    quantization_schemes = ("uniform",)

    def compress(self, model, target, trainer):
        _prune(model, target)
        bits = target.quantization.bits if target.quantization is not None else 4
        n = 2 ** (bits - 1) - 1
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name in target.layers:
                w = modules[name].weight
                kept = w[w != 0].abs()
                levels = torch.quantile(kept.float(), torch.linspace(0.1, 0.99, n)).to(w.dtype)
                nearest = levels[(w.abs().reshape(-1, 1) - levels).abs().argmin(dim=1)].reshape(w.shape)
                w.copy_(torch.where(w != 0, torch.sign(w) * nearest, torch.zeros_like(w)))
        return {}


class NaNAfterQuantizing(_Liar):
    """(e) Quantizes honestly, then leaves a NaN in the first target layer and an Inf in a bias."""

    quantizes = True
    quantization_schemes = ("uniform", "pow2", "ternary", "binary", "levels")

    def compress(self, model, target, trainer):
        _prune(model, target)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name in target.layers:
                if target.quantization is not None:
                    quantize_(modules[name].weight.data, target.quantization)
            first = modules[target.layers[0]].weight
            first.view(-1)[int(torch.nonzero(first.view(-1))[0])] = float("nan")
            last = modules[target.layers[-1]]
            if last.bias is not None:
                last.bias[0] = float("inf")
        return {}


@dataclass(frozen=True)
class _FakeCheck:
    total_weights: int = 1
    nonzero_weights: int = 0
    structured_nonzero_weights: int = 0
    achieved_rate: float = 1e9
    levels_per_layer: dict = None


class PatchesTheHarness(_Liar):
    """(f) Prunes nothing; replaces the harness's verify and the task's evaluate
    (on the class, so the patch would stay for every later run in the process)."""

    def compress(self, model, target, trainer):
        import prunebench.runner
        import prunebench.testing
        import prunebench.verify

        def fake_verify(model, target, **kwargs):
            return _FakeCheck(levels_per_layer={})

        def fake_evaluate(self, model):
            return {self.primary_metric: 100.0, "top5": 100.0}

        for module in (prunebench.runner, prunebench.verify, prunebench.testing):
            module.verify = fake_verify
        type(trainer.task).evaluate = fake_evaluate
        return {}


class ComputesThroughHooks(_Liar):
    """(g) Prunes .weight, computes each target layer with its dense weight in a forward hook."""

    def compress(self, model, target, trainer):
        modules = dict(model.named_modules())
        dense = {n: modules[n].weight.detach().clone() for n in target.layers}
        _prune(model, target)
        for n in target.layers:
            def hook(module, args, output, w=dense[n]):
                if isinstance(module, nn.Conv2d):
                    return module._conv_forward(args[0], w, module.bias)
                return F.linear(args[0], w, module.bias)

            modules[n].register_forward_hook(hook)
        return {}


class HidesDenseBuffers(_Liar):
    """(g) Keeps dense copies as non-persistent buffers (not in the state_dict)
    and a per-instance forward that uses them."""

    def compress(self, model, target, trainer):
        modules = dict(model.named_modules())
        for n in target.layers:
            modules[n].register_buffer("dense_weight", modules[n].weight.detach().clone(), persistent=False)
        _prune(model, target)
        for n in target.layers:
            m = modules[n]
            if isinstance(m, nn.Conv2d):
                m.forward = types.MethodType(lambda self, x: self._conv_forward(x, self.dense_weight, self.bias), m)
            else:
                m.forward = types.MethodType(lambda self, x: F.linear(x, self.dense_weight, self.bias), m)
        return {}


class ShadowSubmodule(_Liar):
    """(g) Adds a dense copy of each target layer as a submodule and a forward hook that uses it."""

    def compress(self, model, target, trainer):
        modules = dict(model.named_modules())
        for n in target.layers:
            modules[n].shadow = copy.deepcopy(modules[n])
        _prune(model, target)
        for n in target.layers:
            modules[n].register_forward_hook(lambda module, args, output: module.shadow(args[0]))
        return {}


class PatchesTorch(_Liar):
    """(g, f) Patches Conv2d / Linear forward (the class: a freshly built model
    inherits it) to compute with dense weights it looked up by shape."""

    def compress(self, model, target, trainer):
        modules = dict(model.named_modules())
        dense = {tuple(modules[n].weight.shape): modules[n].weight.detach().clone() for n in target.layers}
        _prune(model, target)
        conv_forward, linear_forward = nn.Conv2d.forward, nn.Linear.forward

        def conv(self, x):
            w = dense.get(tuple(self.weight.shape))
            return conv_forward(self, x) if w is None else self._conv_forward(x, w, self.bias)

        def linear(self, x):
            w = dense.get(tuple(self.weight.shape))
            return linear_forward(self, x) if w is None else F.linear(x, w, self.bias)

        nn.Conv2d.forward, nn.Linear.forward = conv, linear
        return {}


class GlobalForwardHook(_Liar):
    """(g) A torch-wide forward hook (it would reach a freshly built model too)
    that recomputes every Conv2d / Linear with dense weights looked up by shape."""

    def compress(self, model, target, trainer):
        modules = dict(model.named_modules())
        dense = {tuple(modules[n].weight.shape): modules[n].weight.detach().clone() for n in target.layers}
        _prune(model, target)

        def hook(module, args, output):
            w = dense.get(tuple(getattr(module, "weight", torch.empty(0)).shape))
            if w is None:
                return None
            if isinstance(module, nn.Conv2d):
                return module._conv_forward(args[0], w, module.bias)
            if isinstance(module, nn.Linear):
                return F.linear(args[0], w, module.bias)
            return None

        nn.modules.module.register_module_forward_hook(hook)
        return {}


class RewritesTheTestSet(_Liar):
    """Prunes honestly, then overwrites the task's test split in place with training
    samples and their labels (data it has fit): the harness would score it on those."""

    def compress(self, model, target, trainer):
        _prune(model, target)
        task = trainer.task
        for prefix in ("_", ""):
            split = [getattr(task, f"{prefix}{a}", None) for a in ("test_x", "test_y", "train_x", "train_y")]
            if all(isinstance(t, torch.Tensor) for t in split):
                test_x, test_y, train_x, train_y = split
                k = min(test_x.shape[0], train_x.shape[0])
                with torch.no_grad():
                    test_x[:k].copy_(train_x[:k])
                    test_y[:k].copy_(train_y[:k])
                break
        return {}


class UnderPrunes(_Liar):
    """Prunes half of what the rate needs and says it met it (the plain liar)."""

    def compress(self, model, target, trainer):
        modules = dict(model.named_modules())
        with torch.no_grad():
            for n in target.layers:
                w = modules[n].weight
                k = int(w.numel() * (1 - 1 / target.rate) / 2)
                w.view(-1)[w.abs().flatten().argsort()[:k]] = 0
        return {"claimed_rate": target.rate}


@dataclass(frozen=True)
class Liar:
    """One lying method: the rule it breaks and what the harness must say (a regex)."""

    method: type
    case: str
    expect: str


#: entry-point name -> Liar; the ``expect`` regexes match the harness's refusal
LIARS: dict[str, Liar] = {
    "liar_own_loop": Liar(TrainsOutsideTheTrainer, "a: trains beyond the budget outside trainer.fit",
                          r"budget exceeded: liar_own_loop saw \d+ training samples, budget allows \d+"),
    "liar_resets_trainer": Liar(ResetsTheTrainer, "b: resets the trainer's counters and trains twice",
                                r"budget exceeded: liar_resets_trainer saw \d+ training samples, budget allows \d+"),
    "liar_under_reports": Liar(UnderReportsTraining, "b: resets the trainer between two half-budget fits",
                               r"training not counted by the trainer"),
    "liar_excluded": Liar(TouchesExcludedLayers, "c: zeroes half an excluded layer, perturbs biases",
                          r"(?s)excluded layer \w+: \d+ weights zeroed that were nonzero in the dense model"
                          r".*changed without training: .*bias"),
    "liar_uneven_levels": Liar(UnevenUniformLevels, "d: unevenly spaced levels under the uniform scheme",
                               r"not multiples of one step"),
    "liar_nan": Liar(NaNAfterQuantizing, "e: NaN / Inf after its own quantization",
                     r"NaN in \w+\.weight.*Inf in \w+\.bias"),
    "liar_patches_harness": Liar(PatchesTheHarness, "f: monkeypatches verify and the task's evaluate",
                                 r"liar_patches_harness patched the harness: (?=.*prunebench\.verify\.verify)"
                                 r"(?=.*prunebench\.runner\.verify)(?=.*Task\.evaluate)"),
    "liar_hooks": Liar(ComputesThroughHooks, "g: computes through forward hooks",
                       r"forward hooks on "),
    "liar_hidden_buffers": Liar(HidesDenseBuffers, "g: dense copies in non-persistent buffers",
                                r"extra buffers: \w+\.dense_weight"),
    "liar_shadow_module": Liar(ShadowSubmodule, "g: dense copies as extra submodules",
                               r"extra modules: \w+\.shadow"),
    "liar_patches_torch": Liar(PatchesTorch, "g: patches Conv2d / Linear forward for every model",
                               r"patched the harness: torch\.nn\.modules\.\w+\.\w+\.forward"),
    "liar_global_hook": Liar(GlobalForwardHook, "g: a torch-wide forward hook with dense weights",
                             r"patched the harness: torch global module hook _global_forward_hooks"),
    "liar_test_set": Liar(RewritesTheTestSet, "overwrites the task's test split in place",
                          r"patched the harness: .*\w+ attribute _?test_x \(changed in place\)"),
    "liar_under_prunes": Liar(UnderPrunes, "says it met the rate, prunes half of it",
                              r"sparsity: target rate"),
}

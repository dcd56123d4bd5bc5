"""Conformance kit for method plugins.

Subclass ``MethodConformance`` in your own test file, naming your method::

    from prunebench.testing import MethodConformance

    class TestMyMethod(MethodConformance):
        method = "my_method"          # the entry-point name
        config = None                 # or an instance of your method's Config

pytest then checks, on a tiny CNN (3x3 convolutions, synthetic data, seconds
on a CPU), that the method

- meets its target for every structure it declares (``Method.structures``)
  and, if it quantizes, every scheme it declares (``Method.quantization_schemes``),
  as the harness verifies it (sparsity, structure, levels);
- stays inside the epoch budget;
- is deterministic under a seed;
- leaves layers that are not in ``target.layers`` uncompressed (no new zeros,
  not quantized).

The method runs under the harness's guard, as in a suite run
(:func:`prunebench.guard.guarded_compress`): its model's state is moved into
a freshly built model, and hooks, extra tensors, patches of the harness and
training beyond the budget or outside ``trainer.fit`` are refused.

Class attributes tune the checks (``rate``, ``budget_epochs``, ``bits``).

``HarnessRefusesLiars`` is the kit's negative side: subclass it (no
attributes needed) to see every lying method of
:data:`prunebench.testing_liars.LIARS` refused, each with its message.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import registry
from .guard import Guarded, HarnessTampered, guarded_compress
from .interfaces import Method, NoConfig, Task
from .projections import nm_slots
from .quant import quantize_
from .target import Quantization, Structure, Target
from .testing_liars import LIARS
from .trainer import OptimizerConfig, Trainer
from .verify import VerificationError, verify

__all__ = ["MethodConformance", "HarnessRefusesLiars", "TinyTask", "SPELLINGS", "SCHEMES", "LIARS",
           "tiny_dense", "compress_tiny"]

#: a concrete suite spelling for every structure kind
SPELLINGS = {
    "unstructured": "unstructured",
    "filter": "filter",
    "channel": "channel",
    "column": "column",
    "kernel": "kernel",
    "pattern": "pattern",
    "block": "block:4x4",
    "pe": "pe:4",
    "nm": "2:4",
}
#: a concrete quantization for every scheme
SCHEMES = {
    "uniform": Quantization(4, "uniform"),
    "pow2": Quantization(4, "pow2"),
    "ternary": Quantization(2, "ternary"),
    "binary": Quantization(1, "binary"),
    "levels": Quantization(3, "levels", levels=(-0.1, -0.05, -0.02, 0.02, 0.05, 0.1)),
}


class _TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 6 * 6, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        # adaptive: the same as a 2x2 max-pool at 12x12, and any smaller input still fits fc1
        x = F.adaptive_max_pool2d(F.relu(self.conv2(x)), 6)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class TinyTask(Task):
    """10-class synthetic images (1x12x12): class patterns plus noise; 512 train, 256 test.

    ``input_scaled(scale)`` resizes every image to round(12 x scale) per side
    (bilinear, antialiased) inside the block, for MACs targets met by input
    scaling (:mod:`prunebench.macs`)."""

    Config = NoConfig
    primary_metric = "top1"
    batch_size = 64
    side = 12

    @contextlib.contextmanager
    def input_scaled(self, scale: float):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
            raise ValueError(f"input_scaled: expected a scale in (0, 1], got {scale!r}")
        previous = getattr(self, "_scale", 1.0)
        self._scale = float(scale)
        try:
            yield
        finally:
            self._scale = previous

    def _sized(self, x: torch.Tensor) -> torch.Tensor:
        scale = getattr(self, "_scale", 1.0)
        if scale == 1.0:
            return x
        side = max(1, round(self.side * scale))
        return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)

    def prepare(self) -> None:
        gen = torch.Generator().manual_seed(0)
        patterns = torch.rand(10, 1, 12, 12, generator=gen)

        def split(n, seed):
            g = torch.Generator().manual_seed(seed)
            y = torch.arange(n) % 10
            return (patterns[y] + 0.3 * torch.randn(n, 1, 12, 12, generator=g)).to(self.device), y.to(self.device)

        self.train_x, self.train_y = split(512, 1)
        self.test_x, self.test_y = split(256, 2)

    def build_model(self) -> nn.Module:
        return _TinyNet().to(self.device)

    def steps_per_epoch(self) -> int:
        return math.ceil(self.train_x.shape[0] / self.batch_size)

    def train_batches(self, generator: torch.Generator) -> Iterator[Any]:
        order = torch.randperm(self.train_x.shape[0], generator=generator).to(self.device)
        for i in range(0, order.numel(), self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self._sized(self.train_x[idx]), self.train_y[idx]

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        was = model.training
        model.eval()
        acc = (model(self._sized(self.test_x)).argmax(1) == self.test_y).float().mean().item() * 100
        model.train(was)
        return {"top1": acc}

    def example_input(self) -> torch.Tensor:
        return self._sized(torch.zeros(1, 1, self.side, self.side, device=self.device))


_TINY: dict = {}


def tiny_dense() -> tuple[TinyTask, dict]:
    """The prepared tiny task and its trained dense state (trained once per process)."""
    if "task" not in _TINY:
        task = TinyTask()
        task.prepare()
        torch.manual_seed(0)
        model = task.build_model()
        Trainer(task, model, optimizer=OptimizerConfig(lr=0.05), progress=False).fit(15)
        _TINY["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        _TINY["task"] = task
    return _TINY["task"], _TINY["state"]


def compress_tiny(
    method: Method, *, name: str, structure: str = "unstructured", scheme: str | None = None, seed: int = 0,
    rate: float = 4.0, budget_epochs: float = 2.0, bits: int = 4,
    layers: tuple[str, ...] = ("conv1", "conv2", "fc1"), rate_of: str = "weights",
) -> tuple[nn.Module, Target, Trainer, Guarded]:
    """Compress the tiny dense model as the harness does: the method under the
    guard, then the suite's quantizer for a prune-only method.  Returns the
    clean model, the target to verify it against, the trainer and the guard's
    result (``trained``, ``train_samples_seen``, ``info``)."""
    task, state = tiny_dense()
    torch.manual_seed(seed)
    model = task.build_model()
    model.load_state_dict(state)
    st = Structure.parse(structure)
    if st.kind == "nm":  # N:M fixes the rate: what the format stores for these layers
        shapes = {n: m.weight.shape for n, m in model.named_modules() if n in layers}
        total = sum(math.prod(s) for s in shapes.values())
        rate = total / sum(nm_slots(s, *st.params) for s in shapes.values())
    quant = SCHEMES[scheme] if scheme else Quantization(bits)
    quantizes = bool(method.quantizes)
    target = Target(layers=layers, structure=st, rate=rate, quantization=quant if quantizes else None,
                    rate_of=rate_of)
    trainer = Trainer(task, model, optimizer=OptimizerConfig(lr=0.01), budget_epochs=budget_epochs,
                      seed=seed, progress=False)
    try:
        guarded = guarded_compress(method, model, target, trainer, task, budget_epochs=budget_epochs, name=name)
    except HarnessTampered:
        task.prepare()  # the method may have changed the task's data in place
        raise
    model = guarded.model
    if not quantizes:
        modules = dict(model.named_modules())
        for layer in layers:
            quantize_(modules[layer].weight.data, quant)
    checked = Target(layers=target.layers, structure=st, rate=rate, quantization=quant, rate_of=rate_of)
    return model, checked, trainer, guarded


class MethodConformance:
    """Base test class: set ``method`` (entry-point name) or ``method_class``."""

    method: ClassVar[str | None] = None
    method_class: ClassVar[type[Method] | None] = None
    config: ClassVar[Any] = None
    rate: ClassVar[float] = 4.0
    budget_epochs: ClassVar[float] = 2.0
    #: bits of the standard quantizer applied on top of a prune-only method
    bits: ClassVar[int] = 4
    #: compressible layers; fc2 stays out and must stay uncompressed
    layers: ClassVar[tuple[str, ...]] = ("conv1", "conv2", "fc1")
    #: what ``rate`` is of (``weights`` or ``macs``); None: the first the method declares
    #: (``rates_of``), so a method that meets only MACs targets is checked on one
    rate_of: ClassVar[str | None] = None

    _dense_cache: ClassVar[dict] = {}

    # ------------------------------------------------------------ plumbing
    @classmethod
    def _method_cls(cls) -> type[Method]:
        if cls.method_class is not None:
            return cls.method_class
        if cls.method is None:
            raise TypeError(f"{cls.__name__}: set `method` (entry-point name) or `method_class`")
        return registry.methods.get(cls.method)

    def _make(self) -> Method:
        return self._method_cls()(self.config)

    @classmethod
    def _rate_of(cls) -> str:
        from .macs import rates_of

        return cls.rate_of or rates_of(cls._method_cls())[0]

    @classmethod
    def _task(cls) -> TinyTask:
        task, state = tiny_dense()
        cls._dense_cache["task"], cls._dense_cache["state"] = task, state
        return task

    @classmethod
    def _name(cls) -> str:
        return cls.method or cls._method_cls().__name__

    def _cases(self) -> list[tuple[str, str | None]]:
        method = self._make()
        structures = [SPELLINGS[k] for k in self._method_cls().structures]
        schemes = list(getattr(method, "quantization_schemes", ("uniform",))) if method.quantizes else [None]
        return [(s, q) for s in structures for q in schemes]

    def pytest_generate_tests(self, metafunc):
        if "case" in metafunc.fixturenames:
            cases = self._cases()
            metafunc.parametrize("case", cases, ids=[f"{s}-{q or 'standard-quantizer'}" for s, q in cases])

    _runs: ClassVar[dict] = {}

    def run_method(self, structure: str, scheme: str | None, seed: int = 0, *, fresh: bool = False):
        """Compress the tiny dense model as the harness would; returns (model, target, trainer, info).

        Runs are shared between the checks of one case (``fresh`` forces a new run)."""
        return self._guarded_run(structure, scheme, seed, fresh=fresh)[:4]

    def _guarded_run(self, structure: str, scheme: str | None, seed: int = 0, *, fresh: bool = False):
        key = (type(self).__name__, structure, scheme, seed)
        if fresh or key not in self._runs:
            self._runs[key] = self._run(structure, scheme, seed)
        return self._runs[key]

    def _run(self, structure: str, scheme: str | None, seed: int):
        self._task()
        model, checked, trainer, guarded = compress_tiny(
            self._make(), name=self._name(), structure=structure, scheme=scheme, seed=seed, rate=self.rate,
            budget_epochs=self.budget_epochs, bits=self.bits, layers=self.layers, rate_of=self._rate_of(),
        )
        return model, checked, trainer, guarded.info, guarded

    # --------------------------------------------------------------- checks
    def test_declares_what_it_does(self):
        cls = self._method_cls()
        assert cls.structures, "a method must declare at least one structure"
        unknown = [k for k in cls.structures if k not in SPELLINGS]
        assert not unknown, f"unknown structure kinds declared: {unknown}"
        method = self._make()
        if method.quantizes:
            schemes = getattr(method, "quantization_schemes", ("uniform",))
            assert all(s in SCHEMES for s in schemes), f"unknown quantization schemes declared: {schemes}"

    def test_meets_target(self, case):
        structure, scheme = case
        model, target, _, info, guarded = self._guarded_run(structure, scheme)
        verify(model, target, method=self._name(), dense=self._dense_cache["state"], trained=guarded.trained)
        if target.rate_of == "macs":  # counted by the harness, at the input scale the method declares
            from .macs import declared_input_scale, verify_macs

            verify_macs(model, self._task(), target.rate, input_scale=declared_input_scale(info, self._name()),
                        method=self._name())

    def test_stays_inside_budget(self, case):
        structure, scheme = case
        _, _, trainer, _, guarded = self._guarded_run(structure, scheme)
        assert trainer.epochs_spent <= self.budget_epochs + 1e-9
        assert guarded.train_samples_seen <= guarded.train_samples_allowed

    def test_deterministic_under_a_seed(self, case):
        structure, scheme = case
        a = self.run_method(structure, scheme)[0]
        b = self.run_method(structure, scheme, fresh=True)[0]
        for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
            assert torch.equal(pa, pb), f"parameter {name} differs between two runs with the same seed"

    def test_unlisted_layers_stay_uncompressed(self, case):
        structure, scheme = case
        model, _, _, _ = self.run_method(structure, scheme)
        dense_w = self._dense_cache["state"]["fc2.weight"]
        w = model.fc2.weight.detach()
        assert int((w == 0).sum()) <= int((dense_w == 0).sum()), "fc2 is not in target.layers but was pruned"
        assert torch.unique(w).numel() > 2**8, "fc2 is not in target.layers but was quantized"



class HarnessRefusesLiars:
    """Negative tests of the harness: every lying method is refused, with its message.

    Subclass it in a test file; it runs each liar of
    :data:`prunebench.testing_liars.LIARS` on the tiny task as the harness
    would (guard, quantizer, verify) and expects a VerificationError whose
    message matches the liar's ``expect``; an honest method (``honest``)
    must pass the same path.
    """

    honest: ClassVar[tuple[str, ...]] = ("magnitude",)
    rate: ClassVar[float] = 4.0
    budget_epochs: ClassVar[float] = 1.0
    layers: ClassVar[tuple[str, ...]] = ("conv1", "conv2", "fc1")

    def pytest_generate_tests(self, metafunc):
        if "liar" in metafunc.fixturenames:
            metafunc.parametrize("liar", list(LIARS), ids=list(LIARS))
        if "honest_method" in metafunc.fixturenames:
            metafunc.parametrize("honest_method", list(self.honest), ids=list(self.honest))

    def _check(self, method: Method, name: str):
        model, target, _, guarded = compress_tiny(
            method, name=name, rate=self.rate, budget_epochs=self.budget_epochs, layers=self.layers
        )
        return verify(model, target, method=name, dense=tiny_dense()[1], trained=guarded.trained)

    def test_liar_is_refused(self, liar):
        import pytest

        spec = LIARS[liar]
        with pytest.raises(VerificationError, match=spec.expect):
            self._check(spec.method(), liar)

    def test_honest_method_passes(self, honest_method):
        check = self._check(registry.methods.get(honest_method)(), honest_method)
        assert check.achieved_rate >= self.rate

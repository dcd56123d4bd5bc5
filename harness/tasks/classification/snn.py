"""Spiking networks for the classification task: LIF neurons, surrogate
gradients, input encodings, and a quantizable membrane potential.

A spiking model here is an ordinary ``nn.Module`` whose forward takes a batch
of images (or binned event frames) and returns class logits averaged over
``time_steps``, so the classification task, the trainer, every method and
the metrics work on it unchanged.  The compressible layers are its Conv2d and
Linear synapses, as for any other model; the neurons are :class:`LIF`
modules between them.

Spike function and rate encoding come from snnTorch
(``snntorch.surrogate.atan`` / ``fast_sigmoid``, ``snntorch.spikegen.rate``;
Eshraghian et al., arXiv 2109.12894); the neuron itself is written here
because its membrane state must be quantizable through tensors the harness
carries in the ``state_dict`` (a freshly built model loaded with the method's
``state_dict`` is what the harness evaluates).

Neuron (discrete-time LIF, reset by subtraction), per time step t::

    U[t] = beta * U[t-1] + I[t]
    S[t] = H(U[t] - theta)          (surrogate gradient in the backward pass)
    U[t] <- U[t] - S[t] * theta
    U[t] <- Q(U[t])                 (the stored state; identity when unquantized)

``Q`` is a uniform quantizer held in buffers of each LIF: ``mem_bits`` (0 =
fp32, not quantized), ``mem_scale`` (level spacing) and ``mem_offset``
(levels are ``offset + k * scale`` for integer k in [-2^(b-1), 2^(b-1) - 1];
offset 0 gives integer membrane codes, offset = theta gives levels centred
on the threshold).  The threshold ``theta`` is a parameter created with
``requires_grad=False``; a method that learns it switches that on.

Encodings (``encoding``): ``direct`` feeds the analog image to the first
layer, computed once and presented at every step; ``rate`` draws Bernoulli
spikes with the pixel intensity as probability at every step; ``events``
takes binned event frames stacked as channels, [N, T*P, H, W] (P polarities),
as the event loader (:mod:`.events`) writes them (the ``events`` task,
:mod:`.event_task`, builds models that way).  The first synapse is
called exactly once per forward (on the [T*N, ...] batch for rate / events),
so the harness's sample counter sees one batch of N (direct) or T*N.

Recording.  In eval mode (no grad) the model records, per LIF, the spikes,
the neuron-steps, the distinct stored membrane values (capped at
``LEVEL_CAP``) and, per synapse, the nonzero fraction of its input.  A
recording session runs from one ``eval()`` to the next ``train()``/``eval()``;
:meth:`SpikingNet.snn_stats` returns the session that saw the most samples,
so a one-sample shape probe after the evaluation does not replace it.
Records are plain attributes, never buffers: they are not part of the
``state_dict`` and a method cannot plant them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LEVEL_CAP",
    "LIF",
    "SNN_MODELS",
    "LayerActivity",
    "SNNStats",
    "SpikingNet",
    "lif_modules",
    "membrane_levels_problems",
    "quantize_membrane",
    "snn_convnet",
    "snn_lenet5",
    "snn_test",
]

Encoding = Literal["direct", "rate", "events"]
#: distinct membrane values tracked per layer; beyond this a layer counts as unquantized
LEVEL_CAP = 4096


def _surrogate(name: str, slope: float):
    try:
        from snntorch import surrogate
    except ImportError as err:  # pragma: no cover - the snn extra installs it
        from ...interfaces import DependencyUnavailable

        raise DependencyUnavailable("snntorch", f"not importable ({err})", "pip install 'prunebench[snn]'") from None
    if name == "atan":
        return surrogate.atan(alpha=slope)
    if name == "fast_sigmoid":
        return surrogate.fast_sigmoid(slope=slope)
    raise ValueError(f"unknown surrogate {name!r}; expected 'atan' or 'fast_sigmoid'")


# ------------------------------------------------------------ quantizer


class _RoundSTE(torch.autograd.Function):
    """round() with the straight-through gradient inside [lo, hi], zero outside."""

    @staticmethod
    def forward(ctx, x, lo: float, hi: float):
        ctx.save_for_backward(x)
        ctx.bounds = (lo, hi)
        return torch.round(x).clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        inside = (x >= lo - 0.5) & (x <= hi + 0.5)
        return grad * inside.to(grad.dtype), None, None


class _RoundStacked(torch.autograd.Function):
    """round() whose gradient is a stack of sigmoid-derivative surrogates, one
    per quantization step (the staircase is a sum of shifted Heavisides; each
    gets a smooth surrogate).  ``alpha`` is the sigmoid slope in code units."""

    @staticmethod
    def forward(ctx, x, lo: float, hi: float, alpha: float):
        ctx.save_for_backward(x)
        ctx.args = (lo, hi, alpha)
        return torch.round(x).clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        lo, hi, alpha = ctx.args
        # the staircase's steps sit at k + 0.5 for k in [lo, hi - 1]; only the
        # few nearest steps contribute, so sum over the two around each x
        k = torch.floor(x - 0.5).clamp(lo, hi - 1)
        total = torch.zeros_like(x)
        for shift in (-1.0, 0.0, 1.0):
            step = (k + shift).clamp(lo, hi - 1) + 0.5
            valid = ((k + shift) >= lo) & ((k + shift) <= hi - 1)
            sig = torch.sigmoid(alpha * (x - step))
            total = total + valid.to(x.dtype) * alpha * sig * (1 - sig)
        return grad * total, None, None, None


def quantize_membrane(mem: torch.Tensor, bits: int, scale: float, offset: float = 0.0, *,
                      grad: str = "ste", alpha: float = 4.0) -> torch.Tensor:
    """``offset + clamp(round((mem - offset) / scale), -2^(b-1), 2^(b-1) - 1) * scale``."""
    if bits <= 0 or scale <= 0:
        return mem
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if bits == 1:
        lo, hi = 0, 1  # 1 bit: two levels, offset and offset + scale
    x = (mem - offset) / scale
    q = _RoundStacked.apply(x, lo, hi, alpha) if grad == "stacked" else _RoundSTE.apply(x, lo, hi)
    return offset + q * scale


# --------------------------------------------------------------- neuron


class LIF(nn.Module):
    """Leaky integrate-and-fire neuron (one time step per call)."""

    def __init__(self, beta: float = 0.9, threshold: float = 1.0, surrogate: str = "atan", slope: float = 2.0):
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta!r}")
        self.beta = float(beta)
        self.threshold = nn.Parameter(torch.tensor(float(threshold)), requires_grad=False)
        self.register_buffer("mem_bits", torch.tensor(0, dtype=torch.long))
        self.register_buffer("mem_scale", torch.tensor(0.0))
        self.register_buffer("mem_offset", torch.tensor(0.0))
        _surrogate(surrogate, slope)  # fail early on an unknown name or a missing snntorch
        self.surrogate = surrogate
        self.slope = float(slope)
        #: gradient of the membrane quantizer in training: "ste" or "stacked"
        self.quant_grad = "ste"
        self.quant_alpha = 4.0

    @property
    def quantized(self) -> bool:
        return int(self.mem_bits) > 0 and float(self.mem_scale) > 0

    def theta(self) -> torch.Tensor:
        return self.threshold.clamp(min=1e-3)

    def forward(self, current: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = self.theta()
        mem = self.beta * mem + current
        spk = _surrogate(self.surrogate, self.slope)(mem - theta)
        mem = mem - spk * theta
        if self.quantized:
            mem = quantize_membrane(mem, int(self.mem_bits), float(self.mem_scale), float(self.mem_offset),
                                    grad=self.quant_grad, alpha=self.quant_alpha)
        return spk, mem

    def extra_repr(self) -> str:
        return f"beta={self.beta}, mem_bits={int(self.mem_bits)}"


def lif_modules(model: nn.Module) -> dict[str, LIF]:
    """Every LIF of ``model`` by module name (empty for a non-spiking model)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LIF)}


# ------------------------------------------------------------ recording


@dataclass
class LayerActivity:
    """What one LIF did during a recording session."""

    spikes: float = 0.0
    neuron_steps: float = 0.0
    #: neurons of the layer per sample (state held per sample)
    neurons: int = 0
    #: distinct stored membrane values seen; None once more than LEVEL_CAP
    levels: set | None = field(default_factory=set)
    bits: int = 0

    @property
    def spike_rate(self) -> float | None:
        return None if self.neuron_steps == 0 else self.spikes / self.neuron_steps

    @property
    def level_count(self) -> int | None:
        return None if self.levels is None else len(self.levels)


@dataclass
class SNNStats:
    """One recording session: samples seen, per-LIF activity, per-synapse input density."""

    time_steps: int
    encoding: str
    samples: int = 0
    neurons: dict[str, LayerActivity] = field(default_factory=dict)
    #: synapse name -> [nonzero inputs, input elements] summed over steps and samples
    synapse_inputs: dict[str, list[float]] = field(default_factory=dict)
    #: synapse name -> how many times it ran per sample (1 for a direct-encoded first layer)
    synapse_calls: dict[str, int] = field(default_factory=dict)
    #: synapses whose input is spikes (binary): their work is accumulates
    spiking_inputs: dict[str, bool] = field(default_factory=dict)

    def input_rate(self, name: str) -> float | None:
        nz, total = self.synapse_inputs.get(name, (0.0, 0.0))
        return None if total == 0 else nz / total


def _record_levels(act: LayerActivity, mem: torch.Tensor, lif: LIF) -> None:
    if act.levels is None:
        return
    if lif.quantized:
        scale, offset = float(lif.mem_scale), float(lif.mem_offset)
        codes = torch.round((mem - offset) / scale)
        off_grid = (mem - (offset + codes * scale)).abs().max() > 1e-4 * max(1.0, abs(scale))
        if not bool(off_grid):
            c = codes.long().flatten()
            lo = int(c.min())
            span = int(c.max()) - lo + 1
            if span <= LEVEL_CAP:
                present = torch.nonzero(torch.bincount(c - lo, minlength=span)).flatten() + lo
                act.levels.update(int(v) for v in present.tolist())
                if len(act.levels) > LEVEL_CAP:
                    act.levels = None
                return
        act.levels = None
        return
    values = torch.unique(mem)
    if values.numel() + len(act.levels) > LEVEL_CAP:
        act.levels = None
        return
    act.levels.update(float(v) for v in values.tolist())
    if len(act.levels) > LEVEL_CAP:
        act.levels = None


def membrane_levels_problems(stats: SNNStats | None, bits: int) -> list[str]:
    """Ways the recorded membrane states exceed ``2^bits`` levels ("lif1: ...");
    empty when every layer held at most 2^bits distinct values."""
    if stats is None:
        return ["no membrane state recorded (run the model in eval mode on data first)"]
    problems = []
    allowed = 2**bits
    for name, act in stats.neurons.items():
        if act.levels is None:
            problems.append(f"{name}: more than {LEVEL_CAP} distinct membrane values (not quantized, or off its "
                            f"grid); {bits}-bit membrane allows {allowed}")
        elif len(act.levels) > allowed:
            problems.append(f"{name}: {len(act.levels)} distinct membrane values; {bits}-bit membrane allows {allowed}")
    return problems


# ---------------------------------------------------------------- models


class SpikingNet(nn.Module):
    """Convolutional SNN: ``convs`` (out channels, kernel, padding) each followed
    by LIF and 2x2 max pooling (max keeps spikes binary), an adaptive max pool
    to ``grid``, then ``hidden`` linear + LIF layers and a linear readout whose
    output (membrane-free, no spike) is averaged over time into the logits."""

    def __init__(self, convs: tuple[tuple[int, int, int], ...], hidden: tuple[int, ...], *, num_classes: int = 10,
                 in_chans: int = 1, time_steps: int = 4, encoding: Encoding = "direct", beta: float = 0.9,
                 threshold: float = 1.0, surrogate: str = "atan", slope: float = 2.0, grid: int = 4):
        super().__init__()
        if time_steps < 1:
            raise ValueError(f"time_steps must be >= 1, got {time_steps!r}")
        if encoding not in ("direct", "rate", "events"):
            raise ValueError(f"encoding must be 'direct', 'rate' or 'events', got {encoding!r}")
        if encoding == "events":
            if in_chans % time_steps:
                raise ValueError(f"events encoding: {in_chans} input channels are not time_steps={time_steps} frames")
            in_chans //= time_steps
        self.time_steps = int(time_steps)
        self.encoding = encoding
        self.grid = int(grid)
        self._synapses: list[str] = []
        self._lifs: list[str] = []
        c = in_chans
        for i, (out, k, pad) in enumerate(convs, start=1):
            self.add_module(f"conv{i}", nn.Conv2d(c, out, k, padding=pad))
            self.add_module(f"lif{i}", LIF(beta, threshold, surrogate, slope))
            self._synapses.append(f"conv{i}")
            self._lifs.append(f"lif{i}")
            c = out
        features = c * self.grid * self.grid
        n_conv = len(convs)
        for j, h in enumerate(hidden, start=1):
            self.add_module(f"fc{j}", nn.Linear(features, h))
            self.add_module(f"lif{n_conv + j}", LIF(beta, threshold, surrogate, slope))
            self._synapses.append(f"fc{j}")
            self._lifs.append(f"lif{n_conv + j}")
            features = h
        self.add_module(f"fc{len(hidden) + 1}", nn.Linear(features, num_classes))
        self._synapses.append(f"fc{len(hidden) + 1}")
        self._n_conv = n_conv
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):  # He init: currents large enough to reach the threshold
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self._stats: SNNStats | None = None
        self._best: SNNStats | None = None

    # -------------------------------------------------------- recording
    def train(self, mode: bool = True):
        self._close_session()
        return super().train(mode)

    def _close_session(self) -> None:
        cur = self._stats
        if cur is not None and cur.samples > 0 and (self._best is None or cur.samples >= self._best.samples):
            self._best = cur
        self._stats = None

    def snn_stats(self) -> SNNStats | None:
        """The recording session (eval forwards between two mode switches) that saw the most samples."""
        cur, best = self._stats, self._best
        if cur is not None and cur.samples > 0 and (best is None or cur.samples >= best.samples):
            return cur
        return best

    def _recording(self) -> bool:
        return not self.training and not torch.is_grad_enabled()

    def _session(self) -> SNNStats:
        if self._stats is None:
            self._stats = SNNStats(self.time_steps, self.encoding)
        return self._stats

    # ---------------------------------------------------------- forward
    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """First-layer input: [N, ...] (direct) or [T*N, ...] (rate, events)."""
        T = self.time_steps
        if self.encoding == "direct":
            return x, False
        if self.encoding == "rate":
            from snntorch import spikegen

            spikes = spikegen.rate(x.clamp(0, 1), num_steps=T)  # [T, N, C, H, W]
            return spikes.flatten(0, 1), True
        n, c = x.shape[:2]
        frames = x.view(n, T, c // T, *x.shape[2:]).transpose(0, 1)  # [T, N, P, H, W]
        return frames.flatten(0, 1).contiguous(), True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = self.time_steps
        n = x.shape[0]
        rec = self._session() if self._recording() else None
        inp, spiking = self._encode(x)
        first = getattr(self, self._synapses[0])
        current0 = first(inp)  # one call: [N, ...] or [T*N, ...]
        if rec is not None:
            rec.samples += n
            self._note_input(rec, self._synapses[0], inp, spiking, calls=T if spiking else 1)
        mems: list[torch.Tensor | float] = [0.0] * len(self._lifs)
        out_sum = None
        for t in range(T):
            cur = current0 if current0.shape[0] == n else current0[t * n:(t + 1) * n]
            h = None
            for i, lif_name in enumerate(self._lifs):
                if i > 0:
                    syn = self._synapses[i]
                    inp_i = h if i != self._n_conv else h.flatten(1)
                    if rec is not None and t == 0:
                        rec.synapse_calls[syn] = T
                        rec.spiking_inputs[syn] = True
                    if rec is not None:
                        self._note_input(rec, syn, inp_i, True, calls=None)
                    cur = getattr(self, syn)(inp_i)
                lif = getattr(self, lif_name)
                spk, mems[i] = lif(cur, mems[i])
                if rec is not None:
                    self._note_neurons(rec, lif_name, lif, spk, mems[i], n)
                h = spk
                if i < self._n_conv:
                    h = F.max_pool2d(h, 2)
                    if i == self._n_conv - 1:
                        h = F.adaptive_max_pool2d(h, self.grid)
            readout = self._synapses[-1]
            inp_r = h if self._n_conv < len(self._lifs) or self._n_conv == 0 else h.flatten(1)
            if rec is not None:
                if t == 0:
                    rec.synapse_calls[readout] = T
                    rec.spiking_inputs[readout] = True
                self._note_input(rec, readout, inp_r, True, calls=None)
            logits = getattr(self, readout)(inp_r)
            out_sum = logits if out_sum is None else out_sum + logits
        return out_sum / T

    @staticmethod
    def _note_input(rec: SNNStats, name: str, inp: torch.Tensor, spiking: bool, calls: int | None) -> None:
        acc = rec.synapse_inputs.setdefault(name, [0.0, 0.0])
        acc[0] += float(torch.count_nonzero(inp))
        acc[1] += float(inp.numel())
        if calls is not None:
            rec.synapse_calls[name] = calls
            rec.spiking_inputs[name] = spiking

    @staticmethod
    def _note_neurons(rec: SNNStats, name: str, lif: LIF, spk: torch.Tensor, mem: torch.Tensor, n: int) -> None:
        act = rec.neurons.get(name)
        if act is None:
            act = rec.neurons[name] = LayerActivity(neurons=spk[0].numel(), bits=int(lif.mem_bits))
        act.spikes += float(spk.sum())
        act.neuron_steps += float(spk.numel())
        _record_levels(act, mem, lif)


def snn_lenet5(num_classes: int = 10, in_chans: int = 1, **kwargs: Any) -> SpikingNet:
    """Spiking LeNet-5: conv 6@5x5 (pad 2), conv 16@5x5, 120, 84, readout; 5x5 grid."""
    kw = {"grid": 5, **kwargs}
    return SpikingNet(((6, 5, 2), (16, 5, 0)), (120, 84), num_classes=num_classes, in_chans=in_chans, **kw)


def snn_convnet(num_classes: int = 10, in_chans: int = 1, **kwargs: Any) -> SpikingNet:
    """A wider spiking CNN: conv 32@3x3, conv 64@3x3, 256, readout; 4x4 grid."""
    return SpikingNet(((32, 3, 1), (64, 3, 1)), (256,), num_classes=num_classes, in_chans=in_chans, **kwargs)


def snn_test(num_classes: int = 10, in_chans: int = 1, **kwargs: Any) -> SpikingNet:
    """Tiny model for tests: conv 8@3x3, conv 16@3x3, 32, readout; 3x3 grid."""
    kw = {"grid": 3, **kwargs}
    return SpikingNet(((8, 3, 1), (16, 3, 1)), (32,), num_classes=num_classes, in_chans=in_chans, **kw)


#: name -> factory(num_classes, in_chans, **kwargs); registered in models.py
SNN_MODELS = {"snn_lenet5": snn_lenet5, "snn_convnet": snn_convnet, "snn_test": snn_test}


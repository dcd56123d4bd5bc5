"""Spiking-network model: weight memory, membrane-potential memory, synaptic
operations and spike rates of a compressed SNN, each against the dense SNN.

Activity figures need the evaluated torch model: a spiking model of
:mod:`prunebench.tasks.classification.snn` records, during the task's
evaluation (eval mode, no grad), per LIF layer the spikes and the distinct
stored membrane values and per synapse the nonzero fraction of its input.
The harness hands this plugin that model after evaluating it.  Without it
(re-scoring a saved artifact) or for a non-spiking model, the activity
figures are None (not modelled); the weight figures come from the artifact.

Figures (per sample, i.e. one inference over all time steps):

- ``weight_memory_bits``: nonzero weights x their bits (32 when unquantized)
  of the artifact's layers; indices are the ``storage`` plugin's business.
  ``weight_memory_dense_bits``: every weight at 32 bits (the dense fp32 SNN).
- ``neurons``: LIF neurons per sample.  ``membrane_bits_max``: widest stored
  membrane (32 = fp32).  ``membrane_memory_bits``: the membrane state held per
  time step, sum over layers of neurons x bits (what a neuron array stores
  and rewrites every step); ``membrane_access_bits``: 2 x time_steps x that
  (one read and one write per neuron per step).  Dense reference: 32 bits.
- ``synaptic_ops``: accumulates of spike-driven synapses, sum over layers and
  steps of (input spike density x remaining MACs of the layer).  This is the
  usual expectation (Rueckauer et al., doi 10.3389/fnins.2017.00682): it
  assumes a layer's spikes hit nonzero weights in proportion; it is not an
  event-exact count.  ``analog_macs``: MACs of layers fed real values (the
  first layer under direct encoding, computed once per inference).
  ``ann_dense_macs``: MACs of the dense ANN with the same layers, one pass.
  ``synaptic_ops_dense``: the same spike densities with every weight kept: the
  dense SNN's count if it spiked as the compressed one does (a hardware model
  sees only the compressed model; the dense SNN's own spike rates are not
  modelled).  Reductions: ``*_reduction_x`` = dense / compressed.
- ``energy_pj``: ``analog_macs x mac_pj + synaptic_ops x ac_pj`` and
  ``ann_energy_pj`` = ``ann_dense_macs x mac_pj``; defaults are Horowitz's
  45 nm 32-bit float figures (ISSCC 2014, doi 10.1109/ISSCC.2014.6757323:
  multiply 3.7 pJ + add 0.9 pJ; add 0.9 pJ), as SNN papers use them.  Memory
  energy is not modelled.
- ``spike_rate_mean`` (spikes per neuron per step over all LIF neurons) and
  per layer ``layer.<lif>.spike_rate``, ``layer.<lif>.membrane_levels``
  (distinct stored values seen; None above the tracking cap),
  ``layer.<lif>.membrane_bits``, ``layer.<synapse>.input_spike_rate``.

Membrane check: with ``Config.membrane_bits`` set, the recorded membrane
state must hold at most 2^membrane_bits distinct values in every layer; a
model that does not is refused with :class:`prunebench.verify.VerificationError`
(the suite's membrane target, checked on the clean, evaluated model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from prunebench.config import Between, PositiveFloat, Validated
from prunebench.interfaces import Figure, HardwareModel, Headline
from prunebench.verify import VerificationError

from ._figures import ratio

if TYPE_CHECKING:
    from prunebench.artifact import CompressedModel

__all__ = ["SNNConfig", "SNNModel"]

FP32 = 32


@dataclass(frozen=True)
class SNNConfig(Validated):
    #: the suite's membrane target: refuse a model whose stored membrane exceeds 2^bits levels
    membrane_bits: Annotated[int, Between(1, 32)] | None = None
    #: energy of one multiply-accumulate / one accumulate (pJ); Horowitz 2014, 45 nm fp32
    mac_pj: PositiveFloat = 4.6
    ac_pj: PositiveFloat = 0.9


class SNNModel(HardwareModel):
    Config = SNNConfig
    version = "1"
    headline = (
        Headline("weight_memory_reduction_x", "Weight memory", "x", "higher", rank=30,
                 note="fp32 dense SNN weight bits / nonzero weights x their bits"),
        Headline("membrane_memory_reduction_x", "Membrane memory", "x", "higher", rank=31,
                 note="fp32 membrane bits / stored membrane bits per time step"),
        Headline("sop_reduction_x", "SynOps", "x", "higher", rank=32,
                 note="synaptic operations with every weight kept / with the compressed weights, "
                      "at the compressed model's spike rates"),
        Headline("spike_rate_mean", "Spike rate", "%", "lower", scale=100.0, rank=33,
                 note="spikes per neuron per time step on the test set"),
    )

    def score(self, artifact: CompressedModel, *, model=None, example_input=None) -> dict[str, Figure]:
        cfg = self.config
        figs: dict[str, Figure] = {}
        w_bits = sum(layer.nonzeros * (layer.weight_bits or FP32) for layer in artifact.layers)
        w_dense = sum(layer.numel * FP32 for layer in artifact.layers)
        figs["weight_memory_bits"] = w_bits
        figs["weight_memory_dense_bits"] = w_dense
        figs["weight_memory_reduction_x"] = ratio(w_dense, w_bits)
        activity = ("neurons", "membrane_bits_max", "membrane_memory_bits", "membrane_memory_dense_bits",
                    "membrane_memory_reduction_x", "membrane_access_bits", "synaptic_ops", "synaptic_ops_dense",
                    "sop_reduction_x", "analog_macs", "ann_dense_macs", "ops_reduction_vs_ann_x", "energy_pj",
                    "ann_energy_pj", "energy_reduction_vs_ann_x", "spike_rate_mean", "time_steps")
        figs.update(dict.fromkeys(activity))
        stats = model.snn_stats() if model is not None and hasattr(model, "snn_stats") else None
        # one pass of the ANN: each layer's MACs of one call
        figs["ann_dense_macs"] = sum(layer.numel * layer.positions_per_call for layer in artifact.layers)
        if stats is None:
            return figs
        from prunebench.tasks.classification.snn import (
            LEVEL_CAP,
            lif_modules,
            membrane_levels_problems,
        )

        if cfg.membrane_bits is not None:
            problems = membrane_levels_problems(stats, cfg.membrane_bits)
            if problems:
                raise VerificationError(
                    f"membrane potential misses its {cfg.membrane_bits}-bit target:\n  " + "\n  ".join(problems))
        lifs = lif_modules(model)
        T = stats.time_steps
        neurons = mem_bits = spikes = steps = 0
        widest = 0
        claims = []  # a layer credited with a narrow membrane must have held no more levels than that
        for name, act in stats.neurons.items():
            lif = lifs.get(name)
            bits = int(lif.mem_bits) if lif is not None and lif.quantized else FP32
            if bits < FP32 and (act.levels is None or len(act.levels) > 2**bits):
                held = f"more than {LEVEL_CAP} distinct values" if act.levels is None else \
                    f"{len(act.levels)} distinct values"
                claims.append(f"{name}: a {bits}-bit membrane (at most {2**bits} levels) held {held}")
            widest = max(widest, bits)
            neurons += act.neurons
            mem_bits += act.neurons * bits
            spikes += act.spikes
            steps += act.neuron_steps
            figs[f"layer.{name}.spike_rate"] = act.spike_rate
            figs[f"layer.{name}.membrane_levels"] = act.level_count
            figs[f"layer.{name}.membrane_bits"] = bits
        if claims:
            raise VerificationError("membrane potential off its claimed grid:\n  " + "\n  ".join(claims))
        figs["time_steps"] = T
        figs["neurons"] = neurons
        figs["membrane_bits_max"] = widest
        figs["membrane_memory_bits"] = mem_bits
        figs["membrane_memory_dense_bits"] = neurons * FP32
        figs["membrane_memory_reduction_x"] = ratio(neurons * FP32, mem_bits)
        figs["membrane_access_bits"] = 2 * T * mem_bits
        figs["spike_rate_mean"] = ratio(spikes, steps)
        sops = sops_dense = analog = 0.0
        for layer in artifact.layers:
            rate = stats.input_rate(layer.name)
            per_call = layer.positions_per_call  # the artifact sums positions over calls; stats count calls
            if rate is None:  # a layer the model did not report: counted dense, analog, once
                analog += layer.nonzeros * per_call
                continue
            calls = stats.synapse_calls.get(layer.name, T)
            remaining = layer.nonzeros * per_call
            figs[f"layer.{layer.name}.input_spike_rate"] = rate if stats.spiking_inputs.get(layer.name) else None
            if stats.spiking_inputs.get(layer.name):
                sops += calls * rate * remaining
                sops_dense += calls * rate * layer.numel * per_call
            else:
                analog += calls * remaining
        figs["synaptic_ops"] = sops
        figs["synaptic_ops_dense"] = sops_dense
        figs["sop_reduction_x"] = ratio(sops_dense, sops)
        figs["analog_macs"] = analog
        figs["ops_reduction_vs_ann_x"] = ratio(figs["ann_dense_macs"], analog + sops)
        energy = analog * cfg.mac_pj + sops * cfg.ac_pj
        figs["energy_pj"] = energy
        figs["ann_energy_pj"] = figs["ann_dense_macs"] * cfg.mac_pj
        figs["energy_reduction_vs_ann_x"] = ratio(figs["ann_energy_pj"], energy)
        return figs

"""snnTorch-style stateful quantization-aware training of the membrane.

snnTorch (Eshraghian et al., arXiv 2109.12894; its ``state_quant`` option of
the leaky neurons) quantizes the neuron *state* during training, on a uniform
grid centred on the firing threshold.  Here, for each target layer that feeds
a LIF neuron:

- membrane levels ``theta + k s``, k in {-2^(b-1) .. 2^(b-1) - 1}, with
  s = theta / 2^(b-2) (b >= 2), so the grid spans [-theta, 2 theta - s] and
  theta itself is a level (our reading of "threshold-centred"; snnTorch's
  own limits are configurable and differ: a choice);
- gradients through the membrane quantizer: straight-through;
- weights: global magnitude pruning to the target rate, then uniform
  weight QAT (per-layer least-squares scale, straight-through) for the whole
  budget, independent of the membrane grid (unlike MINT's shared scale).

``membrane_bits``: from the target when it carries them, else this config,
else the weight bits.  A non-spiking model gets the weight steps only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from prunebench import Method
from prunebench.config import Between, Validated

from ._snn_qat import ShadowQuantizer, magnitude_start, set_membrane, weight_scales

__all__ = ["StatefulQAT", "StatefulQATConfig"]


@dataclass(frozen=True)
class StatefulQATConfig(Validated):
    membrane_bits: Annotated[int, Between(2, 16)] | None = None


class StatefulQAT(Method):
    Config = StatefulQATConfig
    version = "1"
    structures = ("unstructured",)
    quantizes = True
    quantization_schemes = ("uniform",)

    def compress(self, model, target, trainer):
        start = magnitude_start(model, target, self.config.membrane_bits)
        mbits, lifs = start.membrane_bits, start.lifs
        for _, lif in lifs.values():
            theta = float(lif.theta())
            set_membrane(lif, mbits, theta / 2 ** (mbits - 2), offset=theta)
        qat = ShadowQuantizer(start.params, start.masks, start.weight_bits,
                              weight_scales(start.weights, start.masks, start.weight_bits))
        if trainer.epochs_left > 0:
            trainer.fit(trainer.epochs_left, callbacks=[qat])
        qat.finish()
        return {"membrane_bits": mbits if lifs else None}

"""MINT: multiplier-less integer quantization of SNNs (Yin et al., arXiv 2305.09850).

MINT quantizes the weights and the membrane potential of each layer
uniformly with one shared scale factor, so that the membrane update
U <- beta U + sum W s works on integer codes alone (the scale cancels and no
multiplier is needed).  Here:

1. prune to the target rate by global magnitude (MINT itself only quantizes;
   the harness's targets always carry a rate, so the suite's standard pruner,
   global magnitude, runs first: a choice);
2. per target layer l, one scale s_l = max(s_w, theta / (2^(b_m - 1) - 1)):
   s_w is the least-squares uniform scale of the layer's kept weights at the
   target's weight bits, and the second term keeps the firing threshold
   theta representable on the b_m-bit membrane grid (MINT trains the
   threshold in the same integer units; without this bound a 2-4 bit
   membrane clipped at +-2^(b_m-1) s_w could never reach theta: a choice);
3. weights on {+-1..+-n} s_l, membrane of the LIF the layer feeds on
   {-2^(b_m-1)..2^(b_m-1)-1} s_l (offset 0, integer codes); quantization-aware
   fine-tuning for the whole budget (straight-through estimator for weights
   and membrane; threshold fixed).

``membrane_bits`` (config) is used when the target does not carry one
(``Target.membrane_bits``); default: the target's weight bits, as MINT uses
equal precision.  On a model without LIF neurons only steps 1 and 3 on the
weights run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from prunebench import Method
from prunebench.config import Between, Validated

from ._snn_qat import ShadowQuantizer, magnitude_start, membrane_bits_of, set_membrane, weight_scales

__all__ = ["MINT", "MINTConfig", "membrane_bits_of"]


@dataclass(frozen=True)
class MINTConfig(Validated):
    membrane_bits: Annotated[int, Between(2, 16)] | None = None


class MINT(Method):
    Config = MINTConfig
    version = "1"
    structures = ("unstructured",)
    quantizes = True
    quantization_schemes = ("uniform",)

    def compress(self, model, target, trainer):
        start = magnitude_start(model, target, self.config.membrane_bits)
        params, masks, bits, mbits, lifs = start.params, start.masks, start.weight_bits, start.membrane_bits, start.lifs
        scales = weight_scales(start.weights, masks, bits)
        top = 2 ** (mbits - 1) - 1
        for name, (_, lif) in lifs.items():
            theta = float(lif.theta())
            scales[name] = max(scales[name], theta / top)
            set_membrane(lif, mbits, scales[name])
        qat = ShadowQuantizer(params, masks, bits, scales)
        epochs = trainer.epochs_left
        if epochs > 0:
            trainer.fit(epochs, callbacks=[qat])
        qat.finish()
        return {"membrane_bits": mbits if lifs else None, "shared_scales": {n: scales[n] for n in lifs}}

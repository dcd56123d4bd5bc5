"""Time to score a ResNet-50-sized CompressedModel with the analytical hardware models.

    python benchmarks/score_speed.py

Prints seconds per model for a 25.6M-weight artifact (4-bit, 10% density).
"""

from __future__ import annotations

import time

import torch

from prunebench import CompressedModel, LayerRecord
from prunebench.registry import hardware_models


def artifact() -> CompressedModel:
    torch.manual_seed(0)
    shapes = [(1024, 1024)] * 23 + [(1000, 2048), (512, 2304)]
    layers = []
    for i, shape in enumerate(shapes):
        mask = torch.rand(shape) < 0.1
        layers.append(LayerRecord(name=f"l{i}", kind="linear", weight_shape=shape, input_shape=(shape[1],),
                                  output_shape=(shape[0],), output_positions=49, mask=mask,
                                  weight=mask.float(), weight_bits=4))
    return CompressedModel(layers)


def main() -> None:
    art = artifact()
    print(f"artifact: {art.total_weights / 1e6:.1f}M weights, {art.nonzero_weights / 1e6:.2f}M nonzero")
    for name in hardware_models.names():
        model = hardware_models.get(name)()
        model.score(art)  # warm-up
        start = time.perf_counter()
        model.score(art)
        print(f"{name:<10} {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()

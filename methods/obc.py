"""Optimal Brain Compression, unstructured (Frantar, Singh and Alistarh,
"Optimal Brain Compression", arXiv 2208.11580): exact layer-wise Optimal
Brain Surgeon, one-shot from calibration data, then masked fine-tuning.

Reading of the paper, and every choice made here:

- **Layer-wise problem.**  For a layer with weights W (rows = output units,
  columns = the d inputs a row reads: im2col patches for a convolution) and
  calibration inputs X (d x N), find the pruned W' minimising
  ||W X - W' X||^2.  Its Hessian is H = 2 X X^T, the same for every row, so
  the problem splits into independent rows.
- **Exact OBS per row (the paper's ExactOBS).**  Each row starts from
  H^-1 and greedily removes the weight p with the smallest loss increase
  w_p^2 / (2 [H^-1]_pp), updates the remaining weights by
  -w_p / [H^-1]_pp * H^-1[:, p] (the OBS step), and removes p from H^-1 by
  Gaussian elimination of its row and column
  (H^-1 <- H^-1 - H^-1[:, p] H^-1[p, :] / [H^-1]_pp).  The loss increase of
  every step is recorded.  All rows of a layer run at once (a batch of
  d x d inverses), to the point where no further step can be selected
  (below).  This greedy order is computed in float32 (as the authors' code
  does); the final weights are solved in float64.
- **Which row loses how many (the paper's global mask selection within a
  layer).**  The layer's pruned count is shared among its rows by the
  recorded losses: each row's sequence of step losses is made
  non-decreasing (running maximum, so a row's pruned weights are always a
  prefix of its OBS order) and the layer's smallest step losses are taken.
  The final weights of a row are then the exact OBS solution for its pruned
  set S, w_K = (H_KK)^-1 H_K: w on the kept set K (which is what the
  sequential OBS updates reach, computed once and stably).
- **How many per layer.**  The layers' kept counts come from the harness's
  group engine on magnitudes (``allocation: uniform`` by default, the paper's
  uniform per-layer sparsity; ``global`` as magnitude pruning allocates), with
  the target's per-layer floor; OBC decides which weights inside a layer.
- **Calibration.**  ``calibration_samples`` training samples (default 256,
  the cap that keeps it small; the paper uses 1024 for ImageNet) are drawn
  from the task's training batches with a generator seeded by the run's
  seed and pushed through the dense model in eval mode under
  ``torch.no_grad()`` (forward passes the harness does not count as
  training; no weight changes).  Every layer's inputs come from the same
  dense pass (layers are solved independently, as in the paper's layer-wise
  setting, not sequentially).  Dampening: ``damp`` x mean(diag H) is added to
  the diagonal (the paper's and its code's 1%); inputs that are always zero
  get H_ii = 1 (their weights are removed first, at no cost).
- **Then** masked fine-tuning for the whole budget (``finetune_fraction``).

Exact and small: the cost is O(rows x d^3) per layer, fine at LeNet sizes
(d <= a few hundred); a layer with d above ``max_columns`` is refused rather
than run for hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from prunebench import Method
from prunebench.config import Between, Ge, Validated
from prunebench.projections import Allocation, project_masks

from ._baselines import masked_finetune, run_generator, target_modules, target_weights

__all__ = ["OBC", "OBCConfig", "obc_prune_rows", "layer_hessian_inputs"]


@dataclass(frozen=True)
class OBCConfig(Validated):
    allocation: Allocation = "uniform"
    #: training samples pushed through the dense model to estimate each layer's Hessian
    calibration_samples: Annotated[int, Ge(1)] = 256
    #: dampening, a fraction of the mean Hessian diagonal added to the diagonal
    damp: Annotated[float, Between(0, 1)] = 0.01
    #: the largest row length (inputs per output) solved exactly
    max_columns: Annotated[int, Ge(1)] = 2048
    finetune_fraction: Annotated[float, Between(0, 1)] = 1.0


def layer_hessian_inputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's inputs as columns of its GEMM: (d, samples x positions)."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1]).t()
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise ValueError("obc: grouped convolutions are not handled")
        cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding,
                        stride=module.stride)  # (N, C*kh*kw, L), columns in PyTorch (c, kh, kw) order
        return cols.transpose(0, 1).reshape(cols.shape[1], -1)
    raise TypeError(f"obc: {type(module).__name__} layers are not handled (Conv2d and Linear are)")


def _prepare_hessian(H: torch.Tensor, damp: float) -> torch.Tensor:
    H = H.clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    H += damp * torch.diagonal(H).mean() * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    return H


@torch.no_grad()
def obc_prune_rows(W: torch.Tensor, H: torch.Tensor, prune: int, damp: float = 0.01) -> tuple[torch.Tensor, dict]:
    """ExactOBS on the rows of ``W`` (R, d) with Hessian ``H`` (d, d): prune
    ``prune`` weights of the layer in all, shared among rows by their OBS
    losses.  Returns the pruned and updated weights (float64) and figures."""
    W0 = W.detach().double()
    R, d = W0.shape
    prune = max(0, min(int(prune), R * d))
    H = _prepare_hessian(H.double(), damp)
    Hinv0 = torch.cholesky_inverse(torch.linalg.cholesky(H))
    if prune == 0:
        return W0.clone(), {"obs_steps": 0}
    # the greedy order in float32, as the authors' code runs it; the final weights below in float64
    w = W0.float()
    Hinv = Hinv0.float().expand(R, d, d).clone()
    pruned = torch.zeros(R, d, dtype=torch.bool, device=W0.device)
    rows = torch.arange(R, device=W0.device)
    costs, orders = [], []
    run_max = torch.zeros(R, dtype=torch.float32, device=W0.device)
    for step in range(d):
        diag = torch.diagonal(Hinv, dim1=1, dim2=2)
        score = w.pow(2) / diag.clamp_min(1e-30)
        score[pruned] = float("inf")
        p = score.argmin(dim=1)
        run_max = torch.maximum(run_max, 0.5 * score[rows, p])
        costs.append(run_max)
        orders.append(p)
        col = Hinv[rows, :, p]  # (R, d): H^-1[:, p] of each row's current inverse
        dp = diag[rows, p].clone()
        w -= (w[rows, p] / dp)[:, None] * col
        w[rows, p] = 0.0
        Hinv.addcmul_(col[:, :, None], (col / dp[:, None])[:, None, :], value=-1.0)
        pruned[rows, p] = True
        # stop once no later step can be among the layer's `prune` smallest: later
        # (running-max) costs are >= each row's current one
        if (step % 8 == 7 or step == d - 1) and (step + 1) * R >= prune:
            kth = torch.kthvalue(torch.stack(costs, dim=1).flatten(), prune).values
            if bool((run_max > kth).all()):
                break
    taken = torch.stack(costs, dim=1)  # (R, steps), non-decreasing along steps
    order = torch.stack(orders, dim=1)
    flat = torch.argsort(taken.flatten(), stable=True)[:prune]
    counts = torch.bincount(flat // taken.shape[1], minlength=R)
    out = torch.zeros_like(W0)
    for r in range(R):
        k = int(counts[r])
        keep = torch.ones(d, dtype=torch.bool, device=W0.device)
        keep[order[r, :k]] = False
        K = torch.nonzero(keep).flatten()
        if K.numel():
            # exact OBS result for pruned set S: the least-squares refit on K
            out[r, K] = torch.linalg.solve(H[K][:, K], H[K] @ W0[r])
    return out, {"obs_steps": len(orders), "row_counts_min": int(counts.min()), "row_counts_max": int(counts.max())}


def _calibration_inputs(model, target, trainer, samples: int) -> tuple[dict[str, torch.Tensor], int]:
    """Each target layer's Hessian 2 X X^T / n from ``samples`` training samples, forward only."""
    task = trainer.task
    modules = target_modules(model, target)
    sums: dict[str, torch.Tensor] = {}
    counts = {n: 0 for n in modules}
    seen = [0]

    def hook_for(name):
        def hook(module, args):
            x = args[0].detach()
            X = layer_hessian_inputs(module, x).double()
            sums[name] = sums.get(name, 0) + 2.0 * (X @ X.t())
            counts[name] += X.shape[1]
        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in modules.items()]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in task.train_batches(run_generator(trainer)):
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                if not isinstance(x, torch.Tensor):
                    raise TypeError("obc: calibration needs batches whose first item is the input tensor "
                                    f"(classification-style), got {type(x).__name__}")
                x = x[: samples - seen[0]]
                model(x)
                seen[0] += x.shape[0]
                if seen[0] >= samples:
                    break
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return {n: sums[n] / max(counts[n], 1) for n in modules}, seen[0]


class OBC(Method):
    """Exact row-wise OBS from calibration data (one-shot), then masked fine-tuning."""

    Config = OBCConfig
    version = "1"
    structures = ("unstructured",)

    def compress(self, model, target, trainer):
        cfg = self.config
        modules = target_modules(model, target)
        for n, m in modules.items():
            d = m.weight[0].numel()
            if d > cfg.max_columns:
                raise ValueError(f"obc: layer {n} has rows of {d} weights, above max_columns={cfg.max_columns}")
        hessians, n_samples = _calibration_inputs(model, target, trainer, cfg.calibration_samples)
        weights = target_weights(model, target)
        keep = target.keep_budget({n: w.numel() for n, w in weights.items()})
        counts = project_masks(weights, target.structure, keep, allocation=cfg.allocation, floor=target.layer_floor)
        masks, figures = {}, {}
        with torch.no_grad():
            for n, m in modules.items():
                W = m.weight.detach().reshape(m.weight.shape[0], -1)
                prune = W.numel() - int(counts[n].sum())
                new, fig = obc_prune_rows(W, hessians[n], prune, cfg.damp)
                mask = torch.zeros_like(new, dtype=torch.bool)
                mask[new != 0] = True
                m.weight.copy_(new.reshape(m.weight.shape).to(m.weight.dtype))
                masks[n] = mask.reshape(m.weight.shape) & (m.weight != 0)
                figures[n] = fig
        info = {"calibration_samples": n_samples, "obc": figures}
        info.update(masked_finetune(model, trainer, masks, cfg.finetune_fraction))
        return info

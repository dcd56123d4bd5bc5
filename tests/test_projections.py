"""The shared projection library: exactness against brute force, idempotence,
tie determinism, budgets, pattern libraries, N:M, and verify on every structure."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunebench import Quantization, Structure, Target
from prunebench.projections import (
    PATTERNS_SLR_5OF9,
    nm_slots,
    pattern_library_pdnn,
    project,
    project_masks,
    structure_groups,
    structure_violations,
    structured_nonzeros,
)
from prunebench.quant import quantize_
from prunebench.verify import VerificationError, verify

FAST = settings(max_examples=25, deadline=None)

# shapes where every group of the structure has the same size, so the projection is exact
EQUAL_SIZE_CASES = {
    "unstructured": {"a": (2, 3), "b": (3, 1, 1, 2)},
    "filter": {"a": (3, 2, 2, 2), "b": (2, 8)},
    "channel": {"a": (2, 3, 2, 2), "b": (2, 2, 2, 2)},
    "column": {"a": (2, 2, 2, 2), "b": (2, 3)},
    "kernel": {"a": (3, 2, 2, 2)},
    "block:2x2": {"a": (4, 2, 2, 1), "b": (2, 4)},
    "pe:2": {"a": (4, 3, 2, 1)},
}


def _energy_groups(weights, structure):
    out = []
    for w in weights.values():
        ids, n = structure_groups(w, structure)
        e = torch.zeros(n, dtype=torch.float64).index_add_(0, ids.flatten(), w.double().flatten() ** 2)
        out += list(zip(e.tolist(), torch.bincount(ids.flatten(), minlength=n).tolist()))
    return out


def _brute_force_error(weights, structure, keep):
    """min ||W - P||^2 over every feasible set of whole groups (at most ``keep`` weights)."""
    groups = _energy_groups(weights, structure)
    best = 0.0
    for r in range(len(groups) + 1):
        for subset in itertools.combinations(groups, r):
            if sum(s for _, s in subset) <= keep:
                best = max(best, sum(e for e, _ in subset))
    return sum(e for e, _ in groups) - best


def _error(weights, projected):
    return sum(float(((weights[k].double() - projected[k].double()) ** 2).sum()) for k in weights)


def _assert_whole_groups(masks, structure):
    for k, m in masks.items():
        ids, n = structure_groups(m, structure)
        kept = torch.bincount(ids.flatten(), weights=m.flatten().double(), minlength=n)
        size = torch.bincount(ids.flatten(), minlength=n).double()
        assert bool(((kept == 0) | (kept == size)).all()), (k, structure)


def _weights(shapes, values):
    out, i = {}, 0
    for k, shape in shapes.items():
        n = torch.Size(shape).numel()
        out[k] = torch.tensor(values[i : i + n], dtype=torch.float32).reshape(shape)
        i += n
    return out


def _n_weights(shapes):
    return sum(torch.Size(s).numel() for s in shapes.values())


@pytest.mark.parametrize("structure", list(EQUAL_SIZE_CASES))
@FAST
@given(data=st.data())
def test_grouped_projection_is_exact_idempotent_and_within_budget(structure, data):
    shapes = EQUAL_SIZE_CASES[structure]
    total = _n_weights(shapes)
    # small integers: plenty of ties
    w = _weights(shapes, data.draw(st.lists(st.integers(-3, 3), min_size=total, max_size=total)))
    keep = data.draw(st.integers(0, total))
    masks = project_masks(w, structure, keep, floor=None)  # the plain constraint set, no layer floor
    p = project(w, structure, keep, floor=None)
    assert sum(int(m.sum()) for m in masks.values()) <= keep
    _assert_whole_groups(masks, structure)
    assert _error(w, p) == pytest.approx(_brute_force_error(w, structure, keep), abs=1e-9)
    again = project(p, structure, keep, floor=None)
    assert all(torch.equal(again[k], p[k]) for k in p)
    assert sum(structured_nonzeros(p[k], structure) for k in p) <= keep


@pytest.mark.parametrize("structure", list(EQUAL_SIZE_CASES))
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_uniform_allocation_is_the_exact_per_layer_projection(structure, data):
    shapes = EQUAL_SIZE_CASES[structure]
    total = _n_weights(shapes)
    w = _weights(shapes, data.draw(st.lists(st.floats(-2, 2, width=32), min_size=total, max_size=total)))
    keep = data.draw(st.integers(0, total))
    p = project(w, structure, keep, allocation="uniform", floor=None)
    for k in w:
        budget = keep * w[k].numel() // total
        assert _error({k: w[k]}, {k: p[k]}) == pytest.approx(_brute_force_error({k: w[k]}, structure, budget), abs=1e-6)
        assert int((p[k] != 0).sum()) <= budget


@pytest.mark.parametrize(
    "structure", ["unstructured", "filter", "channel", "column", "kernel", "pattern", "block:3x2", "pe:3", "2:4", "1:3"]
)
@pytest.mark.parametrize("allocation", ["global", "uniform"])
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), frac=st.floats(0.05, 1.0))
def test_every_structure_is_feasible_idempotent_and_verified(structure, allocation, seed, frac):
    # unequal group sizes (partial tiles, F not divisible by N, mixed layers): greedy, still feasible
    g = torch.Generator().manual_seed(seed)
    w = {"c3": torch.randn(5, 4, 3, 3, generator=g), "c1": torch.randn(7, 5, 1, 1, generator=g),
         "c5": torch.randn(3, 4, 5, 5, generator=g), "fc": torch.randn(6, 10, generator=g)}
    total = sum(t.numel() for t in w.values())
    st_ = Structure.parse(structure)
    keep = int(total * frac) if st_.kind != "nm" else total
    masks = project_masks(w, structure, keep, allocation=allocation)
    p = project(w, structure, keep, allocation=allocation)
    assert sum(int(m.sum()) for m in masks.values()) <= keep
    assert sum(structured_nonzeros(p[k], st_) for k in p) <= keep
    assert all(structure_violations(p[k], st_) == [] for k in p)
    again = project(p, structure, keep, allocation=allocation)
    assert all(torch.equal(again[k], p[k]) for k in p)
    assert all(torch.equal(p[k], torch.where(masks[k], w[k], torch.zeros(()))) for k in w)


def test_ties_go_to_the_lower_index_and_the_earlier_layer():
    ones = {"a": torch.ones(2, 3), "b": torch.ones(2, 3)}
    m = project_masks(ones, "unstructured", 3, floor=None)
    assert m["a"].flatten().tolist() == [True, True, True, False, False, False] and not m["b"].any()
    m = project_masks(ones, "unstructured", 3)  # the floor: b keeps its first weight, a loses its third
    assert m["a"].flatten().tolist() == [True, True, False, False, False, False]
    assert m["b"].flatten().tolist() == [True, False, False, False, False, False]
    m = project_masks(ones, "filter", 9, floor=None)
    assert m["a"].all() and m["b"][0].all() and not m["b"][1].any()
    m = project_masks({"a": torch.ones(4, 2)}, "column", 4)
    assert m["a"][:, 0].all() and not m["a"][:, 1].any()
    m = project_masks({"a": torch.ones(1, 8)}, "2:4", 8)
    assert m["a"].flatten().tolist() == [True, True, False, False] * 2
    m = project_masks({"a": torch.ones(1, 1, 3, 3)}, "pattern", 5, pattern_library=PATTERNS_SLR_5OF9)
    assert torch.equal(m["a"][0, 0], PATTERNS_SLR_5OF9[0])  # first library entry wins a tie
    # repeated calls agree exactly
    w = {"a": torch.randint(-2, 3, (6, 4, 3, 3)).float()}
    for s in ("unstructured", "kernel", "pattern", "block:2x5", "pe:4", "2:4"):
        assert torch.equal(project_masks(w, s, 100 if s != "2:4" else 216)["a"],
                           project_masks(w, s, 100 if s != "2:4" else 216)["a"])


def _kept_groups(mask, structure):
    ids, _ = structure_groups(mask, structure)
    return sorted(ids[mask].unique().tolist())


@pytest.mark.parametrize("structure", ["unstructured", "filter", "channel", "column", "kernel", "pattern",
                                       "block:2x2", "pe:2"])
def test_one_selection_rule_breaks_ties_the_same_way_for_every_structure(structure):
    # all groups tie (equal weights, equal sizes): the ranking is layer order, then group id,
    # for the default (magnitude) scores and for given (random-style) scores alike
    w = {"a": torch.ones(4, 4, 3, 3), "b": torch.ones(4, 4, 3, 3)}
    ids, n = structure_groups(w["a"], structure)
    size = int(project_masks({"a": w["a"]}, structure, w["a"].numel(), floor=None)["a"].sum()) // n
    equal = {k: torch.full((n,), 0.5) for k in w}
    for scores in (None, equal):
        m = project_masks(w, structure, 3 * size, floor=None, scores=scores)
        assert _kept_groups(m["a"], structure) == [0, 1, 2] and not m["b"].any()
        m = project_masks(w, structure, 3 * size, scores=scores)  # floor: b keeps one group, from a's third
        assert _kept_groups(m["a"], structure) == [0, 1] and _kept_groups(m["b"], structure) == [0]
        m = project_masks(w, structure, 3 * size, scores=scores, allocation="uniform")  # 1.5 groups each
        assert _kept_groups(m["a"], structure) == [0] and _kept_groups(m["b"], structure) == [0]
    # a higher score beats a lower group id and an earlier layer
    scores = {"a": torch.zeros(n), "b": torch.arange(n, dtype=torch.float)}
    m = project_masks(w, structure, 2 * size, floor=None, scores=scores)
    assert not m["a"].any() and _kept_groups(m["b"], structure) == [n - 2, n - 1]


def test_structure_groups_definitions():
    shape = (5, 3, 2, 2)
    ids, n = structure_groups(shape, "block:2x5")
    assert n == 3 * 3  # ceil(5/2) row tiles x ceil(12/5) column tiles
    gemm = ids.reshape(5, 12)
    assert gemm[0, 0] == gemm[1, 4] != gemm[2, 0] and gemm[4, 11] == n - 1  # partial edge tiles
    ids, n = structure_groups(shape, "pe:2")
    assert n == 2 * 3
    assert ids[0, 1].unique().item() == ids[2, 1].unique().item() == ids[4, 1].unique().item() == 1  # PE 0, channel 1
    assert ids[1, 2].unique().item() == ids[3, 2].unique().item() == 5  # PE 1, channel 2
    assert structure_groups((2, 3), "pe:8")[1] == 2 * 3  # F < N: only F PEs
    ids, n = structure_groups((2, 6, 1, 2), "2:4")
    assert n == 2 * 2 * 2
    assert ids[0, :4, 0, 1].unique().numel() == 1 and ids[0, 4, 0, 1] != ids[0, 3, 0, 1]  # along C
    assert nm_slots((2, 6, 1, 2), 2, 4) == 2 * 2 * (2 + 2) and nm_slots((1, 5), 2, 4) == 3
    for s in ("unstructured", "filter", "channel", "column", "kernel", "pattern", "block:2x3", "pe:3", "2:4"):
        ids, n = structure_groups((5, 4, 3, 3), s)
        assert ids.shape == (5, 4, 3, 3) and torch.equal(ids.flatten().unique(), torch.arange(n))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), keep=st.integers(0, 16))
def test_pattern_projection_matches_brute_force_over_library_and_kernels(seed, keep):
    g = torch.Generator().manual_seed(seed)
    w = {"a": torch.randn(1, 3, 3, 3, generator=g)}
    lib = PATTERNS_SLR_5OF9.reshape(-1, 9).float()
    kernels = w["a"].reshape(3, 9).double() ** 2
    energy = kernels @ lib.double().t()  # (kernel, pattern)
    best = 0.0
    for r in range(keep // 5 + 1):
        for subset in itertools.combinations(range(3), r):
            for choice in itertools.product(range(13), repeat=r):
                best = max(best, sum(float(energy[k, c]) for k, c in zip(subset, choice)))
    p = project(w, "pattern", keep, pattern_library=PATTERNS_SLR_5OF9)
    assert _error(w, p) == pytest.approx(float(kernels.sum()) - best, abs=1e-9)
    masks = project_masks(w, "pattern", keep, pattern_library=PATTERNS_SLR_5OF9)["a"].reshape(3, 9)
    for k in range(3):  # each kept kernel has its best library pattern
        if masks[k].any():
            assert float(energy[k][lib.bool().eq(masks[k]).all(1)].max()) == pytest.approx(float(energy[k].max()))
    assert int(masks.sum()) <= keep


def test_pattern_rule_for_non_3x3_layers_and_default_library():
    torch.manual_seed(0)
    w = {"c3": torch.randn(4, 4, 3, 3), "c5": torch.randn(2, 3, 5, 5), "fc": torch.randn(5, 6)}
    pat = project_masks(w, "pattern", 200, allocation="uniform")
    ker = project_masks(w, "kernel", 200, allocation="uniform")
    assert torch.equal(pat["c5"], ker["c5"]) and torch.equal(pat["fc"], ker["fc"])  # connectivity / unstructured
    assert torch.equal(pat["fc"], project_masks(w, "unstructured", 200, allocation="uniform")["fc"])
    lib = pattern_library_pdnn(w["c3"])
    assert torch.equal(project(w, "pattern", 200)["c3"], project(w, "pattern", 200, pattern_library=lib)["c3"])
    kept = pat["c3"].reshape(-1, 9)
    kept = kept[kept.any(1)]
    assert (kept.sum(1) == 4).all() and kept[:, 4].all()  # 4-of-9 with the centre


def test_pdnn_library_counts_votes():
    # kernels whose 4 largest |w| are the centre plus a known triple
    def kernel(cells, value=1.0):
        k = torch.full((9,), 0.1)
        k[[4, *cells]] = value
        return k

    rows = [kernel([0, 1, 2])] * 5 + [kernel([6, 7, 8], -2.0)] * 3 + [kernel([3, 5, 7])] * 3 + [torch.zeros(9)] * 20
    lib = pattern_library_pdnn(torch.stack(rows).reshape(-1, 3, 3), size=3).reshape(3, 9)
    expect = [[0, 1, 2, 4], [3, 4, 5, 7], [4, 6, 7, 8]]  # 5 votes; 3 votes (tie: lexicographic); 3 votes
    assert [torch.nonzero(r).flatten().tolist() for r in lib] == expect
    full = pattern_library_pdnn([torch.randn(10, 3, 3, 3)], size=8)
    assert full.shape == (8, 3, 3) and (full.reshape(8, 9).sum(1) == 4).all() and full[:, 1, 1].all()
    assert full.reshape(8, 9).unique(dim=0).shape[0] == 8
    with pytest.raises(ValueError):
        pattern_library_pdnn(torch.randn(2, 5, 5))


def test_slr_library():
    lib = PATTERNS_SLR_5OF9.reshape(-1, 9)
    assert lib.shape == (13, 9) and (lib.sum(1) == 5).all() and lib[:, 4].all()
    assert lib.unique(dim=0).shape[0] == 13


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_nm_keeps_the_n_largest_in_every_group(data):
    n, m = data.draw(st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 4), (2, 3)]))
    c = data.draw(st.integers(1, 9))
    vals = data.draw(st.lists(st.integers(-4, 4), min_size=3 * c * 2, max_size=3 * c * 2))
    w = {"a": torch.tensor(vals, dtype=torch.float32).reshape(3, c, 1, 2)}
    mask = project_masks(w, f"{n}:{m}", w["a"].numel())["a"]
    groups = w["a"].permute(0, 2, 3, 1).reshape(-1, c)  # rows (f, i, j), C innermost
    kept = mask.permute(0, 2, 3, 1).reshape(-1, c)
    for row, krow in zip(groups, kept):
        for s in range(0, c, m):
            vals_g, keep_g = row[s : s + m].abs(), krow[s : s + m]
            assert int(keep_g.sum()) == min(n, vals_g.numel())
            if not keep_g.all():
                assert vals_g[keep_g].min() >= vals_g[~keep_g].max()
    assert structure_violations(project(w, f"{n}:{m}", w["a"].numel())["a"], f"{n}:{m}") == []


def test_nm_validates_keep():
    w = {"a": torch.randn(4, 8)}
    with pytest.raises(ValueError, match="2:4 stores 16"):
        project_masks(w, "2:4", 15)
    assert int(project_masks(w, "2:4", 16)["a"].sum()) == 16


def test_bad_arguments():
    w = {"a": torch.randn(4, 8)}
    with pytest.raises(ValueError):
        project_masks(w, "filter", 4, allocation="layerwise")
    with pytest.raises(ValueError):
        project_masks(w, "filter", -1)
    with pytest.raises(ValueError):
        project_masks({"a": torch.randn(2, 3, 3)}, "pattern", 5, pattern_library=torch.zeros(2, 3, 3))


# ---------------------------------------------------------------- verify


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv2d(8, 8, 1), nn.Flatten(), nn.Linear(8 * 4 * 4, 12))


LAYERS = ("0", "1", "3")
STRUCTURES = ["unstructured", "filter", "channel", "column", "kernel", "pattern", "block:4x4", "pe:4", "2:4"]


def _project_model(structure, rate, **kw):
    m = _model()
    mods = dict(m.named_modules())
    target = Target(layers=LAYERS, structure=Structure.parse(structure), rate=rate)
    w = {n: mods[n].weight.detach() for n in LAYERS}
    p = project(w, structure, target.keep_budget({n: t.numel() for n, t in w.items()}), **kw)
    with torch.no_grad():
        for n in LAYERS:
            mods[n].weight.copy_(p[n])
    return m, mods


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("scheme,bits", [(None, 0), ("uniform", 4), ("pow2", 4), ("ternary", 2), ("binary", 1), ("levels", 3)])
def test_verify_accepts_every_projection(structure, scheme, bits):
    rate = 2.0
    m, mods = _project_model(structure, rate)
    quant = None
    if scheme is not None:
        quant = Quantization(bits, scheme, (-0.2, -0.05, 0.05, 0.2) if scheme == "levels" else None)
        for n in LAYERS:
            quantize_(mods[n].weight.data, quant)
    check = verify(m, Target(layers=LAYERS, structure=Structure.parse(structure), rate=rate, quantization=quant))
    assert check.achieved_rate >= rate


def test_verify_accepts_slr_patterns_and_per_layer_targets():
    m, _ = _project_model("pattern", 3.0, pattern_library=PATTERNS_SLR_5OF9)
    verify(m, Target(layers=LAYERS, structure=Structure("pattern"), rate=3.0))
    m, _ = _project_model("block:2x2", 2.0, allocation="uniform")
    sizes = {n: dict(m.named_modules())[n].weight.numel() for n in LAYERS}
    verify(m, Target(layers=LAYERS, structure=Structure.parse("block:2x2"), layer_sparsity={n: 0.5 for n in LAYERS}))
    assert sum(sizes.values()) > 0


@pytest.mark.parametrize("structure", STRUCTURES[1:])
def test_verify_rejects_a_random_mask_for_structured_targets(structure):
    m = _model()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n in LAYERS:
            w = dict(m.named_modules())[n].weight
            w.mul_(torch.rand(w.shape, generator=g) < 0.5)
    with pytest.raises(VerificationError):
        verify(m, Target(layers=LAYERS, structure=Structure.parse(structure), rate=2.0))


def test_verify_pattern_and_nm_messages():
    m, mods = _project_model("pattern", 2.0)
    with torch.no_grad():
        mods["0"].weight[0, 0] = 1.0  # a dense kernel
    with pytest.raises(VerificationError, match="keeping 9 of 9"):
        verify(m, Target(layers=LAYERS, structure=Structure("pattern"), rate=1.0))
    m, _ = _project_model("pattern", 2.0, pattern_library=PATTERNS_SLR_5OF9)
    with pytest.raises(VerificationError, match="distinct kernel patterns; at most 2"):
        verify(m, Target(layers=LAYERS, structure=Structure("pattern"), rate=2.0), max_patterns=2)
    m, mods = _project_model("2:4", 2.0)
    with torch.no_grad():
        mods["3"].weight[0, :4] = 1.0
    with pytest.raises(VerificationError, match="more than 2 nonzeros"):
        verify(m, Target(layers=LAYERS, structure=Structure.parse("2:4"), rate=2.0))
    m, _ = _project_model("2:4", 2.0)
    with pytest.raises(VerificationError, match="stored by the 2:4 format"):
        verify(m, Target(layers=LAYERS, structure=Structure.parse("2:4"), rate=4.0))


def test_verify_checks_non_uniform_level_sets():
    def quantized(scheme, bits, levels=None, structure="unstructured"):
        m, mods = _project_model(structure, 2.0)
        q = Quantization(bits, scheme, levels)
        for n in LAYERS:
            quantize_(mods[n].weight.data, q)
        return m, mods, Target(layers=LAYERS, structure=Structure.parse(structure), rate=2.0, quantization=q)

    m, mods, t = quantized("ternary", 2)
    with torch.no_grad():
        w = mods["3"].weight
        w[w > 0] = w[w > 0] * 1.5
    with pytest.raises(VerificationError, match="2 distinct nonzero magnitudes; ternary allows one"):
        verify(m, t)
    m, mods, t = quantized("pow2", 4)
    with torch.no_grad():
        w = mods["1"].weight
        w[w != 0] = w[w != 0].sign() * 3.0
        w.view(-1)[torch.nonzero(w.view(-1))[0]] = 1.0  # 3 and 1: not powers of two of one scale
    with pytest.raises(VerificationError, match="powers of two"):
        verify(m, t)
    m, mods, t = quantized("levels", 3, (-0.2, 0.1, 0.3))
    verify(m, t)
    with torch.no_grad():
        mods["0"].weight.view(-1)[torch.nonzero(mods["0"].weight.view(-1))[0]] = 0.15
    with pytest.raises(VerificationError, match="off the given level set"):
        verify(m, t)
    m, mods, t = quantized("binary", 1, structure="filter")
    verify(m, t)
    with torch.no_grad():
        w = mods["0"].weight
        f = int(torch.nonzero(w.reshape(8, -1).abs().sum(1))[0])
        w[f, 0, 0, 0] = 0.0  # a zero inside a kept filter
    with pytest.raises(VerificationError, match="binary but holds zeros inside kept filter groups"):
        verify(m, t)


# ---------------------------------------------------------------- one engine: methods, floor

ALL_STRUCTURES = ["unstructured", "filter", "channel", "column", "kernel", "pattern", "block:4x4", "pe:4", "2:4"]
BIG = ("0", "1", "3")


def _big_model(quiet="1"):
    """Three layers; ``quiet`` has tiny weights, so a global ranking would starve it."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(8, 32, 3), nn.Conv2d(32, 32, 1), nn.Flatten(), nn.Linear(32 * 4 * 4, 128))
    with torch.no_grad():
        dict(m.named_modules())[quiet].weight.mul_(1e-3)
    return m


class _Trainer:
    """What magnitude / random use of a trainer when no fine-tuning is left."""

    def __init__(self, seed=0):
        self.generator = torch.Generator().manual_seed(seed)
        self.epochs_left = self.steps_left = 0

    def record_hard_prune(self):
        self.hard_pruned = True
        return {}


def _target(structure, rate, **kw):
    st_ = Structure.parse(structure)
    if st_.kind == "nm":  # N:M fixes the rate
        mods = dict(_big_model().named_modules())
        total = sum(mods[n].weight.numel() for n in BIG)
        rate = total / sum(nm_slots(mods[n].weight.shape, *st_.params) for n in BIG)
    return Target(layers=BIG, structure=st_, rate=rate, **kw)


def _compress(method_cls, config, structure, rate, seed=0, **kw):
    model = _big_model()
    target = _target(structure, rate, **kw)
    method_cls(config).compress(model, target, _Trainer(seed))
    mods = dict(model.named_modules())
    return model, target, {n: mods[n].weight.detach() != 0 for n in BIG}


@pytest.mark.parametrize("structure", ALL_STRUCTURES)
@pytest.mark.parametrize("allocation", ["global", "uniform"])
def test_magnitude_and_random_cover_every_structure(structure, allocation):
    from prunebench.methods.magnitude import MagnitudeConfig, MagnitudePruning
    from prunebench.methods.random_pruning import RandomConfig, RandomPruning

    assert Structure.parse(structure).kind in MagnitudePruning.structures
    assert Structure.parse(structure).kind in RandomPruning.structures
    for rate in (4.0, 64.0):
        model, target, mag = _compress(MagnitudePruning, MagnitudeConfig(allocation=allocation), structure, rate)
        verify(model, target, method="magnitude")  # budget, structure, no collapsed layer
        w = {n: dict(_big_model().named_modules())[n].weight.detach() for n in BIG}
        expect = project_masks(w, structure, target.keep_budget({n: t.numel() for n, t in w.items()}),
                               allocation=allocation)
        assert all(torch.equal(mag[n], expect[n] & (w[n] != 0)) for n in BIG)  # magnitude is the engine
        model, target, rnd = _compress(RandomPruning, RandomConfig(allocation=allocation), structure, rate)
        verify(model, target, method="random")
        _, _, again = _compress(RandomPruning, RandomConfig(allocation=allocation), structure, rate)
        _, _, other = _compress(RandomPruning, RandomConfig(allocation=allocation), structure, rate, seed=1)
        assert all(torch.equal(rnd[n], again[n]) for n in BIG)  # the seed decides
        assert any(not torch.equal(rnd[n], other[n]) for n in BIG)
        assert any(not torch.equal(rnd[n], mag[n]) for n in BIG)


def _floor_groups(w, structure, keep, floor):
    """Groups the floor asks of each layer, and what one group of each costs (equal sizes in _big_model)."""
    total = sum(t.numel() for t in w.values())
    need, cost = {}, {}
    for n, t in w.items():
        g = structure_groups(t, structure)[1]
        need[n] = max(1, keep * g // total if floor * total >= keep else int(floor * g + 1e-9))
        cost[n] = 4 if structure == "pattern" and t.dim() == 4 and t.shape[-1] == 3 else t.numel() // g
    return need, cost


@pytest.mark.parametrize("structure", ALL_STRUCTURES[:-1])
@pytest.mark.parametrize("allocation", ["global", "uniform"])
@pytest.mark.parametrize("floor", [0.01, 0.0, 0.3])
def test_floor_is_honoured_at_64x(structure, allocation, floor):
    w = {n: m.weight.detach() for n, m in _big_model().named_modules() if n in BIG}
    keep = _target(structure, 64.0).keep_budget({n: t.numel() for n, t in w.items()})
    need, cost = _floor_groups(w, structure, keep, floor)
    fits = sum(need[n] * cost[n] for n in BIG) <= keep
    g = torch.Generator().manual_seed(0)
    random = {n: torch.rand(structure_groups(t, structure)[1], generator=g) for n, t in w.items()}
    for scores in (None, random):  # magnitude and random
        masks = project_masks(w, structure, keep, allocation=allocation, scores=scores, floor=floor)
        assert sum(int(m.sum()) for m in masks.values()) <= keep
        kept = {n: len(_kept_groups(masks[n], structure)) for n in BIG}
        assert all(kept[n] >= (need[n] if fits else 1) for n in BIG), (kept, need)
        if not fits:  # floors cut back to fit, never below one group, never over the budget
            assert sum(min(kept[n], need[n]) * cost[n] for n in BIG) > keep - max(cost.values())
    # the cap: a floor above the kept fraction asks no more than the uniform share
    assert all(need[n] <= max(1, structure_groups(w[n], structure)[1] // 64) for n in BIG)


def test_without_the_floor_layers_collapse_at_64x():
    # the reports of issue 15: global filter pruning starves a layer; uniform channel
    # pruning gives a layer of big groups a share smaller than one group
    w = {n: m.weight.detach() for n, m in _big_model().named_modules() if n in BIG}
    keep = _target("filter", 64.0).keep_budget({n: t.numel() for n, t in w.items()})
    assert not project_masks(w, "filter", keep, floor=None)["1"].any()
    assert not project_masks(w, "channel", keep, allocation="uniform", floor=None)["0"].any()
    m = project_masks(w, "filter", keep)
    assert _kept_groups(m["1"], "filter") == [int(w["1"].reshape(32, -1).norm(dim=1).argmax())]  # its best
    m = project_masks(w, "channel", keep, allocation="uniform")
    assert len(_kept_groups(m["0"], "channel")) == 1 and sum(int(t.sum()) for t in m.values()) <= keep


def test_floor_degrades_when_one_group_per_layer_does_not_fit():
    w = {"a": torch.ones(2, 10), "b": torch.full((2, 10), 2.0)}
    m = project_masks(w, "filter", 15)  # one row of each needs 20: no floor, the plain rule
    assert not m["a"].any() and m["b"][0].all() and not m["b"][1].any()
    m = project_masks(w, "filter", 20, allocation="uniform")
    assert int(m["a"].sum()) == int(m["b"].sum()) == 10
    w["c"] = torch.full((1, 3), 9.0)  # a third layer makes the minimum 23 > 20: the plain rule, a collapses
    m = project_masks(w, "filter", 20)
    assert not m["a"].any() and m["b"][0].all() and not m["b"][1].any() and m["c"].all()
    with pytest.raises(ValueError, match="floor"):
        project_masks(w, "filter", 20, floor=1.5)


def test_magnitude_passes_the_targets_floor():
    from prunebench.methods.magnitude import MagnitudeConfig, MagnitudePruning

    _, _, low = _compress(MagnitudePruning, MagnitudeConfig(), "filter", 4.0)
    _, _, high = _compress(MagnitudePruning, MagnitudeConfig(), "filter", 4.0, layer_floor=0.1)
    assert len(_kept_groups(low["1"], "filter")) == 1 and len(_kept_groups(high["1"], "filter")) == 3

"""Targets by compute (``rate_of: macs``): the Target, the harness's MACs count and
check, the input scale a method may declare, the protocols and suites that carry
it, the records and the pages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from prunebench.config import ConfigError, parse
from prunebench.hardware.compute import count_macs
from prunebench.macs import at_input_scale, declared_input_scale, example_macs, rates_of, verify_macs
from prunebench.protocols.equal_accuracy import EqualAccuracy, EqualAccuracySpec
from prunebench.protocols.equal_compression import EqualCompression, EqualCompressionSpec
from prunebench.records import point_identity
from prunebench.suite import RunPoint, SuiteError, load_suite
from prunebench.target import Structure, Target
from prunebench.testing import tiny_dense
from prunebench.verify import VerificationError, verify

from conftest import SYNTHETIC_TASK


# ------------------------------------------------------------------ the Target
def test_target_rate_of_macs():
    t = Target(layers=("a",), structure=Structure("filter"), rate=1.8, rate_of="macs")
    assert t.rate_of == "macs"
    assert t.describe() == "filter 1.8x MACs"
    assert t.sparsity is None  # a compute reduction says nothing about weights
    assert t.macs_budget(1000) == 555
    with pytest.raises(ValueError, match="not weights"):
        t.keep_budget({"a": 10})


def test_target_default_is_weights():
    t = Target(layers=("a",), rate=4.0)
    assert t.rate_of == "weights" and t.keep_budget({"a": 100}) == 25
    assert t.describe() == "unstructured 4x"
    with pytest.raises(ValueError, match="not macs"):
        t.macs_budget(100)


def test_target_bad_rate_of_is_echoed():
    with pytest.raises(ConfigError, match="rate_of: expected one of .*got 'flops'"):
        Target(layers=("a",), rate=2.0, rate_of="flops")
    with pytest.raises(ConfigError, match="rate_of"):
        Target(layers=("a",), layer_sparsity={"a": 0.5}, rate_of="macs")


# ------------------------------------------------------------------ counting
class _Shared(nn.Module):
    """One conv called on two resolutions, like a detection head on two pyramid levels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x).sum() + self.conv(x[:, :, ::2, ::2]).sum()


def test_count_macs_sums_every_call():
    model = _Shared()
    count = count_macs(model, torch.zeros(1, 2, 8, 8))
    assert count.dense_macs == 4 * 2 * 9 * (64 + 16)
    with torch.no_grad():
        model.conv.weight[1:] = 0  # 3 of 4 filters gone: the compact GEMM keeps one row
    count = count_macs(model, torch.zeros(1, 2, 8, 8))
    assert count.compact_macs == 1 * 2 * 9 * (64 + 16)
    assert count.input_shape == (2, 8, 8)


def test_unstructured_zeros_do_not_count_as_saved():
    task, state = tiny_dense()
    model = task.build_model()
    model.load_state_dict(state)
    with torch.no_grad():
        for f in range(16):  # a zero in every filter, yet no row or column all zero
            model.conv2.weight[f, f % 8, 0, 0] = 0
    count = count_macs(model, task.example_input())
    assert count.compact_macs == count.dense_macs


# ------------------------------------------------------------------ verification
def _tiny_model():
    task, state = tiny_dense()
    model = task.build_model()
    model.load_state_dict(state)
    return task, model


def test_verify_macs_fails_when_target_missed():
    task, model = _tiny_model()
    with pytest.raises(VerificationError, match=r"2x MACs.*allows 97504.*runs 195008 .*achieved 1x"):
        verify_macs(model, task, 2.0, method="liar")


def test_verify_macs_passes_and_records():
    task, model = _tiny_model()
    with torch.no_grad():
        model.conv2.weight[4:] = 0  # 12 of 16 filters and their fc1 columns
        model.fc1.weight.view(32, 16, 36)[:, 4:] = 0
    record = verify_macs(model, task, 2.0)
    assert record["compressed_macs"] == 10368 + 4 * 10368 + 4 * 36 * 32 + 320
    assert record["macs_reduction_x"] == pytest.approx(195008 / record["compressed_macs"])
    assert record["input_scale"] == 1.0 and record["input_shape"] == [1, 12, 12]


def test_verify_weight_check_skipped_for_macs_targets():
    """A MACs target bounds compute: weights may stay dense; structure and levels still count."""
    task, model = _tiny_model()
    t = Target(layers=("conv1", "conv2", "fc1"), structure=Structure("filter"), rate=2.0, rate_of="macs")
    check = verify(model, t)
    assert check.achieved_rate == pytest.approx(1.0, rel=1e-3)


def test_input_scale_is_counted_at_the_declared_resolution():
    task, model = _tiny_model()
    with at_input_scale(task, 8 / 12):
        assert tuple(task.example_input().shape) == (1, 1, 8, 8)
    assert tuple(task.example_input().shape) == (1, 1, 12, 12)  # the scale does not leak out
    record = verify_macs(model, task, 2.0, input_scale=8 / 12)
    assert record["input_shape"] == [1, 8, 8] and record["dense_input_shape"] == [1, 12, 12]
    assert example_macs(model, task, 8 / 12).dense_macs == record["compressed_macs"]
    with pytest.raises(VerificationError, match="achieved"):
        verify_macs(model, task, 2.0, input_scale=0.75)  # 9x9: not small enough


@pytest.mark.parametrize("value", [1.5, 0, -0.5, float("nan"), "0.5", True])
def test_bad_input_scale_is_refused(value):
    with pytest.raises(VerificationError, match="input_scale"):
        declared_input_scale({"input_scale": value}, "liar")


def test_no_declared_scale_is_one():
    assert declared_input_scale(None) == 1.0
    assert declared_input_scale({"other": 3}) == 1.0
    assert declared_input_scale({"input_scale": 0.5}) == 0.5


def test_a_task_without_input_scaling_refuses_a_scale():
    class Plain:
        pass

    with pytest.raises(VerificationError, match="cannot run at another input size"):
        with at_input_scale(Plain(), 0.5, "liar"):
            pass
    with at_input_scale(Plain(), 1.0):  # scale 1 needs nothing
        pass


# ------------------------------------------------------------------ protocols
def test_protocols_accept_rate_of_macs():
    ec = parse(EqualCompressionSpec, {"structure": ["filter"], "rate_of": "macs", "rates": [1.5, 1.8]})
    ea = parse(EqualAccuracySpec, {"structure": ["filter"], "rate_of": "macs", "tolerance": 1,
                                   "search": {"lo": 1.2, "hi": 4}})
    assert ec.rate_of == "macs" and ea.rate_of == "macs"
    point = RunPoint("equal_compression", "head_slim", "filter", 1.8, 0)
    assert EqualCompression(ec).identity(point) == {"rate": 1.8, "search": None, "rate_of": "macs"}
    assert EqualAccuracy(ea).identity(point)["rate_of"] == "macs"


def test_protocol_bad_rate_of_is_echoed():
    with pytest.raises(ConfigError, match="rate_of: expected one of 'weights', 'macs', got 'flops'"):
        parse(EqualCompressionSpec, {"structure": ["filter"], "rate_of": "flops", "rates": [2]})


def test_weight_rate_identity_unchanged():
    """The default leaves point identities (and so record keys) as they were."""
    ec = parse(EqualCompressionSpec, {"structure": ["filter"], "rates": [2]})
    point = RunPoint("equal_compression", "magnitude", "filter", 2.0, 0)
    ident = EqualCompression(ec).identity(point)
    assert ident == {"rate": 2.0, "search": None}
    common = dict(suite="s", suite_version=1, smoke=False, protocol="equal_compression", method={"name": "m"},
                  structure="filter", seed=0, budget_epochs=1.0, quantization=None, dense_key="k")
    assert point_identity(**common, **ident) == point_identity(**common, rate=2.0, search=None)
    assert "rate_of" in point_identity(**common, rate=2.0, search=None, rate_of="macs")


def test_equal_accuracy_searches_a_macs_rate():
    """The search is over the protocol's quantity: the compressor is handed MACs rates."""
    ea = EqualAccuracy(parse(EqualAccuracySpec, {"structure": ["filter"], "rate_of": "macs", "tolerance": 1,
                                                 "search": {"lo": 1.2, "hi": 4, "steps": 3}}))
    seen = []

    def compress(rate):
        seen.append(rate)
        return {"metrics": {"mAP": 30.0 - (2.0 if rate > 2 else 0.0)}, "epochs_spent": 1.0}

    out = ea.run(RunPoint("equal_accuracy", "head_slim", "filter", None, 0), compress, 30.0, "mAP")
    assert seen[0] == 1.2 and 1.8 < out["search"].rate_found <= 2.0


# ------------------------------------------------------------------ suites
_SUITE = """\
suite: macs-check
version: 1
""" + SYNTHETIC_TASK + """dense: {epochs: 1, optimizer: {lr: 0.05}}
budget: {epochs: 1, optimizer: {lr: 0.01}}
seeds: [0]
hardware: [storage, compute]
methods: [METHODS]
protocols:
  equal_compression: {structure: [filter], rate_of: RATE_OF, rates: [1.5]}
"""


def _suite(tmp_path: Path, methods: str, rate_of: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(_SUITE.replace("METHODS", methods).replace("RATE_OF", rate_of))
    return path


def test_suite_accepts_macs_rates(tmp_path):
    suite = load_suite(_suite(tmp_path, "head_slim", "macs"))
    assert suite.protocol("equal_compression").rate_of == "macs"


def test_suite_bad_rate_of_is_echoed(tmp_path):
    with pytest.raises(SuiteError, match=r"protocols\.equal_compression\.rate_of: expected one of .*got 'flop'"):
        load_suite(_suite(tmp_path, "head_slim", "flop"))


def test_suite_refuses_a_method_that_cannot_meet_the_quantity(tmp_path):
    with pytest.raises(SuiteError, match=r"rate_of: .*got 'macs', which magnitude does not \(it meets weights\)"):
        load_suite(_suite(tmp_path, "head_slim, magnitude", "macs"))
    with pytest.raises(SuiteError, match=r"got 'weights', which head_slim does not \(it meets macs\)"):
        load_suite(_suite(tmp_path, "head_slim", "weights"))


def test_rates_of_declarations():
    from prunebench import registry

    assert rates_of(registry.methods.get("magnitude")) == ("weights",)
    assert rates_of(registry.methods.get("head_slim")) == ("macs",)
    assert rates_of(registry.methods.get("input_scaling")) == ("macs",)


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def macs_run(tmp_path_factory):
    """One MACs point and one weight point of a LeNet-5 suite, run by the harness."""
    from prunebench.results import ResultStore
    from prunebench.runner import RunContext, run_point

    tmp = tmp_path_factory.mktemp("macs")
    cache = tmp / "cache"
    macs_suite = load_suite(_suite(tmp, "head_slim", "macs"))
    ctx = RunContext(results=ResultStore(tmp / "results"), cache_dir=cache, progress=False)
    [point] = macs_suite.points()
    macs = run_point(macs_suite, point, ctx)
    weights_path = tmp / "w.yaml"
    weights_path.write_text(_SUITE.replace("METHODS", "tp_l1").replace("rate_of: RATE_OF, ", ""))
    weights_suite = load_suite(weights_path)
    [wpoint] = weights_suite.points()
    weights = run_point(weights_suite, wpoint, ctx)
    return macs, weights


def test_runner_verifies_and_records_macs(macs_run):
    macs, _ = macs_run
    rec = macs.record
    assert rec.status == "passed", rec.failure
    assert rec.target["rate_of"] == "macs"
    assert rec.macs["macs_reduction_x"] >= 1.5
    assert rec.macs["input_scale"] == 1.0
    # the method's own count never decides: the harness's (on the effective model) is at most it
    assert rec.macs["compressed_macs"] <= rec.method_info["planned_macs"]


def test_weight_rate_records_carry_no_macs_fields(macs_run):
    _, weights = macs_run
    stored = json.loads(weights.record.to_json())
    assert "macs" not in stored and "rate_of" not in stored["target"]


def test_pages_label_macs_rates_and_draw_the_curve(macs_run):
    from prunebench.report.pages import render

    macs, _ = macs_run
    out = render([macs.record])
    page = out["macs-check.md"]
    assert "Target (MACs reduction)" in page and "Achieved (MACs reduction, harness count)" in page
    assert "## Compute against accuracy (MACs targets)" in page
    assert out["macs-check-macs.png"].startswith(b"\x89PNG")

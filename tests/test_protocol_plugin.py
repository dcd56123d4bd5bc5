"""A new protocol is one module plus its entry point: nothing in the runner,
the suite loader or the report names it."""

import re

import pytest

from prunebench.report import render
from prunebench.results import ResultStore
from prunebench.runner import RunContext, run_point
from prunebench.suite import SuiteError, load_suite

#: the whole third-party protocol: keep the highest of a few rates that still
#: reaches an absolute accuracy floor (a "deployment threshold" comparison)
MODULE = '''
from dataclasses import dataclass
from prunebench.config import Validated
from prunebench.protocols import Protocol, RunPoint
from prunebench.report.cells import Row, acc2, dig, fmt_stat, method_label, num, sig
from prunebench.report.stats import stat_of


@dataclass(frozen=True)
class Spec(Validated):
    structure: tuple[str, ...]
    rates: tuple[float, ...]
    floor: float


class HighestAboveFloor(Protocol):
    name = "above_floor"
    title = "Highest rate above the floor"
    Spec = Spec
    header = (("Method", "Rate kept", "{metric}"), "lrr")

    def points(self, method, seeds):
        return [RunPoint(self.name, method, s, None, seed) for s in self.spec.structure for seed in seeds]

    def identity(self, point):
        return {"rate": None, "search": {"rates": list(self.spec.rates), "floor": self.spec.floor}}

    def run(self, point, compress, dense_value, metric):
        kept = None
        for rate in sorted(self.spec.rates):
            out = compress(rate)
            if out["metrics"][metric] < self.spec.floor:
                break
            kept = out
        return kept if kept is not None else compress(min(self.spec.rates))

    def check(self, expect, point, record):
        return []

    @classmethod
    def rows(cls, records, metric, structure):
        by = {}
        for r in records:
            by.setdefault(method_label(r), []).append(r)
        return [Row(m, structure, cls.name,
                    [m, fmt_stat(stat_of(rs, lambda r: num(dig(r, "target", "rate"))), sig),
                     fmt_stat(stat_of(rs, lambda r: num(dig(r, "metrics", metric))), acc2)],
                    (m,), stat_of(rs, lambda r: num(dig(r, "metrics", metric))), None)
                for m, rs in sorted(by.items())]
'''

SUITE = """
suite: floor-test
version: 1
task:
  name: classification
  model: lenet5
  data: {{name: synthetic, synthetic_train: 256, synthetic_test: 128}}
  batch_size: 64
dense: {{epochs: 1}}
budget: {{epochs: 0.25}}
methods: [magnitude]
protocols:
  {protocols}
"""


@pytest.fixture
def above_floor(fake_dists):
    fake_dists("fakeplug-floor", {"prunebench.protocols": {"above_floor": "fakeplug_floor:HighestAboveFloor"}},
               module_source={"fakeplug_floor": MODULE})


def test_a_protocol_plugin_runs_and_reports(tmp_path, above_floor, isolated_cache):
    path = tmp_path / "floor.yaml"
    path.write_text(SUITE.format(protocols="above_floor: {structure: [unstructured], rates: [2, 4, 64], floor: 50}"))
    suite = load_suite(path)
    (point,) = suite.points()
    assert point.protocol == "above_floor" and point.rate is None
    store = ResultStore(tmp_path / "res")
    result = run_point(suite, point, RunContext(results=store, progress=False))
    rec = result.record
    assert rec.status == "passed" and rec.protocol == "above_floor"
    assert rec.target["rate"] in (2.0, 4.0, 64.0)
    assert rec.metrics["top1"] >= 50 or rec.target["rate"] == 2.0
    # the same point again is reused: its identity comes from the protocol
    again = run_point(suite, point, RunContext(results=store, progress=False))
    assert again.reused and again.record.point_key == rec.point_key
    pages = render(store.records())
    page = pages["floor-test.md"]
    assert "## Highest rate above the floor · unstructured" in page
    assert re.search(r"^\| Method +\| +Rate kept \| +top1 \|$", page, re.M)


def test_an_unknown_protocol_is_named_with_the_installed_ones(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(SUITE.format(protocols="equal_acuracy: {structure: [unstructured], tolerance: 1}"))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: protocols.equal_acuracy: Unknown protocol 'equal_acuracy'.")
    assert "Did you mean: equal_accuracy?" in msg


def test_protocol_settings_are_validated_by_its_spec(tmp_path, above_floor):
    path = tmp_path / "bad.yaml"
    path.write_text(SUITE.format(protocols="above_floor: {structure: [unstructured], rates: [2], flor: 50}"))
    with pytest.raises(SuiteError, match=r"protocols\.above_floor\.flor: unknown key"):
        load_suite(path)


def test_null_switches_a_protocol_off_and_none_left_is_an_error(tmp_path):
    path = tmp_path / "off.yaml"
    path.write_text(SUITE.format(protocols="equal_accuracy: null"))
    with pytest.raises(SuiteError, match=r"protocols: expected at least one protocol \(installed: .*equal_accuracy"):
        load_suite(path)

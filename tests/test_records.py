"""The typed run record: round trips, migration of every committed record, clear errors."""

import json

import pytest

from conftest import REPO
from prunebench.records import SCHEMA_VERSION, MethodRef, RecordError, RunRecord, SearchSummary


def _committed():
    root = REPO / "results"
    for path in sorted(root.glob("*.jsonl")):  # the layout before one file per point
        for line in path.read_text().splitlines():
            if line.strip():
                yield path.name, json.loads(line)
    for path in sorted(root.glob("*/*.json")):
        yield str(path.relative_to(root)), json.loads(path.read_text())


def test_every_committed_record_reads_back_and_keeps_its_content():
    seen = 0
    for name, stored in _committed():
        rec = RunRecord.from_json(stored)
        assert rec.schema == SCHEMA_VERSION and isinstance(rec.method, MethodRef)
        out = rec.to_dict()
        # what migration adds, and nothing else changes
        added = {k: out[k] for k in set(out) - set(stored)}
        if stored["schema"] == 1:
            assert set(added) == {"torch_threads", "point_key"} and added["torch_threads"] is None, name
        else:
            assert added == {} and name.endswith(f"/{rec.point_key}.json"), name
        assert {k: v for k, v in out.items() if k not in added and k != "schema"} == \
            {k: v for k, v in stored.items() if k != "schema"}, name
        assert rec.extra == {}, (name, rec.extra)  # the schema knows every committed key
        if stored["protocol"] == "equal_accuracy":
            assert isinstance(rec.search, SearchSummary) and rec.search.runs == len(rec.search.trace)
        seen += 1
    assert seen >= 200  # the committed store is not empty


def _minimal(**kw):
    rec = {"schema": 1, "suite": "s", "suite_version": 1, "protocol": "equal_compression",
           "point_id": "magnitude-unstructured-4x-s0", "method": {"name": "magnitude", "version": "1"},
           "structure": "unstructured", "seed": 0, "primary_metric": "top1", "status": "passed",
           "metrics": {"top1": 90.0}, "dense_metrics": {"top1": 91.0}}
    rec.update(kw)
    return rec


def test_json_round_trip_is_stable_and_keeps_unknown_keys():
    rec = RunRecord.from_json(json.dumps(_minimal(future_field={"a": 1})))
    assert rec.extra == {"future_field": {"a": 1}} and rec.primary_value == 90.0 and rec.dense_value == 91.0
    again = RunRecord.from_json(rec.to_json())
    assert again == rec and again.to_json() == rec.to_json()
    assert json.loads(rec.to_json())["future_field"] == {"a": 1}


@pytest.mark.parametrize("change, message", [
    ({"schema": SCHEMA_VERSION + 1}, f"schema: {SCHEMA_VERSION + 1} was written by a newer prunebench"),
    ({"schema": "one"}, "schema: expected a positive integer, got 'one'"),
    ({"status": "ok"}, "status: expected one of passed, failed, error, got 'ok'"),
    ({"method": {"version": "1"}}, "method: expected an object with a name"),
    ({"search": {"lo": 2}}, "search: "),
])
def test_bad_records_are_refused_naming_the_key(change, message):
    with pytest.raises(RecordError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunRecord.from_json(_minimal(**change))


def test_a_missing_required_key_is_named():
    data = _minimal()
    del data["point_id"]
    with pytest.raises(RecordError, match="point_id: missing required key"):
        RunRecord.from_json(data)


def test_update_refuses_unknown_fields():
    rec = RunRecord.from_json(_minimal())
    rec.update({"achieved_rate": 4.0})
    assert rec.achieved_rate == 4.0
    with pytest.raises(AttributeError, match="no field 'achieved_rat'"):
        rec.update({"achieved_rat": 4.0})

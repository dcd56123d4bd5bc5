"""The page's "Narrowest hidden layer" section: which hidden layer a method's
allocation leaves narrowest, with its live units per budget."""

from prunebench.report.units import effective_rate_note, live_units, units_section


def _rec(method, allocation, seed, budget, dead, *, units=None, kept_rows=None, rate=16.0, structure="filter"):
    whole = {"dead_units": dead}
    if units is not None:
        whole["units"] = units
    rec = {"protocol": "equal_compression", "status": "passed", "structure": structure, "seed": seed,
           "method": {"name": method, "version": "2", "config": {"allocation": allocation}},
           "target": {"rate": rate, "structure": structure}, "budget_epochs": budget,
           "metrics": {"top1": 80.0}, "whole_model": whole}
    if kept_rows is not None:  # records from before whole_model.units: the storage model's live rows
        rec["hardware"] = {"storage": {f"layer.{k}.compact_kept_rows": v for k, v in kept_rows.items()}}
    return rec


UNITS = {"conv1": 20, "conv2": 50, "fc1": 500}


def _rows(lines):
    return {tuple(c.strip() for c in line.strip("|").split("|")[:4]): [c.strip() for c in line.strip("|").split("|")]
            for line in lines if line.startswith("| filter") or line.startswith("| unstructured")}


def test_live_units_from_the_record_or_from_storage():
    assert live_units(_rec("m", "global", 0, 1.0, {"fc1": 495}, units=UNITS)) == {
        "conv1": (20, 20), "conv2": (50, 50), "fc1": (5, 500)}
    # older records: live rows plus dead units, for the layers that lost some
    old = _rec("m", "global", 0, 1.0, {"conv2": 6, "fc1": 495}, kept_rows={"conv1": 20, "conv2": 44, "fc1": 5, "fc2": 10})
    assert live_units(old) == {"conv2": (44, 50), "fc1": (5, 500)}
    assert live_units({"whole_model": None}) == {}


def test_the_narrowest_layer_per_method_and_budget():
    records = []
    for seed in (0, 1):
        # global: fc1 starved to 5 and 6 units (1.1%); conv2 loses a few (88%)
        records.append(_rec("magnitude", "global", seed, 1.0, {"conv2": 6, "fc1": 495 - seed}, units=UNITS))
        records.append(_rec("magnitude", "global", seed, 3.0, {"conv2": 6, "fc1": 495}, units=UNITS))
        # uniform: conv1 keeps 2 of 20 (10%), fc1 65 of 500 (13%): conv1 is the narrowest
        records.append(_rec("tp_l1", "uniform", seed, 1.0, {"conv1": 18, "conv2": 44, "fc1": 435}, units=UNITS))
    records.append(_rec("magnitude", "global", 0, 1.0, {}, units=UNITS, rate=4.0))  # nothing died: no row
    lines = units_section(records)
    assert lines[0] == "## Narrowest hidden layer"
    assert lines[4].split("|")[1:-1] and "1 ep" in lines[4] and "3 ep" in lines[4]
    rows = _rows(lines)
    assert rows[("filter", "magnitude v2", "global", "16×")][4:] == ["fc1", "5.5 of 500", "5 of 500"]
    assert rows[("filter", "tp_l1 v2", "uniform", "16×")][4:] == ["conv1", "2 of 20", "—"]
    assert not any(key[3] == "4×" for key in rows)


def test_no_section_when_every_unit_is_live_or_unknown():
    assert units_section([_rec("magnitude", "global", 0, 1.0, {}, units=UNITS)]) == []
    assert units_section([_rec("magnitude", "global", 0, 1.0, {"fc1": 3})]) == []  # no unit counts at all
    failed = {**_rec("magnitude", "global", 0, 1.0, {"fc1": 495}, units=UNITS), "status": "error"}
    assert units_section([failed]) == []


def test_a_table_mixing_allocations_says_so_and_a_uniform_table_does_not():
    from prunebench.report.units import allocation_note

    def rec(name, allocation):
        return {"protocol": "equal_compression", "status": "passed", "structure": "filter",
                "method": {"name": name, "version": "1", "config": {"allocation": allocation}}}

    mixed = [rec("magnitude", "global"), rec("slr", "global"), rec("tp_l1", "uniform")]
    note = allocation_note(mixed)
    assert len(note) == 2 and note[0].startswith("> Allocation differs")
    assert "global: magnitude v1, slr v1; uniform: tp_l1 v1" in note[0]
    assert allocation_note([rec("magnitude", "uniform"), rec("tp_l1", "uniform")]) == []
    # a method whose config names no allocation does not make a table mixed
    assert allocation_note([rec("magnitude", "global"), {**rec("pattern", None)}]) == []


def test_records_scored_before_the_constant_fold_are_flagged_with_their_measured_gap():
    from prunebench.report.units import prefold_note

    def rec(name, scored, nominal, folded=None):
        whole = {"dead_units": {"conv1": 3}}
        if folded is not None:
            whole["folded_constants"] = folded
        return {"protocol": "equal_compression", "status": "passed", "structure": "filter",
                "method": {"name": name, "version": "1"}, "whole_model": whole,
                "metrics": {"top1": scored}, "metrics_nominal": {"top1": nominal}}

    old = [rec("gmp", 80.0, 84.0), rec("gmp", 82.0, 83.0), rec("tp_l1", 85.0, 85.0)]
    note = prefold_note(old, "top1")
    assert len(note) == 2 and note[0].startswith("> 2 records of this table were scored before")
    assert "gmp v1: 2, mean +2.50, largest +4.00" in note[0] and "tp_l1" not in note[0]
    # records made with the fold, and old ones whose removal changed nothing, are not flagged
    assert prefold_note([rec("gmp", 84.0, 84.0, folded={"conv1": 3}), rec("tp_l1", 85.0, 85.0)], "top1") == []


def _rated(method, seed, budget, rate, achieved, effective):
    rec = _rec(method, "uniform", seed, budget, {}, units=UNITS, rate=rate, structure="unstructured")
    rec["achieved_rate"] = achieved
    rec["whole_model"]["effective_rate"] = effective
    return rec


def test_a_method_scored_far_from_its_target_rate_is_named_with_its_effective_rate():
    records = [_rated("obc", 0, 1.0, 16.0, 16.0, 34.0), _rated("obc", 1, 3.0, 16.0, 16.0, 35.0),
               _rated("obc", 0, 1.0, 4.0, 4.0, 4.1),  # within the ratio: not named
               _rated("magnitude", 0, 1.0, 16.0, 16.4, 16.5),
               _rated("shrunk", 0, 1.0, 16.0, 16.0, 12.0)]  # below: fewer weights removed than counted
    note = effective_rate_note(records)
    assert len(note) == 2 and note[0].startswith("> Scored at a whole-model rate far from its target")
    assert "obc v2: 16× at 34.5×" in note[0] and "4× at" not in note[0]
    assert "shrunk v2: 16× at 12.0×" in note[0]
    assert "magnitude" not in note[0]


def test_no_effective_rate_note_when_every_method_is_near_its_target_or_unknown():
    assert effective_rate_note([_rated("gmp", 0, 1.0, 64.0, 64.6, 59.5)]) == []  # 0.92: within
    unknown = _rated("obc", 0, 1.0, 16.0, 16.0, 34.0)
    unknown["whole_model"]["effective_rate"] = None
    assert effective_rate_note([unknown]) == []
    failed = {**_rated("obc", 0, 1.0, 16.0, 16.0, 34.0), "status": "error"}
    assert effective_rate_note([failed]) == []
    other = {**_rated("obc", 0, 1.0, 16.0, 16.0, 34.0), "protocol": "equal_accuracy"}
    assert effective_rate_note([other]) == []

"""Leaderboards from a synthetic results store of hand-built records."""

from __future__ import annotations

import copy
import random
import re

import pytest

from prunebench.report import GENERATED_MARKER, mean_ci, t_975, write_leaderboards
from prunebench.report import render as _render
from prunebench.results import ResultStore


def _squash(text: str) -> str:
    """Table lines without tabulate's column padding, so tests can match cells."""
    out = []
    for line in text.splitlines():
        if line.startswith("|"):
            line = re.sub(r" {2,}", " ", line)
            line = re.sub(r"\|:?-+:?(?=\|)", lambda m: "|" + (":---" if m.group(0).startswith("|:") else "---:"
                                                                   if m.group(0).endswith(":") else "---"), line)
        out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def render(records, *args, **kwargs):
    return {name: _squash(page) if isinstance(page, str) else page
            for name, page in _render(records, *args, **kwargs).items()}

SUITE = "lenet5-fashion-mnist"
DENSE_BITS = 431080 * 32


def make_record(
    *,
    suite=SUITE,
    method="magnitude",
    protocol="equal_compression",
    structure="filter",
    rate=16.0,
    seed=0,
    top1=91.0,
    dense=92.0,
    status="passed",
    failure=None,
    smoke=False,
    suite_version=1,
    created="2026-11-22T13:00:00Z",
    rate_found=None,
    quant=None,
    hardware=True,
    commit="abcdef0123456789abcdef0123456789abcdef01",
) -> dict:
    error = status == "error"
    rec = {
        "schema": 1,
        "suite": suite,
        "suite_version": suite_version,
        "suite_file": "suites/classification/lenet5_fashion_mnist.yaml",
        "smoke": smoke,
        "task": "classification",
        "model": "lenet5_caffe",
        "dataset": "fashion-mnist",
        "reference": "ADMM-NN arXiv:1812.11677",
        "protocol": protocol,
        "point_id": f"{method}-{structure}-{rate if rate else 'acc'}x-s{seed}",
        "method": {"name": method, "version": "1", "distribution": "prunebench", "distribution_version": "0.1.0",
                   "config": {}},
        "structure": structure,
        "seed": seed,
        "target": {"rate": rate if protocol == "equal_compression" else None, "structure": structure,
                   "quantization": quant, "layers": []},
        "status": status,
        "failure": failure,
        "primary_metric": "top1",
        "metrics": None if error else {"top1": top1, "top5": 99.0},
        "dense_metrics": {"top1": dense, "top5": 99.5},
        "accuracy_drop": None if error else dense - top1,
        "achieved_rate": None if error else (rate or rate_found or 1.0) * 1.001,
        "search": None,
        "hardware": None,
        "epochs_spent": 1.0,
        "budget_epochs": 1.0,
        "wall_time_s": 12.3 + seed,
        "git_commit": commit,
        "git_dirty": False,
        "versions": {"prunebench": "0.1.0", "torch": "2.4.0"},
        "device": "cpu",
        "created": created,
    }
    if protocol == "equal_accuracy":
        rec["search"] = {"lo": 2, "hi": 512, "tolerance": 0.5, "runs": 7, "rate_found": rate_found,
                         "trace": [{"rate": 2, "top1": top1, "within": True}]}
    if hardware and not error:
        r = rec["achieved_rate"]
        rec["hardware"] = {
            "storage": {"fp32_dense_bits": DENSE_BITS, "stored_bits": DENSE_BITS / (r * 0.8),
                        "compression_data_only_x": r, "compression_with_index_x": r * 0.8},
            "compute": {"dense_macs": 2_300_000, "remaining_macs": 2_300_000 / r, "mac_reduction_x": r,
                        "remaining_macs_fraction": 1 / r},
        }
    return rec


def synthetic_store() -> list[dict]:
    recs = []
    # magnitude at 16x over 3 seeds: top1 90, 91, 92 -> 91.00 ± 2.48; dense 92 for every seed
    for seed, top1 in enumerate((90.0, 91.0, 92.0)):
        recs.append(make_record(seed=seed, top1=top1, status="passed" if top1 >= 91 else "failed",
                                failure=None if top1 >= 91 else "top1 drop: target <= 1 points"))
    # random at 16x: a single seed
    recs.append(make_record(method="random", seed=0, top1=80.0, status="failed", failure="drop too big"))
    # magnitude at 4x, 2 seeds, unstructured, no hardware modelled
    recs.append(make_record(structure="unstructured", rate=4.0, seed=0, top1=91.5, hardware=False))
    recs.append(make_record(structure="unstructured", rate=4.0, seed=1, top1=91.7, hardware=False))
    # an error record
    recs.append(make_record(method="random", rate=32.0, seed=1, status="error",
                            failure="VerificationError: layer conv1 has 10 nonzeros, expected 8\nTraceback..."))
    # equal accuracy: two seeds found a rate, one did not
    for seed, found in enumerate((36.0, 38.0, None)):
        recs.append(make_record(protocol="equal_accuracy", structure="unstructured", rate=None, seed=seed,
                                top1=91.6, rate_found=found, status="passed" if found else "failed"))
    # a smoke record and a second suite
    recs.append(make_record(smoke=True, top1=50.0, created="2026-11-23T10:00:00Z"))
    recs.append(make_record(suite="vgg16-cifar10", seed=0, top1=93.0, dense=93.5,
                            commit="1234567890abcdef1234567890abcdef12345678"))
    return recs


def test_t_table_and_mean_ci():
    # published t tables, to their 3 decimals; beyond 30 df no longer 1.96 exactly
    assert [round(t_975(df), 3) for df in (1, 2, 30, 120)] == [12.706, 4.303, 2.042, 1.980]
    with pytest.raises(ValueError, match="df must be >= 1"):
        t_975(0)
    stat = mean_ci([92.0, 90.0, 91.0])
    assert stat.n == 3 and stat.mean == pytest.approx(91.0)
    assert stat.half == pytest.approx(t_975(2) / 3**0.5)  # s = 1
    assert f"{stat.half:.2f}" == "2.48"
    assert mean_ci([5.0]).half is None and mean_ci([]) is None


def test_suite_page_tables():
    out = render(synthetic_store())
    page = out[f"{SUITE}.md"]
    assert page.startswith(GENERATED_MARKER + "\n")
    assert "# lenet5-fashion-mnist" in page
    assert "- Suite version: 1" in page and "ADMM-NN arXiv:1812.11677" in page and "lenet5_caffe" in page
    assert "**Dense baseline top1: 92.00 ± 0.00** (n=3 seeds)" in page

    rows = {line.split(" | ")[0] + " | " + line.split(" | ")[1]: line for line in page.splitlines()
            if line.startswith("| magnitude") or line.startswith("| random")}
    mag16 = rows["| magnitude v1 | 16×"]
    # hand-computed: mean 91.00, SD 1, t(2) = 4.303 -> CI half-width 2.48; Δ = top1 - dense
    assert "| 91.00 ± 1.00 | [88.52, 93.48] | 90.00, 91.00, 92.00 |" in mag16
    assert "| -1.00 ± 1.00 |" in mag16
    assert "| 16.0× | " in mag16  # mean achieved rate
    assert "| 12.8× | 16.0× |" in mag16  # storage incl. index, data only
    assert "| 6.24% |" in mag16  # MACs left = 1 / 16.016
    assert mag16.endswith("| 3 | 1 | 2/3 met expect |")
    rand16 = rows["| random v1 | 16×"]
    assert "| 80.00 (n=1) |" in rand16 and "0/1 met expect" in rand16
    # sorted by rate, then metric descending: magnitude 16x before random 16x
    assert page.index("| magnitude v1 | 16×") < page.index("| random v1 | 16×")
    # no hardware model: dashes
    mag4 = rows["| magnitude v1 | 4×"]
    # 91.5, 91.7: SD 0.1414, t(1) = 12.706 -> half-width 1.27
    # no record of this table was scored by a hardware model: no hardware columns
    assert mag4.startswith("| magnitude v1 | 4× | 4.00× | — | 91.60 ± 0.14 | [90.33, 92.87] | 91.50, 91.70 | "
                           "-0.40 ± 0.14 | 2 |")
    # errors are counted where they belong and listed
    assert "| random v1 | 32× | — | — | — | — | — | — | — | — | — | 0 | — | 1 error |" in page
    assert "## Errors" in page
    assert "| random v1 | 1 | `random-filter-32.0x-s1`: VerificationError: layer conv1 has 10 nonzeros" in page
    assert "Traceback" not in page

    # equal accuracy: rate found over the 2 seeds that found one
    assert "## Equal accuracy · unstructured" in page
    assert "Search: highest rate in [2×, 512×] within 0.5 pts of dense." in page
    # rates averaged geometrically: sqrt(36 x 38) = 36.99; 2 of 3 seeds found one
    ea = rows["| magnitude v1 | 37.0×"]
    assert "| 36.0, 38.0, 1 none | 91.60 ± 0.00 |" in ea and "| 7 | 2 of 3 |" in ea

    # a table per protocol and structure, equal compression first
    assert page.index("## Equal compression · filter") < page.index("## Equal compression · unstructured")
    assert page.index("## Equal compression · unstructured") < page.index("## Equal accuracy · unstructured")
    assert f"![Pareto plot: top1 vs stored bits incl. index]({SUITE}-pareto.png)" in page
    assert out[f"{SUITE}-pareto.png"].startswith(b"\x89PNG")
    assert "from 10 records" in page and "`abcdef012345`" in page and "prunebench versions: 0.1.0." in page
    # nothing run-specific
    assert "2026-11-22" not in page and "12.3" not in page


def test_index_and_smoke_pages():
    out = render(synthetic_store())
    assert set(out) == {
        "README.md",
        f"{SUITE}.md", f"{SUITE}-pareto.png",
        f"{SUITE}-smoke.md", f"{SUITE}-smoke-pareto.png",
        "vgg16-cifar10.md", "vgg16-cifar10-pareto.png",
    }
    index = out["README.md"]
    assert "## Suites" in index and "## Smoke runs" in index and "-smoke.md" in index
    suites_part, smoke_part = index.split("## Smoke runs")
    assert (f"| {SUITE} | 1 | classification | lenet5_caffe | fashion-mnist | 10 | magnitude v1, random v1 "
            f"| [{SUITE}.md]({SUITE}.md) |") in suites_part
    assert "[vgg16-cifar10.md](vgg16-cifar10.md)" in suites_part
    assert f"[{SUITE}-smoke.md]({SUITE}-smoke.md)" in smoke_part and f"({SUITE}-smoke.md)" not in suites_part
    # the smoke record stays off the main page
    assert "50.00" not in out[f"{SUITE}.md"]
    smoke = out[f"{SUITE}-smoke.md"]
    assert "(smoke runs)" in smoke and "50.00 (n=1)" in smoke
    assert "from 12 records" in index and "`1234567890ab`" in index


def test_deterministic_under_shuffle():
    recs = synthetic_store()
    first = render(recs)
    again = render(copy.deepcopy(recs))
    shuffled = copy.deepcopy(recs)
    random.Random(7).shuffle(shuffled)
    third = render(shuffled)
    assert first == again == third  # PNGs included


def test_reruns_and_old_versions_are_noted_not_mixed():
    recs = [
        make_record(seed=0, top1=50.0, created="2026-11-01T00:00:00Z"),  # superseded re-run
        make_record(seed=0, top1=91.0, created="2026-11-02T00:00:00Z"),
        make_record(seed=1, top1=70.0, suite_version=0),  # older suite version
    ]
    page = render(recs)[f"{SUITE}.md"]
    assert "| 91.00 (n=1) |" in page and "50.00" not in page and "70.00" not in page
    assert "1 record from older suite versions not shown" in page
    assert "1 record superseded by a later run" in page


def test_missing_hardware_and_no_plot():
    page = render([make_record(hardware=False)])
    assert f"{SUITE}-pareto.png" not in page
    text = page[f"{SUITE}.md"]
    assert "Pareto" not in text and "| 16× | 16.0× | — | 91.00 (n=1) | — | 91.00 | -1.00 (n=1) | 1 | 1 | 1/1 met expect |" in text
    assert "Storage" not in text and "MACs" not in text.split("Metrics in percent")[1].split("\n\n", 1)[1]


def test_empty_store():
    out = render([])
    assert list(out) == ["README.md"] and "No results yet." in out["README.md"]


def test_write_leaderboards_writes_and_removes_stale(tmp_path):
    store = ResultStore(tmp_path / "results")
    for rec in synthetic_store():
        store.append(rec)
    out_dir = tmp_path / "leaderboards"
    paths = write_leaderboards(store.root, out_dir)
    names = sorted(p.name for p in paths)
    assert names == sorted(render(store.records()))
    assert all(p.is_file() for p in paths)
    md = {p.name: p.read_bytes() for p in paths if p.suffix == ".md"}

    # a stale generated page and plot, and a hand-written note that must survive
    (out_dir / "old-suite.md").write_text(GENERATED_MARKER + "\n# old\n")
    (out_dir / "old-suite-pareto.png").write_bytes(b"\x89PNG")
    (out_dir / "NOTES.md").write_text("# hand-written\n")
    assert write_leaderboards(store.root, out_dir) == paths
    # kept unless asked: a run removes no page it did not regenerate
    assert (out_dir / "old-suite.md").exists() and (out_dir / "old-suite-pareto.png").exists()
    assert write_leaderboards(store.root, out_dir, prune=True) == paths
    assert not (out_dir / "old-suite.md").exists() and not (out_dir / "old-suite-pareto.png").exists()
    assert (out_dir / "NOTES.md").exists()
    assert {p.name: p.read_bytes() for p in paths if p.suffix == ".md"} == md
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]

    # the directory follows the store: rebuild it without the second suite
    store2 = ResultStore(tmp_path / "results2")
    for rec in synthetic_store():
        if rec["suite"] == SUITE:
            store2.append(rec)
    write_leaderboards(store2.root, out_dir, prune=True)
    assert not (out_dir / "vgg16-cifar10.md").exists() and not (out_dir / "vgg16-cifar10-pareto.png").exists()
    assert (out_dir / f"{SUITE}.md").read_bytes() == md[f"{SUITE}.md"]


def test_structured_vs_unstructured_section():
    recs = []
    for seed in range(2):
        # unstructured reaches 40x but pays for its index: 40 * 0.8 = 32x incl. index
        recs.append(make_record(protocol="equal_accuracy", structure="unstructured", rate=None, seed=seed,
                                rate_found=40.0))
        # filter reaches only 30x, storage 30 * 0.8 = 24x
        recs.append(make_record(protocol="equal_accuracy", structure="filter", rate=None, seed=seed, rate_found=30.0))
    page = render(recs)[f"{SUITE}.md"]
    section = page.split("## Structured vs non-structured at equal accuracy", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| magnitude v1"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # columns: method, unstructured rate, unstructured storage, filter rate, filter storage, best
    assert cells[1].startswith("40.0") and cells[3].startswith("30.0")
    assert cells[2] == "32.0×" and cells[4] == "24.0×"
    assert cells[5] == "unstructured"


def test_structure_section_averages_rates_geometrically_and_counts_seeds():
    recs = []
    for seed, found in enumerate((4.0, 16.0, None)):
        recs.append(make_record(protocol="equal_accuracy", structure="unstructured", rate=None, seed=seed,
                                rate_found=found))
        recs.append(make_record(protocol="equal_accuracy", structure="filter", rate=None, seed=seed, rate_found=None))
    section = render(recs)[f"{SUITE}.md"].split("## Structured vs non-structured at equal accuracy", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| magnitude v1"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "8.00× (2 of 3 seeds)"  # sqrt(4 * 16), not (4 + 16) / 2
    assert cells[3] == "— (0 of 3 seeds)"


def test_structure_section_absent_without_both_kinds():
    recs = [make_record(protocol="equal_accuracy", structure="unstructured", rate=None, rate_found=40.0)]
    assert "Structured vs non-structured" not in render(recs)[f"{SUITE}.md"]


def test_level_set_is_labelled_by_its_size():
    rec = make_record(quant={"bits": 4, "scheme": "levels", "levels": [-0.1, -0.05, 0.05, 0.1]})
    assert "16× + 4-level set" in render([rec])[f"{SUITE}.md"]


def test_a_missing_store_is_an_error_that_deletes_nothing(tmp_path, capsys):
    from prunebench.cli import main

    out_dir = tmp_path / "boards"
    out_dir.mkdir()
    (out_dir / "s.md").write_text(GENERATED_MARKER + "\n# s\n")
    with pytest.raises(FileNotFoundError, match="nothing was written or deleted"):
        write_leaderboards(tmp_path / "resluts", out_dir, prune=True)
    assert main(["leaderboard", "--results", str(tmp_path / "resluts"), "--out", str(out_dir), "--prune"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert [p.name for p in out_dir.iterdir()] == ["s.md"]


def test_one_bad_record_or_suite_is_reported_and_the_rest_rendered():
    recs = synthetic_store()
    recs.append("not a record")  # cannot be read at all
    recs.append(make_record(suite="README", seed=0, top1=50.0))  # its page would be the index
    recs.append(make_record(suite="overflow", seed=0, top1=1e308, dense=1e308))
    problems = []
    out = render(recs, problems)
    assert f"{SUITE}.md" in out and "vgg16-cifar10.md" in out and "README.md" in out
    assert any(p.startswith("record skipped") for p in problems)
    assert any("suite 'README' skipped: its page name 'README.md' collides" in p for p in problems)
    assert "# README" not in out["README.md"]


def test_paired_differences_against_the_reference_method():
    """Same seed, same dense model: the pairing removes the seeds' own spread."""
    recs = []
    for seed, (mag, rnd) in enumerate(((90.0, 88.0), (92.0, 90.5), (94.0, 92.0))):
        for method, top1 in (("magnitude", mag), ("random", rnd)):
            rec = make_record(method=method, seed=seed, top1=top1)
            rec["reference_method"] = "magnitude"
            rec["dense_key"] = f"dense-{seed}"
            recs.append(rec)
    page = render(recs)[f"{SUITE}.md"]
    assert "Δ top1 vs magnitude (paired, 95% CI)" in page
    rnd = next(line for line in page.splitlines() if line.startswith("| random v1 | 16×"))
    mag = next(line for line in page.splitlines() if line.startswith("| magnitude v1 | 16×"))
    # differences -2.0, -1.5, -2.0: mean -1.83, SD 0.289, t(2) 4.303 -> half-width 0.72
    assert "| -1.83 [-2.55, -1.12] (n=3) |" in rnd
    assert "| reference |" in mag
    # unpaired, the two rows overlap: 92.00 ± 2.00 against 90.17 ± 2.02
    assert "| 92.00 ± 2.00 |" in mag and "| 90.17 ± 2.02 |" in rnd
    # without a reference method named, no such column
    for rec in recs:
        del rec["reference_method"]
    assert "paired" not in render(recs)[f"{SUITE}.md"]


def test_equal_accuracy_rows_with_every_seed_rank_first():
    recs = []
    for seed, (a, b) in enumerate(((8.0, 64.0), (8.0, None), (8.0, 64.0))):
        recs.append(make_record(method="magnitude", protocol="equal_accuracy", structure="unstructured", rate=None,
                                seed=seed, rate_found=a))
        recs.append(make_record(method="random", protocol="equal_accuracy", structure="unstructured", rate=None,
                                seed=seed, rate_found=b, status="passed"))
    page = render(recs)[f"{SUITE}.md"]
    # random's mean rate is higher, but one seed found none: it ranks below the complete row
    assert page.index("| magnitude v1 | 8.00×") < page.index("| random v1 | 64.0×")
    assert "| 64.0, 64.0, 1 none |" in page

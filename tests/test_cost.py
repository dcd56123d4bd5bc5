"""prunebench cost: compute hours and sittings from records alone."""

import pytest

from prunebench.cli import main
from prunebench.report.cost import cost_rows, cost_table, sittings


def _rec(created, wall, *, threads=1, budget=1.0, protocol="equal_compression", device="cpu",
         dense_key="d0", dense_s=None, suite="s"):
    return {"suite": suite, "suite_version": 2, "protocol": protocol, "budget_epochs": budget, "device": device,
            "created": created, "wall_time_s": wall, "torch_threads": threads, "dense_key": dense_key,
            "dense_train_time_s": dense_s}


RECORDS = [
    _rec("2026-12-04T10:00:00Z", 1800, threads=2, dense_s=720),
    _rec("2026-12-04T10:20:00Z", 1800, threads=2, dense_s=720),  # the same dense model: counted once
    _rec("2026-12-04T13:00:00Z", 3600, threads=1, dense_key="d1", dense_s=360),  # after a 2 h 40 min stop
    _rec("2026-12-04T13:05:00Z", 600, budget=3.0, dense_key="d0", dense_s=720),  # d0 again: not counted again
    _rec("2026-12-04T13:06:00Z", 900, device="cuda", threads=8, budget=3.0),  # one accelerator, not 8 cores
    _rec("2026-12-04T13:07:00Z", None, budget=3.0),
]


def test_hours_and_sittings():
    rows = {(r["budget_epochs"], r["device"]): r for r in cost_rows(RECORDS)}
    b1 = rows[(1.0, "cpu")]
    assert b1["points"] == 3
    assert b1["point_hours"] == pytest.approx((1800 * 2 * 2 + 3600) / 3600)
    assert b1["dense_hours"] == pytest.approx((720 + 360) / 3600)
    assert b1["sittings"] == [("2026-12-04 10:00", "10:20", 2), ("2026-12-04 13:00", "13:00", 1)]
    b3 = rows[(3.0, "cpu")]
    assert b3["point_hours"] == pytest.approx(600 / 3600) and b3["dense_hours"] == 0
    assert b3["points_without_time"] == 1
    assert rows[(3.0, "cuda")]["point_hours"] == pytest.approx(900 / 3600)


def test_sittings_split_at_the_gap():
    assert [n for _, _, n in sittings(RECORDS, gap_s=301)] == [1, 1, 4]
    assert [n for _, _, n in sittings(RECORDS, gap_s=300)] == [1, 1, 1, 3]  # 13:00 to 13:05 is not under 300 s


def test_table_and_command(tmp_path, capsys):
    text = cost_table(RECORDS)
    assert "| s " in text and "(+1 untimed)" in text
    assert text.endswith(f"6 points, {(7200 + 3600 + 1080 + 600 + 900) / 3600:.2f} hours in all "
                         "(core-hours on CPU: wall time x threads)")
    assert main(["cost", "--results", str(tmp_path / "empty")]) == 1
    assert "no records" in capsys.readouterr().err

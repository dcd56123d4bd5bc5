import math

import pytest

from prunebench.protocols import SearchStep, search_max_rate


def curve_run(dense=90.0, slope=2.0, tol=5.0, calls=None):
    """Accuracy falls by ``slope`` points per doubling of the rate."""

    def run(rate):
        acc = dense - slope * math.log2(rate)
        if calls is not None:
            calls.append(rate)
        return SearchStep(rate, acc, dense - acc <= tol)

    return run


def test_finds_boundary_of_monotone_curve():
    # within 5 points while 2*log2(r) <= 5, i.e. r <= 2**2.5 = 5.657
    calls = []
    res = search_max_rate(curve_run(calls=calls), lo=2, hi=512, steps=8)
    assert res.runs == 10 == len(calls)
    assert res.rate_found <= 2**2.5
    # bracket shrinks to (512/2)^(1/2^8): the answer is that close to the truth
    assert res.rate_found >= 2**2.5 / (256 ** (1 / 256))
    assert res.best.rate == res.rate_found


def test_lo_failing_gives_none_after_one_run():
    res = search_max_rate(curve_run(tol=0.5), lo=2, hi=64, steps=5)
    assert res.rate_found is None and res.runs == 1 and res.best is None


def test_hi_passing_stops_after_two_runs():
    res = search_max_rate(curve_run(tol=100), lo=2, hi=64, steps=5)
    assert res.rate_found == 64 and res.runs == 2


def test_bad_bounds():
    with pytest.raises(ValueError, match="lo=8"):
        search_max_rate(curve_run(), lo=8, hi=4, steps=2)


def _curve_many(boundary=37.0, calls=None):
    def many(rates):
        if calls is not None:
            calls.append(list(rates))
        return [SearchStep(r, None, r <= boundary) for r in rates]
    return many


def test_rounds_reach_the_bisection_resolution_in_three_rounds():
    from prunebench.protocols.equal_accuracy import search_max_rate_rounds

    calls = []
    res = search_max_rate_rounds(_curve_many(calls=calls), lo=2, hi=512, steps=6, parallel=4)
    assert res.rounds == len(calls) == 3 and res.runs == 12
    assert calls[0][0] == 2 and calls[0][-1] == 512  # both ends, exactly
    resolution = 256 ** (1 / 64)
    assert res.rate_found <= 37.0 < res.rate_found * resolution
    seq = search_max_rate(curve_run(tol=5.0), lo=2, hi=512, steps=6)  # bisection: 2 + 6 runs, one per round
    assert seq.runs == 8 and seq.rounds == 8


def test_rounds_edges_and_bad_arguments():
    from prunebench.protocols.equal_accuracy import search_max_rate_rounds

    assert search_max_rate_rounds(_curve_many(boundary=1.5), 2, 512, 6, 4).rate_found is None
    top = search_max_rate_rounds(_curve_many(boundary=1e9), 2, 512, 6, 4)
    assert top.rate_found == 512 and top.rounds == 1
    with pytest.raises(ValueError, match="at least 2 probes"):
        search_max_rate_rounds(_curve_many(), 2, 512, 6, 1)
    # a noisy pass above the first failure does not move the answer past the bracket
    noisy = search_max_rate_rounds(lambda rs: [SearchStep(r, None, r <= 37 or 100 < r < 200) for r in rs],
                                   2, 512, 6, 4)
    assert noisy.rate_found <= 37 and noisy.best.rate == noisy.rate_found

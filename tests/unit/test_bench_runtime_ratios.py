"""``bench.bench_runtime``'s per-round ratios: each round's two commands paired, the median of
their ratios taken, so drift between rounds cancels (pure arithmetic, no root)."""

from __future__ import annotations

from bench.bench_runtime import BRIDGE, EXEC, NONE, RUNC, _medians_and_pairs, paired_label


def test_each_round_is_paired_with_its_own_reference() -> None:
    # The machine halves its speed after two rounds: every command takes twice as long.
    times = {BRIDGE: [15.0, 15.0, 30.0, 30.0, 30.0], RUNC: [10.0, 10.0, 20.0, 20.0, 20.0]}
    out = _medians_and_pairs(times)
    assert out[BRIDGE] == 30.0
    assert out[RUNC] == 20.0
    assert out[paired_label(BRIDGE, RUNC)] == 1.5


def test_the_per_round_ratio_is_not_the_ratio_of_medians() -> None:
    """Slow rounds of one command against quick ones of the other: the medians pair them,
    the rounds do not."""
    times = {NONE: [10.0, 10.0, 40.0], RUNC: [10.0, 40.0, 40.0]}
    out = _medians_and_pairs(times)
    assert out[NONE] / out[RUNC] == 0.25
    assert out[paired_label(NONE, RUNC)] == 1.0


def test_a_pair_missing_a_side_is_left_out() -> None:
    out = _medians_and_pairs({EXEC: [1.0, 2.0, 3.0]})
    assert out == {EXEC: 2.0}


def test_the_plugin_benchmark_pairs_each_variant_with_the_reference_round_by_round() -> None:
    from bench.bench_plugins import DEFAULT, IN_PROCESS, REFERENCE, _per_round_row

    rounds = {REFERENCE: [10.0, 20.0, 20.0], DEFAULT: [5.0, 10.0, 14.0],
              IN_PROCESS: [30.0, 50.0, 40.0]}
    assert _per_round_row(rounds).split()[-2:] == ["0.50x", "2.50x"]

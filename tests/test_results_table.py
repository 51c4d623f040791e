"""The terminal table `sagebench eval` prints (``sagebench.results.format_table``).

One row per strategy and one column per budget: offloaded accuracy in %, both ends of its 95%
interval, the ceiling ratio; then the system accuracy per budget, and for byte budgets or a
codec the mean units and bytes sent. Read against the numbers of ``small_run``'s results.
"""

from __future__ import annotations

import copy

from sagebench.results import format_table


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.split("|")]


def test_one_row_per_strategy_and_one_column_per_budget_with_interval_and_ratio(small_run):
    _, results = small_run
    text = format_table(results)
    lines = text.splitlines()
    bench = results["benchmark"]
    assert lines[0].startswith(f"benchmark {bench['name']}  ({bench['dataset']}, {results['num_images']} images")
    assert f"offloaded {results['num_offloaded']}/{results['num_images']}" in lines[1]
    header = next(i for i, line in enumerate(lines) if line.startswith("strategy"))
    assert _cells(lines[header]) == ["strategy", "B=4", "B=8"]
    rows = {(r["strategy"], r["budget"]): r for r in results["results"]}
    strategies = list(dict.fromkeys(r["strategy"] for r in results["results"]))
    body = lines[header + 2:header + 2 + len(strategies)]
    for strategy, line in zip(strategies, body):
        cells = _cells(line)
        assert cells[0] == strategy
        for budget, cell in zip((4, 8), cells[1:]):
            r = rows[(strategy, budget)]
            low, high = r["offloaded_accuracy_ci"]
            assert cell == (f"{100 * r['offloaded_accuracy']:.1f} [{100 * low:.1f},{100 * high:.1f}] "
                            f"({r['ceiling_ratio']:.2f})")
    overall = lines[-1]
    assert overall.startswith("overall (system) accuracy % per budget: ")
    for strategy in strategies:
        figures = " ".join(f"{100 * rows[(strategy, b)]['overall_accuracy']:.1f}" for b in (4, 8))
        assert f"{strategy}: {figures}" in overall
    assert "codec" not in text  # raw pixels counted by patches: nothing more to say


def test_byte_budgets_a_codec_and_missing_figures(small_run):
    """Byte budgets name the column by bytes and add the units/bytes line; a cell without an offloaded image
    reads n/a (no interval, no ratio), and rows without intervals get narrower cells."""
    _, results = small_run
    res = copy.deepcopy(results)
    res["transmission"] = {**res["transmission"], "budget_unit": "bytes", "codec": {"name": "jpeg", "quality": 50}}
    for r in res["results"]:
        r.pop("offloaded_accuracy_ci")
    first = res["results"][0]
    first.update(offloaded_accuracy=None, ceiling_ratio=None, units_sent=None)
    text = format_table(res)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("strategy"))
    assert header.split(" | ")[1:] == [f"{'bytes=4':>13}", f"{'bytes=8':>13}"]  # 25 wide with intervals
    assert not [line for line in lines if " | " in line and " [" in line]
    row = next(line for line in lines if line.startswith(first["strategy"]))
    assert _cells(row)[1] == "n/a"
    codec = lines[-1]
    assert codec.startswith("codec jpeg quality 50: mean units/bytes sent per request: ")
    second = next(r for r in res["results"] if r["strategy"] == first["strategy"] and r is not first)
    assert f"{first['strategy']}: n/a {second['units_sent']:.1f}/{second['bytes_sent']:.0f}" in codec


def test_an_asymmetric_interval_is_shown_with_both_ends_not_as_one_half_width(small_run):
    """Before: ``95.0+-25.0``, the longer side (as if the upper end could pass 100)."""
    _, results = small_run
    res = copy.deepcopy(results)
    row = res["results"][0]
    row.update(offloaded_accuracy=0.95, offloaded_accuracy_ci=[0.70, 0.99], ceiling_ratio=0.9)
    table = format_table(res)
    assert "95.0 [70.0,99.0] (0.90)" in table and "+-" not in table


def test_typed_results_as_a_long_and_a_wide_dataframe(small_run):
    """`RunResults.to_dataframe()`: one row per (strategy, budget) with each interval's ends; wide=True:
    strategies x budgets of one metric, with its interval's ends as column levels."""
    from sagebench.results import RunResults

    _, results = small_run
    res = RunResults.from_json({k: v for k, v in results.items() if k not in ("output_dir", "report")})
    long = res.to_dataframe()
    assert len(long) == len(results["results"])
    first = results["results"][0]
    got = long[(long.strategy == first["strategy"]) & (long.budget == first["budget"])].iloc[0]
    assert got["offloaded_accuracy"] == first["offloaded_accuracy"]
    assert [got["offloaded_accuracy_low"], got["offloaded_accuracy_high"]] == first["offloaded_accuracy_ci"]
    wide = res.to_dataframe(wide=True)
    assert list(wide.index) == res.strategy_labels and sorted(wide.columns.levels[0]) == [
        "high", "low", "offloaded_accuracy"]
    assert wide.loc[first["strategy"], ("offloaded_accuracy", first["budget"])] == first["offloaded_accuracy"]
    assert wide.loc[first["strategy"], ("low", first["budget"])] == first["offloaded_accuracy_ci"][0]


def test_the_dataframe_has_latency_per_channel_and_takes_the_report_metric_names(small_run):
    """Latency (a dict per row) was dropped from the long frame; ``metric="ratio"`` / ``"latency"`` as in `report`."""
    from sagebench.results import RunResults

    _, results = small_run
    res = RunResults.from_json(results)
    first = results["results"][0]
    channels = list(first["latency_ms"])
    long = res.to_dataframe()
    got = long[(long.strategy == first["strategy"]) & (long.budget == first["budget"])].iloc[0]
    assert [got[f"latency_ms_{ch}"] for ch in channels] == [first["latency_ms"][ch] for ch in channels]
    ratio = res.to_dataframe(wide=True, metric="ratio")
    assert ratio.loc[first["strategy"], ("ceiling_ratio", first["budget"])] == first["ceiling_ratio"]
    latency = res.to_dataframe(wide=True, metric="latency", channel=channels[-1])
    assert latency.loc[first["strategy"], (f"latency_ms_{channels[-1]}", first["budget"])] == \
        first["latency_ms"][channels[-1]]

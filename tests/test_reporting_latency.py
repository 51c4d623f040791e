"""latency.png: one panel (a panel per channel repeated the same curves), one latency axis per channel with
readable ticks, strategies styled as in curves.png."""

from __future__ import annotations

import itertools

import pytest

from sagebench.reporting import plots

# the shipped channels (conf/channel/): latencies from 5 ms to 1.7 s, the fast ones over a fraction of a ms
CHANNELS = [{"name": "nb_iot", "display_name": "NB-IoT", "uplink_kbps": 62.5, "rtt_ms": 1600.0},
            {"name": "lte_m", "display_name": "LTE-M", "uplink_kbps": 1000.0, "rtt_ms": 15.0},
            {"name": "lte", "display_name": "LTE", "uplink_kbps": 51000.0, "rtt_ms": 20.0},
            {"name": "nr_5g", "display_name": "5G", "uplink_kbps": 50000.0, "rtt_ms": 8.0},
            {"name": "wifi", "display_name": "Wi-Fi", "uplink_kbps": 72200.0, "rtt_ms": 5.0}]
BUDGETS = [5, 10, 16, 21, 31]


def _results(strategies: int = 12) -> dict:
    rows = []
    for i in range(strategies):
        for b in BUDGETS:
            sent = 48.0 * b  # raw patches of a 32x32 CIFAR image: 48 bytes each
            rows.append({"strategy": f"s{i:02d}", "budget": b, "offloaded_accuracy": 0.2 + 0.01 * b + 0.002 * i,
                         "bytes_sent": sent,
                         "latency_ms": {c["name"]: round(c["rtt_ms"] + 8 * sent / c["uplink_kbps"], 3)
                                        for c in CHANNELS}})
    return {"results": rows, "ceiling": {"offloaded_accuracy": 0.62},
            "strategies": [{"label": "s03", "oracle": True}],
            "transmission": {"codec": {"name": "raw"}, "channels": CHANNELS}}


@pytest.fixture
def drawn(monkeypatch):
    out = {}
    real_save = plots.save

    def keep(fig, path):
        result = real_save(fig, path)  # draws the figure: positions are final
        out["fig"] = fig
        return result

    monkeypatch.setattr(plots, "save", keep)
    return out


def test_one_panel_with_a_latency_axis_per_channel(tmp_path, drawn):
    assert plots.plot_latency(_results(), tmp_path / "latency.png").is_file()
    fig = drawn["fig"]
    (ax,) = fig.axes  # one panel: a panel per channel was the same curves over a rescaled x axis
    assert len(ax.lines) == 12 + 1  # every strategy once, and the ceiling
    axes = ax.child_axes
    assert [a.get_xlabel().split(" latency")[0] for a in axes] == [c["display_name"] for c in CHANNELS]
    # each channel's axis reads rtt + 8 * bytes / uplink under the bytes of the main axis
    for a, c in zip(axes, CHANNELS):
        lo, hi = ax.get_xlim()
        assert a.get_xlim() == pytest.approx((c["rtt_ms"] + 8 * lo / c["uplink_kbps"],
                                              c["rtt_ms"] + 8 * hi / c["uplink_kbps"]))
    oracle = next(line for line in ax.lines if line.get_label() == "s03 (oracle)")
    assert oracle.get_linestyle() == ":" and oracle.get_color() not in plots.PALETTE
    colours = {(line.get_color(), line.get_linestyle()) for line in ax.lines if "oracle" not in line.get_label()}
    assert len(colours) == 12  # 11 strategies + the ceiling, all told apart


def _visible_tick_labels(axis, renderer):
    low, high = sorted(axis.get_view_interval())
    return [t for t, loc in zip(axis.get_ticklabels(), axis.get_ticklocs())
            if t.get_visible() and t.get_text() and low - 1e-9 <= loc <= high + 1e-9]


@pytest.mark.parametrize("budgets", [BUDGETS, [5]], ids=["five budgets", "one budget"])
def test_no_tick_label_or_axis_name_overprints_another(tmp_path, drawn, budgets):
    results = _results()
    results["results"] = [r for r in results["results"] if r["budget"] in budgets]
    plots.plot_latency(results, tmp_path / "latency.png")
    fig = drawn["fig"]
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    texts = []
    for a in [ax, *ax.child_axes]:
        labels = _visible_tick_labels(a.xaxis, renderer)
        assert len(labels) >= 3, f"{a.get_xlabel()!r}: too few ticks to read a latency off"
        assert len({t.get_text() for t in labels}) == len(labels), f"{a.get_xlabel()!r}: repeated tick labels"
        texts += labels + [a.xaxis.label]
    texts += _visible_tick_labels(ax.yaxis, renderer)
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), f"{ta!r} overprints {tb!r}"
    for name, box in boxes:  # nothing cut off at the figure's edges
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height, name
    (legend,) = fig.legends
    assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_rows_without_bytes_sent_are_placed_from_their_latency(tmp_path, drawn):
    results = _results(2)
    for r in results["results"]:
        del r["bytes_sent"]
    plots.plot_latency(results, tmp_path / "latency.png")
    (ax,) = drawn["fig"].axes
    assert list(ax.lines[0].get_xdata()) == pytest.approx([48.0 * b for b in BUDGETS], abs=0.1)


def test_a_run_without_channels_has_no_latency_figure(tmp_path):
    results = _results(1)
    results["transmission"]["channels"] = []
    assert plots.plot_latency(results, tmp_path / "latency.png") is None

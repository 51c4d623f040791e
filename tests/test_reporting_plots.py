"""Curves that scale: 20 strategies drawn apart, references styled apart, the legend off the data, no
panel that repeats another."""

from __future__ import annotations

from sagebench.reporting import plots


def test_twenty_strategies_get_twenty_distinct_styles_and_references_their_own():
    styles = [plots.line_style(i) for i in range(20)]
    assert len({(s["color"], s["linestyle"]) for s in styles}) == 20
    references = [plots.line_style(i, reference=True) for i in range(3)]
    assert all(r["color"] not in plots.PALETTE and r["linestyle"] == ":" for r in references)
    assert len({(r["color"], r["marker"]) for r in references}) == 3  # two oracles are still told apart


def _series(n: int, oracle: int | None = None) -> list[plots.Series]:
    return [plots.Series(f"strategy_{i:02d}", [4, 8, 16], [0.3 + 0.01 * i, 0.4, 0.5], [0.5, 0.6, 0.8],
                         dashed=i == oracle) for i in range(n)]


def test_the_legend_sits_outside_the_data_and_the_ratio_is_an_axis_not_a_second_panel(tmp_path, monkeypatch):
    drawn = {}
    real_save = plots.save

    def keep(fig, path):
        out = real_save(fig, path)  # draws the figure: the layout is final
        drawn["fig"] = fig
        return out

    monkeypatch.setattr(plots, "save", keep)
    plots.plot_curves(_series(20, oracle=3), tmp_path / "curves.png", title="t", ceiling=0.62, num_patches=64)
    fig = drawn["fig"]
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    main = fig.axes[0]
    assert not box.overlaps(main.get_window_extent(renderer)), "the legend covers the data"
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width + 1, "the legend is cut off"
    assert len(legend.get_texts()) == 21  # 20 strategies + the ceiling
    # one panel of lines (+ its ceiling-ratio axis): a ratio panel would be the first divided by a constant
    assert [ax.get_ylabel() for ax in fig.axes] == ["offloaded accuracy (%)", "ceiling ratio"]
    assert len(fig.axes[1].lines) == 0
    low, high = main.get_ylim()
    assert fig.axes[1].get_ylim() == (low / 62.0, high / 62.0)
    oracle_line = next(line for line in main.lines if line.get_label() == "strategy_03")
    assert oracle_line.get_linestyle() == ":" and oracle_line.get_color() == "0.45"


def test_without_a_common_ceiling_both_panels_are_drawn(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(plots, "save", lambda fig, path: drawn.setdefault("fig", fig))
    plots.plot_curves(_series(3), tmp_path / "curves.png", ceiling=None)
    assert [ax.get_ylabel() for ax in drawn["fig"].axes] == ["offloaded accuracy (%)", "ceiling ratio"]
    assert all(ax.lines for ax in drawn["fig"].axes)


def test_a_zero_ceiling_still_draws_the_curves(tmp_path):
    """A random-init server can be right on no offloaded image: the ratio axis divided by zero, no curves.png."""
    path = plots.plot_curves(_series(2), tmp_path / "curves.png", ceiling=0.0, num_patches=64)
    assert path.is_file() and path.stat().st_size > 1000

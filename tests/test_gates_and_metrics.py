"""Gate arithmetic and the exact metric arithmetic on hand-made records."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sagebench.errors import ConfigError
from sagebench.gates import OffloadAll, get_gate, min_entropy, offload_all, offload_min_entropy
from sagebench.metrics import SweepLayout, coverage, summarize
from sagebench.sweep.records import NOT_OFFLOADED, SweepRecords
from sagebench.testing import make_evidence


def test_min_entropy_is_minus_log2_of_the_top_probability():
    p = torch.tensor([[0.5, 0.25, 0.25], [0.9, 0.05, 0.05], [1 / 3, 1 / 3, 1 / 3]])
    got = min_entropy(p.log())
    torch.testing.assert_close(got, torch.tensor([1.0, -math.log2(0.9), math.log2(3)]))


def test_min_entropy_gate_offloads_strictly_above_the_threshold():
    p = torch.tensor([[0.5, 0.5], [0.49, 0.51], [0.6, 0.4], [0.2, 0.8]])
    # -log2(max p): 1.0, 0.971, 0.737, 0.322 -> only > 1.0 offloads; max p < 0.5 means offload at eta=1
    assert offload_min_entropy(p.log(), 1.0).tolist() == [False, False, False, False]
    assert offload_min_entropy(p.log(), 0.5).tolist() == [True, True, True, False]
    three = torch.tensor([[0.4, 0.3, 0.3]]).log()
    assert offload_min_entropy(three, 1.0).tolist() == [True]


def test_offload_all_offloads_everything_and_unknown_gates_are_refused():
    assert offload_all(torch.zeros(5, 3)).all()
    gate = get_gate("all")
    assert isinstance(gate, OffloadAll) and gate.decide(make_evidence(b=5)).tolist() == [True] * 5
    with pytest.raises(ConfigError, match="Known gates: all, min_entropy"):
        get_gate("entropy")


def test_coverage_counts_coarse_2x2_cells_with_edge_cells_kept():
    # 7x7 grid -> 4x4 = 16 coarse cells (the last row/column of cells is 1 patch wide)
    idx = torch.tensor([[0, 1, 7, 8], [0, 2, 4, 6], [48, 47, 41, 40], [48, 42, 6, 0]])
    torch.testing.assert_close(coverage(idx, (7, 7)), torch.tensor([1 / 16, 4 / 16, 4 / 16, 4 / 16], dtype=torch.float64))
    full = torch.arange(196).unsqueeze(0)
    assert coverage(full, (14, 14)).item() == 1.0


def _layout():
    return SweepLayout((("a", 2), ("b", 2)))


def _row(layout, sid, label, edge, off, ceil, preds):
    r = np.full(layout.num_columns, NOT_OFFLOADED, dtype=np.float64)
    c = layout.column
    r[[c("sample_id"), c("label"), c("edge_pred"), c("offloaded"), c("ceiling_pred")]] = [sid, label, edge, off, ceil]
    for j, p in enumerate(preds):
        if off:
            r[[c("pred", j), c("coverage", j), c("units", j), c("bytes", j)]] = [p, 0.5 + 0.25 * j, 2, 96]
    return r


def test_metrics_are_exact_counts_over_the_right_sets():
    lay = _layout()
    rows = np.stack([
        _row(lay, 0, 1, 1, 0, -1, [-1, -1]),  # kept, edge right
        _row(lay, 1, 2, 0, 0, -1, [-1, -1]),  # kept, edge wrong
        _row(lay, 2, 3, 0, 1, 3, [3, 0]),     # offloaded: ceiling right, a right, b wrong
        _row(lay, 3, 4, 0, 1, 4, [0, 0]),     # offloaded: ceiling right, both wrong
        _row(lay, 4, 5, 0, 1, 0, [5, 5]),     # offloaded: ceiling wrong, both right
    ])
    s = summarize(rows, lay)
    assert s["num_images"] == 5 and s["num_offloaded"] == 3
    assert s["edge_accuracy"] == pytest.approx(1 / 5)
    assert {k: s["ceiling"][k] for k in ("offloaded_accuracy", "overall_accuracy")} == {
        "offloaded_accuracy": pytest.approx(2 / 3), "overall_accuracy": pytest.approx(3 / 5)}
    # every accuracy carries its 95% Wilson interval: 2 of 3 -> [0.2077, 0.9385] (closed form, z = 1.96)
    assert s["ceiling"]["offloaded_accuracy_ci"] == pytest.approx([0.20766, 0.93851], abs=1e-4)
    assert s["ceiling"]["overall_accuracy_ci"] == pytest.approx([0.23072, 0.88236], abs=1e-4)  # 3 of 5
    a, b = s["results"]
    assert a["offloaded_accuracy"] == pytest.approx(2 / 3) and a["ceiling_ratio"] == pytest.approx(1.0)
    assert a["overall_accuracy"] == pytest.approx(3 / 5)
    assert b["offloaded_accuracy"] == pytest.approx(1 / 3) and b["ceiling_ratio"] == pytest.approx(0.5)
    assert b["overall_accuracy"] == pytest.approx(2 / 5)
    assert a["coverage"] == pytest.approx(0.5) and b["coverage"] == pytest.approx(0.75)
    assert a["units_sent"] == 2 and a["bytes_sent"] == 96


def test_no_offloaded_image_gives_none_not_a_made_up_number():
    lay = _layout()
    s = summarize(np.stack([_row(lay, 0, 1, 1, 0, -1, [-1, -1])]), lay)
    assert s["ceiling"]["offloaded_accuracy"] is None and s["results"][0]["ceiling_ratio"] is None
    assert s["ceiling"]["overall_accuracy"] == 1.0


def test_records_are_sorted_by_sample_id_and_duplicates_are_caught():
    lay = _layout()
    m = SweepRecords(lay)
    m.update(torch.from_numpy(np.stack([_row(lay, 3, 0, 0, 0, -1, [-1, -1]), _row(lay, 1, 0, 0, 0, -1, [-1, -1])])))
    m.update(torch.from_numpy(np.stack([_row(lay, 2, 0, 0, 0, -1, [-1, -1])])))
    assert m.compute()[:, 0].tolist() == [1, 2, 3]
    m.update(torch.from_numpy(np.stack([_row(lay, 2, 0, 0, 0, -1, [-1, -1])])))
    with pytest.raises(RuntimeError, match="more than once"):
        m.compute()


def test_records_live_in_a_few_large_blocks_not_one_allocation_per_batch(monkeypatch):
    # A per-batch tensor kept for the whole run pins the heap between batches' activations
    # (docs/performance.md, "Memory"); rows are copied into blocks allocated once per many batches.
    lay = _layout()
    monkeypatch.setattr(SweepRecords, "BLOCK_BYTES", 8 * lay.num_columns * 10)  # 10 rows per block
    m = SweepRecords(lay)
    batches = [np.stack([_row(lay, 3 * b + i, b % 2, 0, 0, -1, [-1, -1]) for i in range(3)]) for b in range(9)]
    stored = [m.store(torch.from_numpy(rows)) for rows in batches]
    blocks = {s.untyped_storage().data_ptr() for s in stored}
    assert len(blocks) == 3  # 27 rows, 3 per batch, 10 per block: a batch never straddles two blocks
    for rows, kept in zip(batches, stored):
        assert kept.dtype == torch.float64 and torch.equal(kept, torch.from_numpy(rows))
    assert np.array_equal(m.compute(), np.concatenate(batches))
    m.reset()
    m.update(torch.from_numpy(batches[0]))
    assert m.compute().shape == (3, lay.num_columns)  # reset drops the old rows and their block


def test_a_batch_larger_than_a_block_gets_its_own_block(monkeypatch):
    lay = _layout()
    monkeypatch.setattr(SweepRecords, "BLOCK_BYTES", 8 * lay.num_columns * 2)
    m = SweepRecords(lay)
    rows = np.stack([_row(lay, i, 0, 0, 0, -1, [-1, -1]) for i in range(5)])
    kept = m.store(torch.from_numpy(rows).float())  # float32 in: stored as float64
    assert kept.dtype == torch.float64 and kept.shape == (5, lay.num_columns)
    assert np.array_equal(m.compute(), rows)


def test_records_fall_back_to_ordinary_tensors_where_no_anonymous_mapping_is_available(monkeypatch):
    import mmap

    def refuse(*args, **kwargs):
        raise OSError("no mapping here")

    monkeypatch.setattr(mmap, "mmap", refuse)
    lay = _layout()
    m = SweepRecords(lay)
    rows = np.stack([_row(lay, i, 0, 0, 0, -1, [-1, -1]) for i in (2, 0, 1)])
    m.update(torch.from_numpy(rows))
    assert m.compute()[:, 0].tolist() == [0, 1, 2]


def test_every_row_carries_intervals_that_contain_its_figure():
    """Offloaded and overall accuracy: Wilson; ceiling ratio: a seeded paired bootstrap (same result twice)."""
    rng = np.random.default_rng(0)
    n = 400
    layout = SweepLayout((("a", 4),))
    rows = np.zeros((n, layout.num_columns))
    col = layout.column
    rows[:, col("sample_id")] = np.arange(n)
    rows[:, col("label")] = rng.integers(0, 3, n)
    rows[:, col("edge_pred")] = rows[:, col("label")]
    rows[:, col("offloaded")] = rng.random(n) < 0.5
    rows[:, col("ceiling_pred")] = np.where(rng.random(n) < 0.8, rows[:, col("label")], 9)
    rows[:, col("pred", 0)] = np.where(rng.random(n) < 0.5, rows[:, col("label")], 9)
    first, again = summarize(rows, layout), summarize(rows, layout)
    row = first["results"][0]
    for key in ("offloaded_accuracy", "overall_accuracy", "ceiling_ratio"):
        lo, hi = row[f"{key}_ci"]
        assert lo <= row[key] <= hi and hi - lo > 0.01
    assert row["ceiling_ratio_ci"] == again["results"][0]["ceiling_ratio_ci"]
    n_off = int(rows[:, col("offloaded")].sum())
    k = row["num_correct"]
    p, z = k / n_off, 1.959963984540054
    centre = (p + z * z / (2 * n_off)) / (1 + z * z / n_off)
    half = z / (1 + z * z / n_off) * np.sqrt(p * (1 - p) / n_off + z * z / (4 * n_off * n_off))
    assert row["offloaded_accuracy_ci"] == pytest.approx([centre - half, centre + half], abs=1e-9)
    assert first["intervals"]["confidence"] == 0.95

"""The terminal table shows each accuracy's interval as it is, asymmetric ends included."""

from __future__ import annotations

from sagebench.results.table import format_table


def results(acc: float, ci: list[float]) -> dict:
    row = {"strategy": "sage", "budget": 8, "offloaded_accuracy": acc, "offloaded_accuracy_ci": ci,
           "ceiling_ratio": 0.9, "overall_accuracy": 0.8, "units_sent": 8, "bytes_sent": 100}
    return {"benchmark": {"name": "b", "dataset": "d", "num_images": 10, "edge": {"name": "e"},
                          "server": {"name": "s"}, "gate": "min_entropy", "threshold": 1.0, "num_patches": 64},
            "ceiling": {"offloaded_accuracy": 1.0, "overall_accuracy": 1.0}, "num_offloaded": 5, "num_images": 10,
            "edge_accuracy": 0.5, "results": [row]}


def test_an_asymmetric_interval_is_shown_with_both_ends_not_as_one_half_width():
    """Before: ``95.0+-25.0``, the longer side (the upper end 100 + 20 would be impossible)."""
    table = format_table(results(0.95, [0.70, 0.99]))
    assert "95.0 [70.0,99.0] (0.90)" in table
    assert "+-" not in table

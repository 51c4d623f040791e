"""benchmarks/memory_trace.py's verdict: growth the records explain is flat, a leak is not.

The trace itself needs a long sweep (a benchmark, not a test); the rule that judges it is checked
here on made-up traces.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def memory_trace():
    saved = dict(os.environ)  # the benchmark sets offline defaults for its own process; keep them out of the tests
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("memory_trace", BENCH / "memory_trace.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(BENCH))
        os.environ.clear()
        os.environ.update(saved)
    return mod


def _trace(batches: int, level: float, records_per_batch: float, leak_per_batch: float = 0.0,
           warm_step: float = 40.0) -> list[dict]:
    out = []
    for b in range(batches):
        records = records_per_batch * (b + 1)
        mb = level + (warm_step if b >= 2 else 0.0) + records + leak_per_batch * b
        out.append({"batch": b, "images": 100 * (b + 1), "end_mb": mb, "peak_mb": mb, "records_mb": records,
                    "flushes": b})
    return out


def test_growth_the_records_explain_after_warm_up_is_flat(memory_trace):
    s = memory_trace.summarize(_trace(100, 1000.0, 0.3), warmup=10)
    assert s["flat"]
    assert s["records_growth_mb"] == pytest.approx(0.3 * 90)
    assert s["excess_mb"] == pytest.approx(0.0, abs=1e-9)


def test_a_step_inside_the_warm_up_does_not_count_but_one_after_it_does(memory_trace):
    assert memory_trace.summarize(_trace(100, 1000.0, 0.0, warm_step=200.0), warmup=10)["flat"]
    assert not memory_trace.summarize(_trace(100, 1000.0, 0.0, warm_step=200.0), warmup=2)["flat"]


def test_a_leak_of_one_megabyte_per_batch_is_not_flat(memory_trace):
    s = memory_trace.summarize(_trace(100, 1000.0, 0.3, leak_per_batch=1.0), warmup=10)
    assert not s["flat"] and s["excess_mb"] == pytest.approx(90.0)


def test_a_trace_no_longer_than_its_warm_up_is_refused(memory_trace):
    with pytest.raises(SystemExit, match="more than --warmup"):
        memory_trace.summarize(_trace(4, 1000.0, 0.3), warmup=4)

"""reuse_host_memory: freed tensor memory is reused by the next forward instead of page-faulted in again."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from sagebench.runtime import host_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# One fresh process (the allocator's state is per process): the page faults of a "forward" that
# allocates, fills and frees eight 12 MB buffers, again and again, before and after the tuning.
_PROBE = r"""
import json, resource, torch
from sagebench.runtime.host_memory import keep_freed_memory

def faults_per_round(rounds=7):
    faults = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        xs = [torch.empty(3 * 2**20).fill_(1.0) for _ in range(8)]  # 8 x 12 MB: one forward's activations
        del xs
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return sorted(faults)[rounds // 2]  # the median round

# glibc's starting point, held fixed: every block over 128 KiB is a fresh mmap. (glibc's default
# then raises the threshold as blocks are freed, and trims the heap or not depending on what
# else sits on it, so what it does in a real sweep varies: there, 30-45k faults per forward.)
import ctypes
ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
default = faults_per_round()
state = keep_freed_memory()
faults_per_round(1)  # grows the heap once
tuned = faults_per_round()
print(json.dumps({"default": default, "tuned": tuned, "state": state}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not GLIBC, reason="the tuning applies to glibc's allocator only")
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["state"] == "applied"
    pages = 8 * 12 * 2**20 // 4096  # touched per round
    assert got["default"] > pages * 0.9, got  # fresh pages, faulted in again every round
    assert got["tuned"] < pages / 20, got  # tuned: the same heap memory, still mapped (measured: median 0; single rounds up to 6.1k)


def test_the_state_is_reported_and_applying_twice_is_harmless():
    first = host_memory.keep_freed_memory()
    assert first in ("applied", "unavailable")
    assert host_memory.keep_freed_memory() == first == host_memory.host_memory_state()
    if GLIBC:
        assert first == "applied"


@pytest.mark.slow
@pytest.mark.usefixtures("no_figures")
def test_evaluate_applies_it_and_reports_it(random_models_overrides, tmp_path):
    from sagebench.config import load_config
    from sagebench.sweep.evaluate import evaluate

    res = evaluate(load_config(None, random_models_overrides + ["data.limit=60", "budgets=[4]", f"output_dir={tmp_path / 'run'}"]))
    assert res["timing"]["host_memory"] == ("applied" if GLIBC else "unavailable")

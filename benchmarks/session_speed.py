"""A new strategy against the default benchmark: ``Session.evaluate`` vs a second ``evaluate()`` in one process.

Why: issue 26's target is a new strategy evaluated in seconds once the benchmark is built. This
script builds a session of the default job (``sagebench eval``'s config, CIFAR-10 embedded, W&B
off), defines a strategy here (never seen by any cache), and times, alternating, a second
``evaluate()`` of a config naming it (plots on, as the CLI draws them; ``cache.edge`` as given)
and ``session.evaluate(["my_new_strategy"])``; it checks that both give the same records.

    python benchmarks/session_speed.py --repeats 3 [--cache]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache", action="store_true", help="evaluate() with cache.edge=true (the research-loop cache)")
    p.add_argument("overrides", nargs="*", help="config overrides for both (e.g. data.limit=2000)")
    args = p.parse_args(argv)
    import pyarrow.parquet as pq
    import torch

    import sagebench
    from sagebench import Strategy, register_strategy
    from sagebench.config import load_config

    @register_strategy("my_new_strategy")
    class MyNew(Strategy):
        """Patches nearest the image centre first (defined in this script)."""

        def select(self, evidence, budget: int) -> torch.Tensor:
            rows, cols = evidence.grid
            r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
            dist = ((r - (rows - 1) / 2) ** 2 + (c - (cols - 1) / 2) ** 2).flatten()
            order = torch.sort(dist, stable=True).indices[:budget].to(evidence.attention.device)
            return order.expand(evidence.batch_size, -1)

    tmp = Path(tempfile.mkdtemp())
    base = ["logger=none", "progress=false", *args.overrides]
    if args.cache:
        base += ["cache.edge=true", f"cache.dir={tmp / 'cache'}"]
    out: dict = {"cmd": "benchmarks/session_speed.py " + " ".join(argv or []), "evaluate_s": [], "session_s": [],
                 "evaluate_cpu_s": [], "session_cpu_s": []}
    t = time.perf_counter()
    sagebench.evaluate(load_config(None, [*base, f"output_dir={tmp / 'first'}"]))  # the default job, once
    out["first_evaluate_s"] = round(time.perf_counter() - t, 2)
    print("first evaluate()", out["first_evaluate_s"], "s", flush=True)
    t = time.perf_counter()
    session = sagebench.open_session(load_config(None, base))
    out["session_build_s"] = round(time.perf_counter() - t, 2)
    print("open_session", out["session_build_s"], "s", flush=True)
    for k in range(args.repeats):  # alternating A/B; wall and CPU seconds of this process (all its threads)
        t, c = time.perf_counter(), time.process_time()
        sagebench.evaluate(load_config(None, [*base, "strategies=[my_new_strategy]", f"output_dir={tmp / f'e{k}'}"]))
        out["evaluate_s"].append(round(time.perf_counter() - t, 2))
        out["evaluate_cpu_s"].append(round(time.process_time() - c, 2))
        t, c = time.perf_counter(), time.process_time()
        session.evaluate(["my_new_strategy"])
        out["session_s"].append(round(time.perf_counter() - t, 2))
        out["session_cpu_s"].append(round(time.process_time() - c, 2))
        print("second evaluate()", out["evaluate_s"][-1], "s", out["evaluate_cpu_s"][-1], "CPU s; session.evaluate",
              out["session_s"][-1], "s", out["session_cpu_s"][-1], "CPU s", flush=True)
    same = np.array_equal(session.last_records.rows,
                          pq.read_table(tmp / "e0" / "samples.parquet").to_pandas().to_numpy(dtype=np.float64))
    out["records_equal"] = bool(same)
    out["ratio_median"] = round(float(np.median(out["evaluate_s"]) / np.median(out["session_s"])), 1)
    print(json.dumps(out, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""How close ``Session.evaluate`` is to the server forwards it cannot avoid (the default benchmark).

Why: issue 26 asks for a new strategy in under 5 s on 2 cores. Once a session is built, what is left is the
new strategy's selection and its server forwards. This script measures that floor: in one process, on the
session's own server batches (same images, same batch sizes, same device and threads), it alternates
``session.evaluate([a strategy it was not built with])`` (default ``diversity_only``, not among the
default job's strategies) with a bare loop that runs, per server batch and budget, the
server's token-subset forward on a contiguous slice of that many patches (no selection, no gather, no
records), and prints both and their ratio.

    python benchmarks/session_floor.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--strategy", default="diversity_only", help="a strategy the session was not built with")
    p.add_argument("overrides", nargs="*", help="config overrides (e.g. data.limit=2000)")
    args = p.parse_args(argv)
    import torch

    import sagebench
    from sagebench.transmission.patches import patchify, transmit

    session = sagebench.open_session(overrides=["logger=none", "progress=false", *args.overrides])
    server, budgets = session.sweep.server, list(session.sweep.budgets)
    batches = [b.images for b in session._batches]  # the server batches the run served

    def bare() -> None:
        with torch.inference_mode():
            for images in batches:
                patches = patchify(images, server.patch_size)
                for budget in budgets:
                    idx = torch.arange(budget, device=images.device).expand(images.shape[0], -1)
                    server(transmit(patches, idx, server.grid)).argmax(-1).tolist()

    sess_s, bare_s = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        session.evaluate([args.strategy])
        sess_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        bare()
        bare_s.append(time.perf_counter() - t)
        print(f"session.evaluate {sess_s[-1]:.2f} s; bare server forwards {bare_s[-1]:.2f} s", flush=True)
    ratios = [s / b for s, b in zip(sess_s, bare_s)]
    print(json.dumps({"cmd": "benchmarks/session_floor.py", "offloaded": session.num_offloaded,
                      "server_batches": len(batches), "budgets": budgets, "threads": torch.get_num_threads(),
                      "session_s": [round(x, 2) for x in sess_s], "bare_s": [round(x, 2) for x in bare_s],
                      "ratio_median": round(statistics.median(ratios), 3)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Wall time of one operating-curve run (a list of gate thresholds) against one run per threshold.

Why: a threshold sweep used to mean one process per eta, each paying the start-up (imports, data,
models) and the edge and ceiling passes again. This runs ``sagebench eval`` as a user would (one
process per command), alternating the two sides (curve, separate, curve, ...) so that both see the
same load on a shared machine, and prints the wall seconds of each side and their ratio.

    python benchmarks/curve_vs_separate.py --limit 2000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(overrides: list[str], out: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sagebench.cli", "eval", *overrides, f"output_dir={out}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", default="0.5,1.0,1.5,2.0,2.5")
    parser.add_argument("--limit", type=int, default=2000, help="data.limit (0: all 10,000 images)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    etas = args.thresholds.split(",")
    common = ["logger=none", "progress=false", "edge_cost.images=0"] + ([f"data.limit={args.limit}"] if args.limit else [])
    curve, separate = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            curve.append(run([*common, f"gate.threshold=[{args.thresholds}]"], Path(tmp) / f"curve{k}"))
            separate.append(sum(run([*common, f"gate.threshold={eta}"], Path(tmp) / f"eta{eta}-{k}") for eta in etas))
            passes = json.loads((Path(tmp) / f"curve{k}" / "results.json").read_text())["timing"]["server_passes"]
            print(json.dumps({"repeat": k, "curve_s": round(curve[-1], 1), "separate_s": round(separate[-1], 1),
                              "ratio": round(separate[-1] / curve[-1], 2), "curve_server_passes": passes}), flush=True)
    print(json.dumps({"thresholds": etas, "limit": args.limit, "curve_s": [round(x, 1) for x in curve],
                      "separate_s": [round(x, 1) for x in separate],
                      "separate_over_curve": round(sum(separate) / sum(curve), 2)}))


if __name__ == "__main__":
    main()

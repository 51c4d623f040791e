"""Exact coverage of the paired-difference interval (``sagebench.stats.paired_difference_interval``).

Why exact and not simulated: the interval depends only on the discordant counts (b, c) of n
paired images, and (b, c, n - b - c) is multinomial, so the coverage at (n, p12, p21) is the sum
of the probabilities of the tables whose interval contains p12 - p21. Tables of probability below
1e-12 are left out (their total is printed as ``lost``, a bound on the error). The grid is the one
of issue 24: psi = p12 + p21 in {0.05, 0.1, 0.2, 0.3, 0.5}, d = p12 - p21 in {0, psi/4, psi/2,
3 psi/4, psi} (d = psi: B never beats A), n in {100, 300, 1000, 3000}. Runs in about a minute::

    PYTHONPATH=$PWD python benchmarks/paired_interval_coverage.py [--confidence 0.95] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy.stats import multinomial

from sagebench.stats import tango_interval

PSI = (0.05, 0.1, 0.2, 0.3, 0.5)
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
SIZES = (100, 300, 1000, 3000)


def coverage(n: int, p12: float, p21: float, confidence: float = 0.95) -> tuple[float, float]:
    """``(coverage, probability left out)`` of the interval at n pairs with discordant probabilities p12, p21."""
    def span(p: float) -> np.ndarray:  # counts with non-negligible probability
        sd = np.sqrt(n * p * (1 - p))
        return np.arange(max(0, int(n * p - 9 * sd - 2)), min(n, int(n * p + 9 * sd + 3)) + 1)

    b, c = np.meshgrid(span(p12), span(p21), indexing="ij")
    b, c = b.ravel(), c.ravel()
    keep = b + c <= n
    b, c = b[keep], c[keep]
    prob = multinomial.pmf(np.stack([b, c, n - b - c], 1), n, [p12, p21, 1 - p12 - p21])
    low, high = tango_interval(b, c, n, confidence)
    d = p12 - p21
    covered = (low <= d + 1e-12) & (d - 1e-12 <= high)
    return float(prob[covered].sum()), float(1 - prob.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--json", help="write every grid point here")
    args = parser.parse_args()
    rows = []
    for n in SIZES:
        for psi in PSI:
            for f in FRACTIONS:
                d = f * psi
                cov, lost = coverage(n, (psi + d) / 2, (psi - d) / 2, args.confidence)
                rows.append({"n": n, "psi": psi, "d": d, "coverage": cov, "lost": lost})
                print(f"n={n:5d} psi={psi:.2f} d={d:.4f}: coverage {cov:.4f} (left out {lost:.1e})")
    covs = [r["coverage"] for r in rows]
    worst = min(rows, key=lambda r: r["coverage"])
    print(f"minimum {min(covs):.4f} at n={worst['n']} psi={worst['psi']} d={worst['d']:.4f}; mean {np.mean(covs):.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()

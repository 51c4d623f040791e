"""The terminal table of a run: one row per strategy, one column per budget."""

from __future__ import annotations

from typing import Any


def _interval(row: dict[str, Any] | None) -> str:
    """`` [55.1,64.9]``: the row's 95% interval of offloaded accuracy, in points ('' if none).

    Both ends, not a ``+-`` half width: the Wilson interval is asymmetric near 0 and 1, and one number
    would overstate one side and hide the other.
    """
    ci = (row or {}).get("offloaded_accuracy_ci")
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f" [{100 * ci[0]:.1f},{100 * ci[1]:.1f}]"


def format_table(results: dict[str, Any]) -> str:
    """Terminal table: one row per strategy, one column per budget, offloaded accuracy (ceiling ratio)."""
    bench = results["benchmark"]
    ceiling = results["ceiling"]
    rows = results["results"]
    budgets = sorted({r["budget"] for r in rows})
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    by_key = {(r["strategy"], r["budget"]): r for r in rows}
    transmission = results.get("transmission") or {}
    by_patches = transmission.get("budget_unit", "patches") == "patches"  # True: patch budgets
    prefix = "B=" if by_patches else "bytes="

    def pct(x: float | None) -> str:
        return "  n/a" if x is None else f"{100 * x:5.1f}"

    lines = [
        f"benchmark {bench.get('name')}  ({bench['dataset']}, {bench['num_images']} images, "
        f"edge {bench['edge']['name']} -> server {bench['server']['name']}, gate {bench['gate']}"
        f"{'' if bench.get('threshold') is None else ' > ' + str(bench['threshold'])})",
        f"offloaded {results['num_offloaded']}/{results['num_images']} "
        f"({pct(results['num_offloaded'] / max(1, results['num_images'])).strip()}%)   "
        f"edge accuracy {pct(results['edge_accuracy']).strip()}%   "
        f"ceiling (server, all {bench['num_patches']} patches): offloaded {pct(ceiling['offloaded_accuracy']).strip()}%"
        f" / overall {pct(ceiling['overall_accuracy']).strip()}%",
        "",
        "offloaded accuracy % [95% interval] (ceiling ratio) per budget "
        + ("B = patches sent" if by_patches else "= bytes per request (units sent are in results.json)"),
    ]
    width = max(len("strategy"), *(len(s) for s in strategies))
    cell_width = 25 if any(r.get("offloaded_accuracy_ci") for r in rows) else 13
    header = f"{'strategy':<{width}} | " + " | ".join(f"{prefix + str(b):>{cell_width}}" for b in budgets)
    lines += [header, "-" * len(header)]
    for s in strategies:
        cells = []
        for b in budgets:
            r = by_key.get((s, b))
            ratio = "" if r is None or r["ceiling_ratio"] is None else f"({r['ceiling_ratio']:.2f})"
            cells.append(f"{pct(r and r['offloaded_accuracy']) + _interval(r) + ' ' + ratio:>{cell_width}}")
        lines.append(f"{s:<{width}} | " + " | ".join(cells))
    overall = [f"{s}: " + " ".join(pct(by_key[(s, b)]["overall_accuracy"]).strip() for b in budgets)
               for s in strategies]
    lines += ["", "overall (system) accuracy % per budget: " + "; ".join(overall)]
    codec = transmission.get("codec") or {"name": "raw"}
    if not by_patches or codec.get("name") != "raw":
        sent = [f"{s}: " + " ".join(f"{by_key[(s, b)]['units_sent']:.1f}/{by_key[(s, b)]['bytes_sent']:.0f}"
                                    if by_key.get((s, b)) and by_key[(s, b)]["units_sent"] is not None else "n/a"
                                    for b in budgets) for s in strategies]
        quality = f" quality {codec['quality']}" if "quality" in codec else ""
        lines += [f"codec {codec.get('name')}{quality}: mean units/bytes sent per request: " + "; ".join(sent)]
    return "\n".join(lines)

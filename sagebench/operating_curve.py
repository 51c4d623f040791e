"""The system's operating curve: every gate threshold of one run, from its per-sample records.

Why from the records: a gate that thresholds a per-image score offloads nested sets (``score > eta``
shrinks as eta grows), so a run that serves the lowest threshold's set has already computed every
server answer any higher threshold needs. With each image's score in the records (the
``gate_score`` column, :data:`sagebench.metrics.SCORE_FIELD`), each threshold's figures are exact
counts over the same records, and they equal, record for record, a separate run at that threshold
(``tests/test_operating_curve.py``). Nothing here runs a model.

Per (strategy, budget) and threshold: the offload share, the system accuracy (edge on the kept
images, server from the sent units on the offloaded ones) with its Wilson interval, the offloaded
accuracy, and the uplink bytes per image (mean over *all* images, 0 for a kept one). Two reference
points: edge only (share 0: the edge's accuracy) and server only (share 1: the server on the full
image of every image), which is known exactly only when the lowest threshold offloads every image;
otherwise its bounds are given (the unserved images counted all wrong, then all right).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from sagebench.metrics import CONFIDENCE, SweepLayout

#: What results.json says the curve is (written with it).
NOTE = ("one run, every threshold: the images the lowest threshold offloads were served once per (strategy, budget); "
        "a threshold's offloaded set is gate_score > threshold. system_accuracy: edge on kept + server on offloaded, "
        "over all images; bytes_per_image: uplink bytes averaged over all images (0 for a kept one). The run's usual "
        "`results` and records are the lowest (primary) threshold's.")


def _wilson(successes: int, n: int) -> list[float] | None:
    from sagebench.stats import wilson_interval

    ci = wilson_interval(int(successes), int(n), CONFIDENCE)
    return None if ci is None else [float(ci[0]), float(ci[1])]


def _frac(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def offloaded_at(scores: np.ndarray, threshold: float,
                 rule: Callable[[torch.Tensor, float], torch.Tensor] | None = None) -> np.ndarray:
    """The images a run at ``threshold`` offloads, from the recorded scores.

    The scores are float64 copies of the gate's float32 scores, so they are compared back in float32 by the
    gate's own rule (:meth:`sagebench.gates.Gate.offload_at`): a threshold that rounds in float32 decides
    exactly as the gate did in a run at that threshold.
    """
    from sagebench.gates import Gate

    rule = rule or Gate.offload_at
    return rule(torch.tensor(np.asarray(scores, dtype=np.float64)).float(), float(threshold)).numpy()


def operating_curve(rows: np.ndarray, layout: SweepLayout, thresholds: Sequence[float], *, gate: str = "gate",
                    full_image_bytes: float | None = None,
                    rule: Callable[[torch.Tensor, float], torch.Tensor] | None = None) -> dict[str, Any]:
    """The ``operating_curve`` block of results.json, from the records of an operating-curve run.

    ``rows``: the evaluated records (skipped images already set apart) with the ``gate_score`` column;
    ``thresholds``: the gate's, sorted (the first is the one the run served); ``full_image_bytes``: what the
    server-only point sends per image (all units, raw pixels), None when unknown (a codec).
    """
    if not layout.scored:
        raise ValueError("these records hold no gate score: the run had one gate threshold, not a curve")
    col = layout.column
    n = int(rows.shape[0])
    label = rows[:, col("label")]
    edge_ok = rows[:, col("edge_pred")] == label
    served = rows[:, col("offloaded")] > 0.5
    scores = rows[:, col("gate_score")]
    ceiling_ok = rows[:, col("ceiling_pred")] == label
    points, curve = [], []
    for threshold in thresholds:
        off = offloaded_at(scores, threshold, rule)
        if np.any(off & ~served):
            raise ValueError(f"threshold {threshold}: {int((off & ~served).sum())} image(s) would be offloaded that "
                             "the run did not serve; the lowest threshold must decide what is served")
        n_off = int(off.sum())
        kept_ok = int((edge_ok & ~off).sum())
        ceiling_hit = int((ceiling_ok & off).sum())
        points.append({
            "threshold": float(threshold), "num_offloaded": n_off, "offload_share": _frac(n_off, n),
            "offload_share_ci": _wilson(n_off, n),
            "ceiling": {"system_accuracy": _frac(kept_ok + ceiling_hit, n),
                        "system_accuracy_ci": _wilson(kept_ok + ceiling_hit, n),
                        "offloaded_accuracy": _frac(ceiling_hit, n_off)},
        })
        for j, (strategy, budget) in enumerate(layout.cells):
            hit = int(((rows[:, col("pred", j)] == label) & off).sum())
            curve.append({
                "strategy": strategy, "budget": budget, "budget_unit": layout.budget_unit,
                "threshold": float(threshold), "offload_share": _frac(n_off, n),
                "system_accuracy": _frac(kept_ok + hit, n), "system_accuracy_ci": _wilson(kept_ok + hit, n),
                "offloaded_accuracy": _frac(hit, n_off), "offloaded_accuracy_ci": _wilson(hit, n_off),
                "bytes_per_image": float(rows[off, col("bytes", j)].sum()) / n if n else None,
            })
    edge_hits = int(edge_ok.sum())
    unserved = int((~served).sum())
    known_ok = int((ceiling_ok & served).sum())
    server_only: dict[str, Any] = {
        "offload_share": 1.0, "bytes_per_image": full_image_bytes, "images_known": n - unserved,
        "system_accuracy": _frac(known_ok, n) if not unserved else None,
        "system_accuracy_ci": _wilson(known_ok, n) if not unserved else None,
        # the unserved images counted all wrong, then all right: where the server-only accuracy lies
        "system_accuracy_bounds": [_frac(known_ok, n), _frac(known_ok + unserved, n)],
    }
    if unserved:
        server_only["note"] = (f"the server's full-image answer is known for the {n - unserved} images the lowest "
                               f"threshold offloaded, not for the other {unserved}: add a lower threshold (or 0) "
                               "to know this point exactly")
    return {
        "gate": gate, "thresholds": [float(t) for t in thresholds], "primary": float(thresholds[0]),
        "num_images": n, "note": NOTE,
        "edge_only": {"offload_share": 0.0, "bytes_per_image": 0.0, "system_accuracy": _frac(edge_hits, n),
                      "system_accuracy_ci": _wilson(edge_hits, n)},
        "server_only": server_only,
        "points": points,
        "curve": curve,
    }


def format_curve(block: dict[str, Any]) -> str:
    """The terminal table: per threshold, the offload share and each (strategy, budget)'s system accuracy [95%]
    and uplink bytes per image."""
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}"

    def cell(r: dict[str, Any]) -> str:
        ci = r.get("system_accuracy_ci") or [None, None]
        return f"{pct(r['system_accuracy'])} [{pct(ci[0])},{pct(ci[1])}] {r['bytes_per_image']:.0f}B"

    cells = list(dict.fromkeys((r["strategy"], r["budget"]) for r in block["curve"]))
    by = {(r["strategy"], r["budget"], r["threshold"]): r for r in block["curve"]}
    unit = "B=" if (block["curve"] and block["curve"][0]["budget_unit"] == "patches") else "bytes="
    names = [f"{s} {unit}{b}" for s, b in cells]
    width = max(len("strategy @ budget"), *(len(x) for x in names)) if names else 20
    heads = [f"eta {p['threshold']:g} ({pct(p['offload_share'])}%)" for p in block["points"]]
    cw = max(24, *(len(h) for h in heads)) if heads else 24
    edge, server = block["edge_only"], block["server_only"]
    server_text = (f"{pct(server['system_accuracy'])}%" if server["system_accuracy"] is not None else
                   f"in [{pct(server['system_accuracy_bounds'][0])}, {pct(server['system_accuracy_bounds'][1])}]% "
                   f"(full-image answer known for {server['images_known']} of {block['num_images']} images)")
    lines = [f"operating curve (gate {block['gate']}, thresholds {', '.join(f'{t:g}' for t in block['thresholds'])}): "
             "system accuracy % [95% interval] and uplink bytes per image, per threshold (offload share)",
             f"edge only (share 0): {pct(edge['system_accuracy'])}%   server only (share 1): {server_text}"]
    header = f"{'strategy @ budget':<{width}} | " + " | ".join(f"{h:>{cw}}" for h in heads)
    lines += [header, "-" * len(header)]
    ceiling = " | ".join(f"{pct(p['ceiling']['system_accuracy']) + ' (all units)':>{cw}}" for p in block["points"])
    lines.append(f"{'ceiling':<{width}} | {ceiling}")
    for (s, b), name in zip(cells, names):
        row = " | ".join(f"{cell(by[(s, b, p['threshold'])]):>{cw}}" for p in block["points"])
        lines.append(f"{name:<{width}} | {row}")
    return "\n".join(lines)

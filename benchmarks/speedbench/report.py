"""The tables ``speed.py`` prints: one block per model pair, or the real-gate suite's table and notes."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics

import torch

from .job import SUITE_TARGETS
from .memory import memory_key


def env_line(args: argparse.Namespace) -> str:
    """Device, precision, torch, the OpenMP wait policy and the machine's load: what the figures depend on."""
    return (f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else
                                       f" ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)") +
            f", precision {args.precision}, torch {torch.__version__}, OMP_WAIT_POLICY="
            f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average at end {os.getloadavg()[0]:.2f}")


def ok(cond: bool) -> str:
    return "ok" if cond else "MISSED"


def pair_lines(r: dict) -> list[str]:
    """One model pair's block: sweep vs bare, the ceiling pass, selection shares, edge forwards, FLOPs."""
    return [
        f"{'metric':<44} {'value':>22}  target",
        f"{'sweep (Trainer.test), median s':<44} {r['sweep_median_s']:>22.3f}",
        f"{'bare forwards, median s':<44} {r['bare_median_s']:>22.3f}",
        f"{'ratio sweep / bare (median of pairs)':<44} {r['ratio_sweep']:>22.3f}  <= 1.10 "
        f"{ok(r['ratio_sweep'] <= 1.10)}",
        f"{'  per pair':<44} {' '.join(f'{v:.3f}' for v in r['ratio_sweep_per_repeat']):>22}",
        f"{'  ratio of medians':<44} {r['ratio_of_medians']:>22.3f}",
        f"{'ratio of CPU seconds sweep / bare':<44} {r['ratio_cpu']:>22.3f}  (work done, blind to waiting)",
        f"{'ratio wall (evaluate end to end) / bare':<44} {r['ratio_wall']:>22.3f}  (adds fixed per-run costs)",
        f"{'throughput sweep / bare, images/s':<44} {r['images_per_s']:>10.1f} / {r['bare_images_per_s']:<10.1f}",
        f"{'ceiling pass: timm loop s / sweep phase s':<44} "
        f"{r['timm_ceiling_s']:>10.3f} / {r['ceiling_phase_s']:<10.3f}",
        f"{'ceiling throughput vs plain timm loop':<44} {r['ceiling_throughput_ratio']:>22.3f}  >= 0.95 "
        f"{ok(r['ceiling_throughput_ratio'] >= 0.95)}",
        *([f"{'  (same forwards inside the bare loop, s)':<44} {r['bare_loop_ceiling_s']:>22.3f}"]
          if r.get("bare_loop_ceiling_s") is not None else []),
        f"{'SAGE selection / server, largest budget':<44} {100 * r['sage_select_share_at_Bmax']:>21.2f}%  < 2% "
        f"{ok(r['sage_select_share_at_Bmax'] < 0.02)}",
        f"{'  SAGE, all budgets (shared sort + Gram incl.)':<44} {100 * r['sage_select_share_all_budgets']:>21.2f}%",
        f"{'all selections / all server passes':<44} {100 * r['all_select_share']:>21.2f}%",
        f"{'edge forwards per image':<44} {r['edge_forwards_per_image']:>22.3f}  == 1 "
        f"{ok(r['edge_forwards_per_image'] == 1)}",
        f"{'server passes run / reused (dedupe)':<44} "
        f"{str(r['server_passes']['images_run']) + ' / ' + str(r['server_passes']['images_reused']):>22}",
        f"{'model GFLOP per image, achieved TFLOP/s':<44} {r['gflop_per_image']:>10.2f} / {r['achieved_tflops']:<10.3f}",
    ]


def extra_lines(args: argparse.Namespace, r: dict) -> list[str]:
    """The optional lines of a pair's block: fraction of the GPU's peak, the edge cache, peak memory."""
    lines = []
    if "fraction_of_bf16_peak" in r:
        frac = r["fraction_of_bf16_peak"]
        lines.append(f"{'fraction of ' + str(r['gpu']) + ' bf16 peak':<44} "
                     f"{'n/a' if frac is None else f'{100 * frac:.1f}%':>22}  (peak {r['bf16_peak_tflops']} TFLOP/s)")
    if "cache" in r:
        c = r["cache"]
        lines.append(f"{'edge cache: edge forwards/image 1st, 2nd run':<44} "
                     f"{c['first_edge_forwards_per_image']:>10.1f} / {c['second_edge_forwards_per_image']:<10.1f}"
                     f"  results identical: {c['results_identical']}")
    return lines + (memory_lines(args, r["memory"]) if "memory" in r else [])


def memory_lines(args: argparse.Namespace, m: dict) -> list[str]:
    """Peak memory over 1x and 4x the images (flat: 4x/1x under 1.05), and RSS beside the process's own memory."""
    key = memory_key(args, m["1x"])
    what = {"cuda_peak_mb": "GPU memory", "peak_anon_mb": "process memory (RssAnon)"}.get(key, "RSS")
    a, b = m["1x"][key], m["4x"][key]
    lines = [f"{'peak ' + what + ' MB, ' + str(m['1x']['images']) + ' vs ' + str(m['4x']['images']) + ' images':<44} "
             f"{a:>10.0f} / {b:<10.0f}  flat (4x/1x {b / a:.3f}) {ok(b / a < 1.05)}"]
    if key != "peak_rss_mb":
        lines.append(f"{'  peak RSS incl. mapped data-set file, MB':<44} "
                     f"{m['1x']['peak_rss_mb']:>10.0f} / {m['4x']['peak_rss_mb']:<10.0f}"
                     + (f"  (file pages at end {m['1x']['file_mapped_mb']:.0f} / {m['4x']['file_mapped_mb']:.0f})"
                        if m["1x"].get("file_mapped_mb") is not None else ""))
    if len(m["1x"]["runs"]) > 1:
        runs = " | ".join(" ".join(f"{v:.0f}" for v in m[f]["runs"]) for f in ("1x", "4x"))
        lines.append(f"{'  (largest of ' + str(len(m['1x']['runs'])) + ' runs each: 1x | 4x)':<44} {runs:>22}")
    return lines


def fmt_table(args: argparse.Namespace, results: dict) -> str:
    """Every model pair's block under one environment line."""
    lines = [env_line(args)]
    for name, r in results.items():
        lines += ["",
                  f"== {name}: {r['models']}, {r['images']} images ({r['data']}), batch {r['batch_size']}, "
                  f"{r['strategies']} strategies x {len(r['budgets'])} budgets {r['budgets']} "
                  f"= {r['server_passes_per_image']} server passes/image, {r['threads']} threads",
                  *pair_lines(r), *extra_lines(args, r)]
    return "\n".join(lines)


def suite_rows(suite: dict) -> list[tuple]:
    """The suite table's rows: (what, sweep side, bare side, figures, wall ratio, CPU ratio, target key)."""
    job = suite["job"]
    passes = f"ceiling + {len(job['strategies'])}x{len(job['budgets'])} token passes"
    rows = []
    for r in suite["sweeps"]:
        gate = f"{r['gate']} eta {job['threshold']}" if r["gate"] != "all" else "all"
        rows.append((f"1 default job, gate {gate}", "`Trainer.test` (in-memory images)",
                     f"edge on every image; {passes} on the offloaded", r, r["ratio_sweep"], r["ratio_cpu"], "sweep"))
    p, q = suite.get("process"), suite.get("rerun")
    if p is not None:
        rows.append(("2 whole process", "`sagebench eval logger=none`", "`bare_default_job.py` (decode + same forwards)",
                     p, p["ratio_wall"], p["ratio_cpu"], "process"))
    if q is not None:
        rows.append((f"3 cached rerun, `strategies=[{q['strategy']}]`", "rerun's `Trainer.test`",
                     f"{q['strategy']} selection + 1 server pass per budget on the offloaded", q, q["ratio_wall"],
                     q["ratio_cpu"], "rerun"))
    return rows


def suite_table(args: argparse.Namespace, suite: dict) -> list[str]:
    """The environment, the default job, and the suite's markdown table with each row's target."""
    job = suite["job"]
    lines = [env_line(args), "",
             f"default job: {', '.join(job['strategies'])} x budgets {job['budgets']}, batch {job['batch_size']}, "
             f"server batch {job['server_batch_size']}, gate {job['gate']} eta {job['threshold']}; "
             f"{args.repeats} alternating pair(s) per row, medians", "",
             "| row | sweep side | bare side | images (offloaded) | sweep s | bare s | wall ratio | pairs "
             "| CPU s ratio | target |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for what, side, bare, r, wall, cpu, key in suite_rows(suite):
        target = f"<= {SUITE_TARGETS[key]:.2f} " + ok(wall <= SUITE_TARGETS[key])
        lines.append(f"| {what} | {side} | {bare} | {r['images']} ({r['offloaded']}) | {r['sweep_median_s']:.2f} | "
                     f"{r['bare_median_s']:.2f} | **{wall:.3f}** | "
                     f"{' '.join(f'{v:.3f}' for v in r.get('ratio_per_pair', r.get('ratio_sweep_per_repeat', [])))} | "
                     f"{cpu:.3f} | {target} |")
    return lines


def process_notes(p: dict) -> list[str]:
    """Row 2's note: the two commands, evaluate's share of the process, and whether both did the same work."""
    w, e = p["work"]["bare"], p["work"]["eval"]
    return [f"* row 2: `{p['command']}` vs `{p['bare_command']}` (OMP_WAIT_POLICY={p['omp_wait_policy']} for "
            "both); evaluate() inside the process "
            f"{statistics.median(p['evaluate_wall_s']):.2f} s (its sweep "
            f"{statistics.median(p['evaluate_sweep_s']):.2f} s) of {p['sweep_median_s']:.2f} s; same work: "
            f"{p['work']['same']} (eval / bare: offloaded {e['offloaded']} / {w['offloaded']}, edge accuracy "
            f"{e['edge_accuracy']:.4f} / {w['edge_accuracy']:.4f}, ceiling on the offloaded "
            f"{e['ceiling_offloaded_accuracy']:.4f} / {w['ceiling_offloaded_accuracy']:.4f})"]


def rerun_notes(q: dict) -> list[str]:
    """Row 3's notes: the fill, edge forwards of the rerun (0 expected), the cache on disk, the rerun's phases."""
    lines = [f"* row 3: fill (default strategies, cache.edge=true) sweep {q['fill_sweep_s']:.2f} s, edge forwards "
             f"per image {q['fill_edge_forwards_per_image']:.3f}; rerun edge forwards per image "
             f"{q['edge_forwards_per_image']:.3f} (expected 0); offloaded rerun / bare {q['offloaded']} / "
             f"{q['bare_offloaded']} in {q['server_batches']} server batches; evaluate end to end "
             f"{statistics.median(q['evaluate_wall_s']):.2f} s",
             f"* row 3, cache: {json.dumps(q['cache_timing'], default=str)}"
             + (f" {json.dumps(q['cache_results'], default=str)}" if q["cache_results"] else "")
             + f"; on disk {q['cache_files']} files, {q['cache_bytes'] / 2**20:.1f} MB"]
    phases = q.get("phases") or {}
    if phases:
        lines.append("* row 3, rerun phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()
                                                               if not k.startswith(("select/", "server/")))
                     + f", selections {sum(v for k, v in phases.items() if k.startswith('select/')):.2f}"
                     + f", server passes {sum(v for k, v in phases.items() if k.startswith('server/')):.2f}")
    return lines


def fmt_suite(args: argparse.Namespace, suite: dict) -> str:
    """The suite's table, then one note per row."""
    lines = suite_table(args, suite) + [""]
    for r in suite["sweeps"]:
        lines.append(f"* row 1, gate {r['gate']}: evaluate end to end / bare {r['ratio_wall']:.3f}; edge forwards per "
                     f"image {r['edge_forwards_per_image']:.3f}; server passes run / reused "
                     f"{r['server_passes']['images_run']} / {r['server_passes']['images_reused']}")
    p, q = suite.get("process"), suite.get("rerun")
    return "\n".join(lines + (process_notes(p) if p is not None else []) + (rerun_notes(q) if q is not None else []))

"""``sagebench`` command line: a thin shell over the library.

User errors (:class:`SageBenchError`) print one clear message and exit with status 2, without
a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from sagebench.errors import SageBenchError


def _quiet_libraries() -> None:
    """Keep the terminal for sagebench's own output (Lightning tips, dataloader worker hints)."""
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # a resumed run whose images were all finished before the crash has nothing left to evaluate
    warnings.filterwarnings("ignore", message=".*Total length of `DataLoader` across ranks is zero.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cmd_eval(args: argparse.Namespace) -> int:
    from sagebench.config import load_config, to_yaml

    cfg = load_config(args.config, args.overrides)  # before Lightning loads: a config mistake answers in a second
    if getattr(args, "print_config", False):  # as Hydra's --cfg job: the resolved config, nothing run
        print(to_yaml(cfg), end="")
        return 0
    from sagebench.results import format_table
    from sagebench.sweep.evaluate import evaluate

    shown: list[bool] = []

    def show(results: dict) -> None:  # as soon as results.json is written: the plots and W&B come after
        print()
        print(format_table(results))
        if results.get("operating_curve"):
            from sagebench.operating_curve import format_curve

            print()
            print(format_curve(results["operating_curve"]))
        if results.get("seeds"):
            from sagebench.seeds import format_seeds

            print()
            print(format_seeds(results["seeds"]))
        if results.get("edge_cost"):
            from sagebench.cost import format_edge_cost

            print()
            print(format_edge_cost(results))
        print(f"\nresults: {Path(results['output_dir']) / 'results.json'}  "
              f"(wall {results['timing']['wall_seconds']:.1f} s)", flush=True)
        shown.append(True)

    results = evaluate(cfg, on_results=show)
    if results is not None:
        if not shown:  # resume=true on a finished run: its stored results
            show(results)
        plots = [results.get("report", {}).get(k) for k in ("curves", "overlays", "latency", "operating_curve")]
        if any(plots):
            print("plots: " + "  ".join(p for p in plots if p))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    """``sagebench strategies|gates|codecs|channels|analyses [PATTERN]``: names, descriptions, options.

    Torch-free and imports no plug-in: built-ins are read from source, plug-ins from their
    entry-point names (their options show once something has imported them).
    """
    from sagebench.plugins import REGISTRIES

    registry = REGISTRIES[args.command]
    found = registry.catalog(args.pattern)
    width = max((len(n) for n in found), default=0)
    for name, description in found.items():
        print(f"{name:<{width}}  {description}".rstrip())
        for option in registry.options(name) or ():
            default = "" if option.required else f" = {option.default!r}"
            kind = f": {option.type}" if option.type else ""
            text = f"  {option.help}" if option.help else ""
            print(f"{'':<{width}}    {option.name}{kind}{default}{text}")
    return 0


def _cmd_train_demo(args: argparse.Namespace) -> int:
    from sagebench.demo.train import train_demo

    summaries = train_demo(Path(args.out) if args.out else None, roles=tuple(args.roles),
                           data_dir=Path(args.data_dir) if args.data_dir else None,
                           epochs=args.epochs, seed=args.seed, export_data=not args.no_export,
                           benchmark=args.benchmark)
    for s in summaries:
        print(f"{s['role']}: test accuracy {100 * s['test_accuracy']:.2f}% -> {s['weights']}")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from sagebench import leaderboard as lb

    root = Path(args.root) if args.root else None
    if args.action == "submit":
        entry = lb.submit(args.run, board=args.board, root=root, name=args.name, create=args.create)
        print(f"submitted {entry.name} to board {entry.path.parent.parent.name} ({entry.path})"
              + ("" if entry.samples_path else " without a per-sample file (compare will not work on it)"))
    elif args.action == "show":
        print(lb.format_board(lb.get_board(args.board, root)))
    elif args.action == "render" and args.html:  # the static site: reads the boards, writes only under DIR
        from sagebench.leaderboard import site

        index = site.write_site(root or lb.default_root(), Path(args.html), [args.board] if args.board else None)
        print(f"wrote {index} (open it in a browser, or publish {args.html} as is on any static host)")
    elif args.action == "init-repo":
        from sagebench.leaderboard import site

        written = site.init_repo(Path(args.dir))
        print("\n".join(f"wrote {p}" for p in written))
        print(f"next: cd {args.dir} && git init, add entries with `sagebench leaderboard --root leaderboards submit "
              "RUN --create`, push to GitHub and enable Pages (Settings > Pages > GitHub Actions); README.md says more")
    elif args.action == "render":
        root = root or lb.default_root(for_writing=True)  # the shipped boards are read-only
        names = [args.board] if args.board else (lb.list_boards(root) or [None])
        for name in names:
            print(f"rendered {lb.render(lb.get_board(name, root))}")
    elif args.action == "compare":
        if args.matrix:
            if args.b is not None or args.strategy:
                raise SageBenchError("--matrix takes one run, entry or board and compares all its rows: "
                                     "drop the second reference and -s.")
            result = lb.compare_matrix(args.a, root=root, board=args.board, resamples=args.resamples)
            print(json.dumps(result, indent=2) if args.json else lb.format_matrix(result))
        elif args.b is None and len(args.strategy or ()) == 1:  # one strategy of a run against every other
            results = lb.compare_against_rest(args.a, args.strategy[0], root=root, board=args.board)
            print(json.dumps(results, indent=2) if args.json else
                  "\n\n".join(lb.format_comparison(r) for r in results)
                  + f"\n\nHolm p: adjusted over the {len(results)} comparisons of each budget.")
        else:
            result = lb.compare(args.a, args.b, args.strategy or (), root=root, board=args.board,
                                resamples=args.resamples)
            print(json.dumps(result, indent=2) if args.json else lb.format_comparison(result))
    elif args.action == "verify":
        if (args.write or args.strict) and not args.reproduce:
            raise SageBenchError("--write and --strict are about what --reproduce finds: add --reproduce.")
        reports = lb.verify(root, args.board, reproduce=args.reproduce, sample=args.sample, seed=args.seed,
                            write=args.write, strict=args.strict)
        for report in reports:
            for outcome in report.outcomes:
                print(f"{report.board}: {outcome.entry}: {outcome.line} ({outcome.seconds:.1f} s)")
            if report.reproduction_file is not None:
                print(f"{report.board}: wrote {report.reproduction_file}")
            for note in report.notes:
                print(f"{report.board}: note: {note}")
            for problem in report.problems:
                print(f"{report.board}: problem: {problem}", file=sys.stderr)
            print(f"board {report.board}: " + (f"OK ({report.entries} entr{'y' if report.entries == 1 else 'ies'} "
                                               "checked)" if report.ok else f"{len(report.problems)} problem(s)"))
        return 0 if all(r.ok for r in reports) else 1
    elif args.action == "pull":
        for o in lb.pull_wandb(args.wandb, board=args.board, root=root):
            print(f"{o.run_id} ({o.name}): " + (f"-> {o.board}/{o.entry}" if o.entry else f"skipped: {o.skipped}"))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from sagebench.reporting.paper_table import board_at, board_rows, format_table, format_wide, table_rows

    if not args.run_dirs and not args.board:
        raise SageBenchError("give run folders (RUN_DIR ...) or a board (--board NAME_OR_FOLDER) to report.")
    rows = table_rows(args.run_dirs, metrics=args.metrics) if args.run_dirs else []
    if args.board:
        rows += board_rows(board_at(args.board, args.root), metrics=args.metrics)
    text = (format_wide(rows, args.format, metric=args.metrics[0], channel=args.channel) if args.wide
            else format_table(rows, args.format, metrics=args.metrics))
    if args.out:
        from sagebench.runtime.files import atomic_write_text

        atomic_write_text(Path(args.out), text if text.endswith("\n") else text + "\n")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def _report_parser(sub: argparse._SubParsersAction) -> None:
    from sagebench.reporting.paper_table import ALIASES, DEFAULT_METRICS, METRICS

    p = sub.add_parser("report", help="one table of runs or of a board (long: run, strategy, budget, metrics with "
                                      "95%% intervals and latency; --wide: strategies x budgets, best and ties "
                                      "marked) as Markdown, CSV or LaTeX")
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="output_dir of finished `sagebench eval` runs "
                                                                  "(or their results.json), or one board folder")
    p.add_argument("--board", help="a board: its folder (leaderboards/<board>) or its name under --root")
    p.add_argument("--root", help="the leaderboards folder holding --board NAME (default: as `sagebench leaderboard`)")
    p.add_argument("--format", "-f", choices=["md", "csv", "latex"], default="md", help="output format (default md)")
    p.add_argument("--metrics", "--metric", nargs="+", choices=[*METRICS, *ALIASES], default=list(DEFAULT_METRICS),
                   help=f"columns (default: {' '.join(DEFAULT_METRICS)}; ratio = ceiling_ratio; latency: one column "
                        "per uplink channel); with --wide the first is the cell")
    p.add_argument("--wide", action="store_true", help="strategies x budgets (the first --metrics value; default "
                                                        "offloaded accuracy), each cell with its interval, the best "
                                                        "in bold, rows tied with it (rank interval holding 1) marked")
    p.add_argument("--channel", help="with --wide --metric latency: the uplink channel (default: the first listed)")
    p.add_argument("--out", help="write the table to this file instead of printing it")
    p.set_defaults(func=_cmd_report)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from sagebench.plugins import ANALYSES

    analysis = ANALYSES.create(args.analysis)  # unknown names -> the known ones, with a suggestion
    flags = {"limit": args.limit, "prefix": args.prefix, "sage": args.sage, "batch_size": args.batch_size,
             "device": args.device}
    accepted = analysis.run_options()  # the flags this analysis takes, in the order of its signature
    options = {k: flags[k] for k in accepted if k in flags}
    shown = [f"--{k.replace('_', '-')} {v}" for k, v in options.items()
             if v is not None and v != accepted[k].default]
    command = " ".join(["sagebench", "analyze", args.analysis, str(args.run_dir), *shown]
                       + ([f"--out {args.out}"] if args.out else []))
    out = analysis.run(args.run_dir, out_dir=args.out, command=command, **options)
    print(analysis.format(out))
    print(f"\nwrote {out['files']['json']}  {out['files']['png']}")
    return 0


def _analyze_parser(sub: argparse._SubParsersAction) -> None:
    from sagebench.plugins import ANALYSES

    builtins = ANALYSES.catalog(builtin_only=True)  # read from source: no import, no installed-package scan
    p = sub.add_parser("analyze", help="analyses of a finished run (writes RUN_DIR/analysis/<name>.json and .png)")
    p.add_argument("analysis", metavar="ANALYSIS",
                   help="; ".join(f"{n}: {d.rstrip('.')}" for n, d in builtins.items()) + " (`sagebench analyses` lists all)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="output_dir of a finished `sagebench eval` run")
    p.add_argument("--limit", type=int, help="analyse only the first N offloaded images (replacement, entropy-split)")
    p.add_argument("--prefix", default="attention_prefix", help="label of the prefix strategy (replacement)")
    p.add_argument("--sage", default="sage", help="label of the sage strategy (replacement)")
    p.add_argument("--batch-size", type=int, help="images per edge pass (default: the run's batch_size)")
    p.add_argument("--device", help="torch device (default: cuda if available and allowed by the run, else cpu)")
    p.add_argument("--out", help="output folder (default RUN_DIR/analysis)")
    p.set_defaults(func=_cmd_analyze)


def _leaderboard_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="submit, show, render (README or --html site), compare, verify or pull "
                                               "leaderboard entries; init-repo: a board repository with its CI")
    p.add_argument("--root", help="leaderboards folder (default: $SAGEBENCH_LEADERBOARDS, else the enclosing "
                                  "repository's leaderboards/, else the boards shipped with sagebench, read-only)")
    lsub = p.add_subparsers(dest="action", required=True)
    q = lsub.add_parser("submit", help="validate a run's results and add them to a board")
    q.add_argument("run", help="run folder (results.json [+ samples.parquet]) or a results JSON file")
    q.add_argument("--board", help="board name (default: the results' benchmark.name)")
    q.add_argument("--name", help="entry name (default: date_strategies_hash)")
    q.add_argument("--create", action="store_true", help="start the board if it does not exist yet")
    q = lsub.add_parser("show", help="print a board's ranked table")
    q.add_argument("board", nargs="?", help="board name (default: the only board)")
    q = lsub.add_parser("render", help="rewrite leaderboards/<board>/README.md and curves.png, or (--html DIR) "
                                       "write the boards' static web site")
    q.add_argument("board", nargs="?", help="board name (default: every board)")
    q.add_argument("--html", metavar="DIR", help="write a static, self-contained site to DIR instead (DIR/index.html "
                                                 "and one page per board; opens from file://, publish DIR as is)")
    q = lsub.add_parser("init-repo", help="start a board repository in DIR: README and a CI workflow that verifies "
                                          "and reproduces each pull request and publishes the site (GitHub Pages)")
    q.add_argument("dir", metavar="DIR", help="folder of the new repository (no file there is overwritten)")
    q = lsub.add_parser("compare", help="paired comparison on the same images: two entries, two strategies of "
                                         "one run (A -s X -s Y), or every pair (--matrix)")
    q.add_argument("a", help="entry name, run folder or results JSON (with --matrix: also a board name)")
    q.add_argument("b", nargs="?", help="entry name, run folder or results JSON (default: A again, with two -s; "
                                        "with one -s: that strategy of A against each of A's others)")
    q.add_argument("--strategy", "-s", action="append",
                   help="strategy label: once for both, twice for A's then B's (needed when an entry has several)")
    q.add_argument("--matrix", action="store_true",
                   help="every pair of strategies of A (a run or entry), or every verified row of board A, "
                        "per budget, with Holm-adjusted p-values")
    q.add_argument("--board", help="board to look entry names up in")
    q.add_argument("--resamples", type=int, default=None,
                   help="deprecated, ignored: the interval is exact now (no bootstrap)")
    q.add_argument("--json", action="store_true", help="print the comparison as JSON")
    q = lsub.add_parser("verify", help="re-check every entry of a board (schema, fingerprint, records); "
                                       "exit 1 naming the problems")
    q.add_argument("board", nargs="?", help="board name (default: every board under --root)")
    q.add_argument("--reproduce", action="store_true",
                   help="also rerun each entry's strategies on --sample offloaded images drawn with --seed and "
                        "require identical predictions (needs the entry's models and data here)")
    q.add_argument("--sample", type=int, default=200, metavar="K", help="offloaded images to rerun (default 200; "
                                                                        "plus K/4 kept at the edge)")
    q.add_argument("--seed", type=int, default=0, metavar="S", help="the verifier's seed for drawing the images")
    q.add_argument("--write", action="store_true", help="with --reproduce: store the outcomes in "
                                                        "<board>/reproduction.json (shown by render)")
    q.add_argument("--strict", action="store_true", help="with --reproduce: an entry that cannot be rerun here "
                                                         "is a problem (CI, on boards of built-in strategies)")
    q = lsub.add_parser("pull", help="build entries from W&B runs (public API)")
    q.add_argument("--wandb", required=True, metavar="ENTITY/PROJECT")
    q.add_argument("--board", help="board name (default: each run's benchmark.name)")
    for action in lsub.choices.values():  # --root also after the action (`show BOARD --root DIR`)
        action.add_argument("--root", default=argparse.SUPPRESS, help="leaderboards folder (as before the action)")
    p.set_defaults(func=_cmd_leaderboard)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sagebench")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sagebench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sagebench {_version()}")
    try:  # shell completion: `sagebench --print-completion bash > /etc/bash_completion.d/sagebench`
        import shtab

        shtab.add_argument_to(parser, ["--print-completion"])
    except ImportError:  # pragma: no cover
        pass
    sub = parser.add_subparsers(dest="command", required=True)

    from sagebench.config import config_reference  # torch-free: keys, defaults, one line each

    p = sub.add_parser("eval", help="run a sweep (default: the embedded benchmark) and write results.json",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="config keys (KEY=VALUE overrides; defaults of `sagebench eval`):\n" + config_reference())
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (defaults, --config files, overrides) and exit")
    p.add_argument("--config", "-c", action="append", default=[],
                   help="YAML file, or the name of a shipped experiment (e.g. imagenet_deit, fmnist); "
                        "repeat to layer several, applied in order")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotlist overrides, e.g. budgets=[8,16]")
    p.set_defaults(func=_cmd_eval)

    from sagebench.plugins import REGISTRIES  # torch-free: declaring a registry imports no plug-in

    for plural in REGISTRIES:  # one listing command per plug-in kind
        p = sub.add_parser(plural, help=f"list the registered {plural} (built-in and installed), with their options")
        p.add_argument("pattern", nargs="?", default="*", help="shell wildcard, e.g. 'att*'")
        p.set_defaults(func=_cmd_list)

    p = sub.add_parser("train-demo", help="train the embedded benchmark's edge and server ViTs")
    p.add_argument("--out", help="output folder (default: the package's demo folder)")
    p.add_argument("--roles", nargs="+", default=["edge", "server"], choices=["edge", "server"])
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--benchmark", default="cifar10", choices=["cifar10", "fmnist"],
                   help="which embedded benchmark's models to train (default cifar10)")
    p.add_argument("--data-dir", "--data-path", dest="data_dir",
                   help="cifar10: folder with train.parquet/test.parquet (default: the hub copy uoft-cs/cifar10); "
                        "fmnist: folder with the IDX files (default /usr/share/datasets/fashion-mnist, else the hub)")
    p.add_argument("--no-export", action="store_true", help="do not (re)write the test-split parquet")
    p.set_defaults(func=_cmd_train_demo)

    _leaderboard_parser(sub)
    _report_parser(sub)
    _analyze_parser(sub)
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; for ``eval``, ``KEY=VALUE`` overrides and ``--config`` may come in any order."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "command", None) == "eval":
        overrides = [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in overrides]
        args.overrides = [*args.overrides, *overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an interrupt so that the sweep stops the way Ctrl-C stops it (finished images saved)."""


#: exit status per signal: 128 + its number, as a shell reports a process killed by it
_SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


def _install_signal_handlers(received: list[str]) -> Callable[[], None]:
    """SIGTERM and SIGINT raise :class:`Terminated` / ``KeyboardInterrupt`` (once each; later ones are noted).

    Why: Lightning's own SIGTERM handling stops the test loop with a ``SystemExit`` of status 0, so a
    run killed by a scheduler (``timeout``, SLURM, Kubernetes) looked successful. An interrupt goes
    through the partial-results callback's ``on_exception`` (finished images are saved) and reaches
    :func:`main`, which exits 143 (SIGTERM) or 130 (SIGINT). Returns a function restoring the old handlers.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        first = name not in received
        received.append(name)
        if first:
            raise Terminated(name) if name == "SIGTERM" else KeyboardInterrupt(name)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (OSError, ValueError):  # not settable here
            pass

    def restore() -> None:
        for sig, old in previous.items():
            try:
                signal.signal(sig, old if old is not None else signal.SIG_DFL)
            except (OSError, ValueError):
                pass

    return restore


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    _quiet_libraries()
    received: list[str] = []
    restore_signals = _install_signal_handlers(received)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
        return code
    except SageBenchError as exc:
        print(f"sagebench: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `sagebench strategies | head`: the reader left; say nothing more, as a shell tool does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit would raise again
        return 128 + signal.SIGPIPE
    except (KeyboardInterrupt, SystemExit) as exc:
        # Lightning turns an interrupt inside Trainer.test into sys.exit(1): the signal decides the status
        name = received[0] if received else ("SIGINT" if isinstance(exc, KeyboardInterrupt) else None)
        if name is None:
            raise
        what = "terminated (SIGTERM)" if name == "SIGTERM" else "interrupted"
        resume = (" The images finished so far are kept in the run's partial/ folder: rerun the same command "
                  "with resume=true to continue where it stopped." if args.command == "eval" else "")
        print(f"sagebench: {what}.{resume}", file=sys.stderr)
        return _SIGNAL_EXIT[name]
    finally:
        restore_signals()


if __name__ == "__main__":
    sys.exit(main())

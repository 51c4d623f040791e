"""Progress in the units of the real work (sagebench.runtime.progress, sagebench.sweep.progress).

The counts at the end are the work done (edge images = N, ceiling = offloaded, server image-cells =
offloaded x cells, dedupe-reused included); a log gets a line every ``progress_every`` seconds, also in
the middle of one long server forward (the heartbeat); progress=false prints nothing; rank 0 shows every
process's counts; the records do not depend on the display.
"""

from __future__ import annotations

import io
import threading

import pyarrow.parquet as pq
import pytest
import torch

from sagebench.runtime.progress import Counts, Progress, totals


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def batch(n: int, offloaded: int, correct: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(labels, edge predictions, offload decisions) of a batch of n images."""
    labels = torch.zeros(n, dtype=torch.float64)
    preds = torch.ones(n, dtype=torch.float64)
    preds[:correct] = 0
    offload = torch.zeros(n, dtype=torch.bool)
    offload[:offloaded] = True
    return labels, preds, offload


def log_progress(clock: FakeClock, **kwargs) -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    p = Progress(kwargs.pop("images", 10), kwargs.pop("cells", 4), every=30, stream=out, interactive=False,
                 clock=clock, heartbeat=False, **kwargs)
    p.start()
    return p, out


def progress_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("sagebench: progress")]


def test_log_lines_come_at_the_interval_and_during_a_long_forward():
    clock = FakeClock()
    p, out = log_progress(clock)
    assert len(progress_lines(out.getvalue())) == 1  # the opening line says what is counted
    assert "10 images" in out.getvalue() and "4 strategy x budget cells" in out.getvalue()
    clock.now = 10
    p.gated(*batch(4, offloaded=2, correct=3))  # 10 s for 4 edge images
    clock.now = 29.9
    p.advance("ceiling", 2)
    assert len(progress_lines(out.getvalue())) == 1  # not due yet
    clock.now = 30
    p.advance("server", 2)
    lines = progress_lines(out.getvalue())
    assert len(lines) == 2
    # estimated totals: half of the 10 images offloaded so far -> ~5 ceiling images, ~20 image-cells
    assert "edge 4/10 img (0.40/s, edge acc 75.0%)" in lines[1]  # 4 images in 10 s, 3 right
    assert "ceiling 2/~5" in lines[1] and "server 2/~20 img-cells" in lines[1]
    assert "offloaded 50% so far (~: estimated)" in lines[1]
    # ETA: 6 edge images x 2.5 s + 3 ceiling x 9.95 s + 18 cells x 0.05 s = 45.75 s
    assert "ETA 0:00:46" in lines[1]
    clock.now = 59
    p.beat()  # the heartbeat, while a server forward runs (no count moved)
    assert len(progress_lines(out.getvalue())) == 2
    clock.now = 60
    p.beat()
    assert len(progress_lines(out.getvalue())) == 3  # a line although no call came from the sweep
    clock.now = 70
    p.gated(*batch(6, offloaded=0, correct=0))
    p.advance("server", 6)
    p.close()
    last = progress_lines(out.getvalue())[-1]
    assert last.startswith("sagebench: progress done [0:01:10]")
    # every image through the edge: the totals are exact (no ~), the share final
    assert "edge 10/10 img" in last and "ceiling 2/2 " in last and "server 8/8 img-cells" in last
    assert last.endswith("| offloaded 20%") and "edge acc 30.0%" in last  # no ETA once done
    assert "edge 10/10 img (0.14/s" in last  # the edge's rate up to its last image (10 in 70 s)


def test_totals_are_estimated_from_the_offload_share_until_every_image_is_seen():
    assert totals(Counts(edge=0), 100, 6).ceiling is None  # nothing seen: no estimate
    est = totals(Counts(edge=20, offloaded=5), 100, 6)
    assert (est.ceiling, est.server, est.exact) == (25, 150, False)
    done = totals(Counts(edge=100, offloaded=30), 100, 6)
    assert (done.ceiling, done.server, done.exact) == (30, 180, True)
    assert totals(Counts(edge=20, offloaded=5), None, 6).server is None  # a stream of unknown length


def test_the_eta_is_unknown_until_every_kind_with_work_left_was_timed():
    clock = FakeClock()
    p, _ = log_progress(clock, images=8, cells=2)
    clock.now = 4
    p.gated(*batch(4, offloaded=4, correct=0))  # queued: no server pass yet
    assert "ETA ?" in p.describe()
    clock.now = 8
    p.advance("ceiling", 4)
    clock.now = 9
    p.advance("server", 4)
    clock.now = 10
    p.advance("server", 4)
    assert "ETA 0:00:10" in p.describe()  # 4 edge x 1 s + 4 ceiling x 1 s + 8 cells x 0.25 s


def test_a_terminal_gets_one_redrawn_bar():
    clock = FakeClock()
    out = io.StringIO()
    p = Progress(4, 2, stream=out, interactive=True, clock=clock, heartbeat=False, refresh=0.5)
    p.start()
    clock.now = 1
    p.gated(*batch(4, offloaded=1, correct=1))
    clock.now = 1.2
    p.advance("ceiling", 1)  # within 0.5 s of the last redraw: not drawn
    drawn = out.getvalue()
    clock.now = 2
    p.advance("server", 1)
    assert out.getvalue() != drawn and "ceiling 1/1 | server 1/2 cells" in out.getvalue()
    p.close()
    assert "\r" in out.getvalue() and "sagebench: progress" not in out.getvalue()


class DictStore:
    """What the processes share through torch.distributed's store (set/check/get)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def set(self, key: str, value: str) -> None:
        self.data[key] = value.encode()

    def check(self, keys: list[str]) -> bool:
        return all(k in self.data for k in keys)

    def get(self, key: str) -> bytes:
        return self.data[key]


def test_rank_zero_shows_every_process_counts():
    store, clock = DictStore(), FakeClock()
    zero, out0 = log_progress(clock, images=20, rank=0, world_size=2, store=store, key="run/")
    one, out1 = log_progress(clock, images=20, rank=1, world_size=2, store=store, key="run/")
    clock.now = 5
    one.gated(*batch(10, offloaded=10, correct=10))  # published at once
    clock.now = 5.5
    one.advance("ceiling", 10)  # within a second of the last: not yet
    clock.now = 7
    one.advance("server", 0)
    clock.now = 9
    zero.gated(*batch(10, offloaded=0, correct=0))
    assert "edge 20/20 img" in zero.describe() and "ceiling 10/10 " in zero.describe()
    assert out1.getvalue() == ""  # only rank 0 writes
    zero.close(Counts(edge=20, labelled=20, correct=10, offloaded=10, ceiling=10, server=40))
    assert "server 40/40 img-cells" in progress_lines(out0.getvalue())[-1]
    # no store reachable: rank 0's own counts times the processes, said so
    alone, _ = log_progress(clock, images=20, rank=0, world_size=2, store=None)
    alone.gated(*batch(10, offloaded=5, correct=0))
    assert "edge 20/20 img" in alone.describe() and "rank 0 x 2" in alone.describe()


def test_the_heartbeat_writes_on_its_own_and_stops_with_the_display():
    clock = FakeClock()
    out = io.StringIO()
    p = Progress(4, 2, every=0.04, stream=out, interactive=False, clock=clock)  # heartbeat every 0.01 s
    p.start()
    clock.now = 1  # no call from the sweep: a long forward
    for _ in range(500):
        if len(progress_lines(out.getvalue())) >= 2:
            break
        threading.Event().wait(0.01)
    assert len(progress_lines(out.getvalue())) >= 2
    p.close(stopped=True)
    assert not p._thread.is_alive() and progress_lines(out.getvalue())[-1].startswith("sagebench: progress stopped")


def test_bad_kind_is_refused():
    p, _ = log_progress(FakeClock())
    with pytest.raises(ValueError, match="ceiling or server"):
        p.advance("edge", 1)


@pytest.mark.usefixtures("no_figures")
def test_a_run_counts_its_real_work_and_keeps_its_records(random_models_overrides, tmp_path, capsys):
    from sagebench.config import load_config
    from sagebench.sweep.evaluate import evaluate
    from sagebench.sweep.progress import SweepProgress

    args = [*random_models_overrides, "data.limit=60", "batch_size=8", "server_batch_size=20", "budgets=[4,8]",
            "strategies=[random,attention_prefix]", "gate.threshold=3.1"]
    quiet = evaluate(load_config(None, [*args, f"output_dir={tmp_path / 'off'}"]))
    assert "progress" not in capsys.readouterr().err  # progress=false: nothing
    assert 0 < quiet["num_offloaded"] < 60  # a real gate: part of each batch waits in the queue

    out = io.StringIO()
    shown = SweepProgress(every=30, stream=out, interactive=False, heartbeat=False)
    res = evaluate(load_config(None, [*args, "progress=true", f"output_dir={tmp_path / 'on'}"]), callbacks=[shown])
    counts = shown.progress.counts
    offloaded = res["num_offloaded"]
    assert (counts.edge, counts.offloaded, counts.ceiling, counts.server) == (60, offloaded, offloaded, offloaded * 4)
    assert "server" in progress_lines(out.getvalue())[-1] and f"ceiling {offloaded}/{offloaded} " in out.getvalue()
    assert pq.read_table(tmp_path / "on" / "samples.parquet").equals(pq.read_table(tmp_path / "off" /
                                                                                     "samples.parquet"))

    evaluate(load_config(None, [*args, "progress=true", "data.limit=16", f"output_dir={tmp_path / 'default'}"]))
    err = capsys.readouterr().err  # pytest's capture is no terminal: the log form, on stderr
    assert err.count("sagebench: progress") == 2 and "sagebench: progress done" in err and "edge 16/16" in err


@pytest.mark.slow
def test_two_processes_rank_zero_shows_the_total(random_models_overrides, tmp_path):
    """torchrun, 2 nodes of one process each (as tests/test_multinode.py): only rank 0 writes progress, and its
    last line counts every process's work exactly."""
    import json

    from test_multinode import COMMON, launch_nodes

    out = tmp_path / "two"
    procs = launch_nodes([*random_models_overrides, *COMMON, "batch_size=2", "progress=true", "progress_every=0.5",
                          f"output_dir={out}"], slow=True)  # 0.3 s per step: lines during the run
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
        errs.append(err.decode())
    res = json.loads((out / "results.json").read_text())
    cells = len(res["results"])
    zero = [line for line in errs[0].splitlines() if line.startswith("sagebench: progress")]
    assert len(zero) >= 3 and not any("sagebench: progress" in line for line in errs[1].splitlines())
    assert zero[0].startswith("sagebench: progress: 23 images")
    # the lines during the run read the other process's counts through the store (no "rank 0 x 2" scaling)
    assert not any("rank 0 x" in line for line in zero)
    offloaded = res["num_offloaded"]
    assert ("edge 23/23 img" in zero[-1] and f"ceiling {offloaded}/{offloaded} " in zero[-1]
            and f"server {offloaded * cells}/{offloaded * cells} img-cells" in zero[-1]), zero[-1]


def test_a_bad_interval_is_a_clear_config_error():
    from sagebench.config import load_config
    from sagebench.errors import ConfigError

    with pytest.raises(ConfigError, match="progress_every must be > 0 seconds"):
        load_config(None, ["progress_every=0"])

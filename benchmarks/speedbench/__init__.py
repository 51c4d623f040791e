"""The parts of ``benchmarks/speed.py`` (the entry point), one job each.

``common`` (presets, logging, device helpers), ``inputs`` (checkpoints, data, the sweep's overrides,
the decoded images both sides use), ``bare`` (the plain forward loops the sweep is compared with),
``flops`` (model FLOPs and GPU peaks), ``memory`` (peak memory of a sweep, in a fresh process),
``pair`` (one model pair: sweep vs bare), ``suite`` (``--suite real-gate``: the default job),
``process`` (its row 2: whole processes), ``rerun`` (its row 3: a cached rerun), ``report`` (the tables).
Everything imports torch: ``speed.py`` sets the environment (offline, OpenMP wait policy) first.
"""

# Shortcuts for contributors; CI runs .ci/run (lint, the fast lane, the slow tests, board verification).
.PHONY: test test-full test-slow lint

test:  ## the fast lane: every test not marked slow (about 2 minutes on 2 cores)
	pytest -q -m "not slow"

test-full:  ## the whole suite, the README's `pytest -q`
	pytest -q

test-slow:  ## only the end-to-end tests
	pytest -q -m slow

lint:
	ruff check sagebench tests benchmarks

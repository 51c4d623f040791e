#!/usr/bin/env bash
# Seed the embedded benchmark's board (leaderboards/fmnist-embedded) with the built-in strategies,
# measured by the default `sagebench eval`, then render its README.md and curves.png.
# Needs the trained demo weights (sagebench/demo/edge.safetensors, server.safetensors).
# Extra arguments are passed to `sagebench eval` as overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
out="runs/leaderboard-seed-fmnist-embedded"
rm -rf "$out"
sagebench eval output_dir="$out" wandb.tags=[leaderboard-seed] "$@"
sagebench leaderboard --root leaderboards submit "$out" --name builtin-strategies-seed0
sagebench leaderboard --root leaderboards render fmnist-embedded

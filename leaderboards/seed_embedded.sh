#!/usr/bin/env bash
# Seed an embedded benchmark's board with every registered strategy (the ablations and the oracle too),
# measured by `sagebench eval --config <benchmark>`, then render its README.md and curves.png and run the
# analysis experiments on the same run.
#   bash leaderboards/seed_embedded.sh cifar10     # board leaderboards/cifar10-embedded (the default benchmark)
#   bash leaderboards/seed_embedded.sh fmnist      # board leaderboards/fmnist-embedded
# Needs the trained demo weights in sagebench/demo/. Extra arguments are passed to `sagebench eval`.
set -euo pipefail
cd "$(dirname "$0")/.."
bench="${1:-cifar10}"; shift || true
board="${bench}-embedded"
out="runs/leaderboard-seed-${board}"
strategies=$(python -c "from sagebench.strategies import list_strategies; print(','.join(list_strategies()))")
rm -rf "$out"
sagebench eval --config "$bench" output_dir="$out" "strategies=[${strategies}]" wandb.tags=[leaderboard-seed] \
  logger=none progress=false "$@"
create=""; [ -d "leaderboards/${board}" ] || create="--create"
sagebench leaderboard --root leaderboards submit "$out" --board "$board" --name every-strategy-seed0 $create
sagebench leaderboard --root leaderboards verify --reproduce --write "$board"  # reran on images it draws
sagebench leaderboard --root leaderboards render "$board"
for analysis in replacement entropy-split coverage; do
  sagebench analyze "$analysis" "$out"
done

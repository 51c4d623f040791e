#!/usr/bin/env bash
# One prepared GPU check, no network needed: the paper's pair (DeiT-Tiny edge -> DeiT-Base server,
# random-init weights) on random 224x224 images, batch 256, bf16 autocast. Prints throughput
# (images/s), the ratio of the whole sagebench sweep to the bare forwards it needs, the ceiling
# pass against a plain timm loop, SAGE's selection share, edge forwards per image, peak GPU
# memory for 1x/4x the images, and the achieved fraction of the card's dense bf16 peak.
# Then the same at the real gate (min-entropy, eta set so that 36% of the images are offloaded, as
# DeiT-Tiny does on ImageNet val at eta 1.0): the sweep with full server batches against a bare loop
# that serves the offloaded images in full batches. Fits in 8 minutes in all (two timeouts below).
#
#   bash benchmarks/gpu_check.sh                 # figures on stdout, JSON in ${OUT:-.}/gpu_speed.json
#   IMAGES=8192 COMPILE=1 bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in .venv/bin/python /work/venv/bin/python python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import torch, timm, lightning" >/dev/null 2>&1; then PY=$cand; break; fi
  done
fi
[ -n "$PY" ] || { echo "gpu_check: no python with torch, timm and lightning found (set PYTHON=...)" >&2; exit 2; }
"$PY" -c "import sagebench" 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
EXTRA=()
[ "${COMPILE:-0}" = "1" ] && EXTRA+=(--compile)
WORKERS=${WORKERS:-$(( $(nproc) > 9 ? 8 : $(nproc) - 1 ))}
timeout 270 "$PY" benchmarks/speed.py --models "${MODELS:-deit}" --device cuda --precision bf16-mixed \
  --batch-size 256 --images "${IMAGES:-4096}" --repeats "${REPEATS:-3}" --num-workers "$WORKERS" \
  --mem-images 512 --mem-runs 1 --json "${OUT:-.}/gpu_speed.json" "${EXTRA[@]}"
timeout 180 "$PY" benchmarks/speed.py --models "${MODELS:-deit}" --device cuda --precision bf16-mixed \
  --batch-size 256 --images "${IMAGES:-4096}" --repeats 2 --num-workers "$WORKERS" --mem-images 0 \
  --gate min_entropy --offload-share 0.36 --no-cache-check --json "${OUT:-.}/gpu_speed_real_gate.json" "${EXTRA[@]}"

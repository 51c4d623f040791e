#!/usr/bin/env bash
# The first GPU session's check, no network needed (benchmarks/gpu_check.py does the work): the paper's
# sweep (--config paper_table3: six strategies x B in {16,32,48,64,96}, min-entropy gate set to offload
# 35.9% as DeiT-Tiny does on ImageNet val, the experiment's precision and decode policy: bf16-mixed and
# nvJPEG on CUDA) with random-init DeiT-Tiny -> DeiT-Base on IMAGES synthetic JPEGs of ImageNet's sizes,
# made in a temporary folder. Writes ${OUT:-.}/gpu_check.json: images/s of decoding (pil, tensor), the
# edge, ceiling and server passes; the pil/nvJPEG agreement; the projected time of the 50,000-image
# sweep; peak GPU memory. Sized for < 8 minutes on one H100 (IMAGES=4096; the python step's limit below).
#
#   bash benchmarks/gpu_check.sh                                # on a GPU
#   DEVICE=cpu IMAGES=16 BATCH=8 bash benchmarks/gpu_check.sh   # dry run anywhere (slow: DeiT-Base on a CPU)
#   SPEED=1 bash benchmarks/gpu_check.sh                        # also the sweep/bare ratios (speed.py, +7.5 min)
# Extra arguments go to gpu_check.py (e.g. --set compile=true, --server deit_tiny_patch16_224).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in .venv/bin/python /work/venv/bin/python python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import torch, timm, lightning, torchvision" >/dev/null 2>&1; then PY=$cand; break; fi
  done
fi
[ -n "$PY" ] || { echo "gpu_check: no python with torch, torchvision, timm and lightning found (set PYTHON=...)" >&2; exit 2; }
"$PY" -c "import sagebench" 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-.}
mkdir -p "$OUT"
if [ "$DEVICE" = "cuda" ]; then
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv,noheader || true
fi
ARGS=(--device "$DEVICE" --images "${IMAGES:-4096}" --batch-size "${BATCH:-256}" --json "$OUT/gpu_check.json")
[ -n "${WORKERS:-}" ] && ARGS+=(--workers "$WORKERS")
[ -n "${EDGE:-}" ] && ARGS+=(--edge "$EDGE")
[ -n "${SERVER:-}" ] && ARGS+=(--server "$SERVER")
timeout "${LIMIT_S:-420}" "$PY" benchmarks/gpu_check.py "${ARGS[@]}" "$@"
if [ "${SPEED:-0}" = "1" ] && [ "$DEVICE" = "cuda" ]; then
  # the sweep against the bare forwards it needs (docs/performance.md), at gate all and at the real gate
  WORKERS=${WORKERS:-$(( $(nproc) > 9 ? 8 : $(nproc) - 1 ))}
  timeout 270 "$PY" benchmarks/speed.py --models deit --device cuda --precision bf16-mixed --batch-size 256 \
    --images "${IMAGES:-4096}" --repeats 3 --num-workers "$WORKERS" --mem-images 512 --mem-runs 1 \
    --json "$OUT/gpu_speed.json"
  timeout 180 "$PY" benchmarks/speed.py --models deit --device cuda --precision bf16-mixed --batch-size 256 \
    --images "${IMAGES:-4096}" --repeats 2 --num-workers "$WORKERS" --mem-images 0 --gate min_entropy \
    --offload-share 0.36 --no-cache-check --json "$OUT/gpu_speed_real_gate.json"
fi

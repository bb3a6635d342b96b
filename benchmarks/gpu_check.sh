#!/usr/bin/env bash
# mlhub's per-step training throughput beside a plain PyTorch loop on this machine's GPU.
#
# Needs only python3 with torch and numpy: no Ray, no mlhub install, no package index, no downloads
# (benchmarks/gpu_step_bench.py loads mlhub/training/torch_models.py and torch_step.py by file path).
# On one H100 the whole run takes well under five minutes; without a GPU it runs a tiny CPU version.
#
#   bash benchmarks/gpu_check.sh [extra gpu_step_bench.py flags, e.g. --epochs 3 --json out.json]
#   PYTHON=/path/to/python3 bash benchmarks/gpu_check.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# The first of $PYTHON, this checkout's .venv, python3, python that can import torch and numpy.
py=""
for cand in "${PYTHON:-}" .venv/bin/python python3 python; do
    [[ -n "$cand" ]] || continue
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import torch, numpy' >/dev/null 2>&1; then
        py="$(command -v "$cand")"
        break
    fi
done
if [[ -z "$py" ]]; then
    echo "gpu_check: found no Python that can import torch and numpy (tried: ${PYTHON:-} .venv/bin/python" \
        "python3 python); set PYTHON=/path/to/python3" >&2
    exit 2
fi
"$py" -c 'import sys, torch, numpy; print(f"python {sys.version.split()[0]} at {sys.executable}; torch {torch.__version__} (CUDA build {torch.version.cuda}); numpy {numpy.__version__}")'

limit=()
if command -v timeout >/dev/null 2>&1; then limit=(timeout 280); fi

if "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    "$py" -c 'import torch; print(f"CUDA available: {torch.cuda.device_count()} device(s), using cuda:0 = {torch.cuda.get_device_name(0)}, bf16 supported: {torch.cuda.is_bf16_supported()}")'
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi || true
    fi
    echo
    # ~2M samples x (1 warm-up + 5 rounds x 2 epochs) x 2 paths: tens of seconds on one H100.
    ${limit[@]+"${limit[@]}"} "$py" benchmarks/gpu_step_bench.py --device cuda --model mlp --samples 2000000 \
        --features 64 --classes 10 --hidden 512 --batch-size 4096 --epochs 2 --repeats 5 "$@"
else
    echo
    echo "NOTE: no GPU found (torch.cuda.is_available() is False): running a tiny CPU version instead."
    echo "      Its numbers say nothing about GPU throughput; run this script on a machine with a GPU."
    if command -v nvidia-smi >/dev/null 2>&1; then
        echo "      (nvidia-smi is present, but this torch build cannot use the GPU:)"
        nvidia-smi || true
    fi
    echo
    ${limit[@]+"${limit[@]}"} "$py" benchmarks/gpu_step_bench.py --device cpu --model mlp --samples 20000 \
        --features 64 --classes 10 --hidden 128 --batch-size 256 --epochs 1 --repeats 5 "$@"
fi
echo "rerun this check: bash benchmarks/gpu_check.sh${*:+ $*}"

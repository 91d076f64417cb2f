#!/usr/bin/env bash
# The GPU figures in one run, for a machine with a CUDA device (a few minutes on one H100):
# per-field latency of the network variants in fp32 and bf16 on 1100 x 900 (bench/inference.py
# measures on the GPU whenever one is there), then backfill throughput of the shipped model on
# the GPU over a realistic archive (bench/backfill.py), one and two ranks.
#
#   bash bench/gpu.sh [PRODUCTS]        (default 240 archive fields)
#
# Exits 1 at once, measuring nothing, where torch sees no CUDA device.
set -euo pipefail
products=${1:-240}
python=${PYTHON:-.venv/bin/python}
"$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: nothing measured")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$python" bench/inference.py --grid 1100x900 --repeat 5 --variant baseline --variant lstm_attention
"$python" bench/backfill.py --device cuda --model "$PWD/assets/model" --archive 0.1 --grid 1100x900 \
    --products "$products" --nproc 1,2

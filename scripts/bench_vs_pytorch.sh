#!/usr/bin/env bash
# rankcollapse against the same simulation in PyTorch, side by side on one device
# (scripts/bench_vs_pytorch.py says what the peer computes and how the check works).
#
#   scripts/bench_vs_pytorch.sh [--device cpu|cuda] [--config small|gpu|long|all] [--repeats R] ...
#
# Every argument goes to the Python script (--help lists them). It builds the release binary
# first (into $CARGO_TARGET_DIR, default target/), with the CUDA device through the GPU engine.
#
# PyTorch: a virtual environment outside the repository, named by $TORCH_VENV (default
# /work/venv-torch):
#   python3 -m venv /work/venv-torch
#   /work/venv-torch/bin/pip install torch numpy
# The default Linux wheel on PyPI is the CUDA build: it needs its nvidia-* / cuda-toolkit
# packages even to import on a CPU-only machine (`pip install --no-deps torch` then fails with
# "libcudart.so.13: cannot open shared object file"), so install it with its dependencies, or
# the CPU wheel from https://download.pytorch.org/whl/cpu where that index is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TORCH_VENV:-/work/venv-torch}"
if ! "$venv/bin/python" -c "import torch, numpy" 2>/dev/null; then
    echo "no PyTorch in $venv (set TORCH_VENV); see the installation notes at the top of $0" >&2
    exit 2
fi
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet
uptime
exec "$venv/bin/python" scripts/bench_vs_pytorch.py --binary "$target/release/rankcollapse" "$@"

#!/usr/bin/env bash
# Build .venv-peers, the virtualenv of the torchgeo peer of benchmarks/bench_peers.py.
#
#   bash benchmarks/peers_env.sh            # then: python -m benchmarks.bench_peers
#
# torchgeo needs torchvision, and the torchvision wheels that load need torch==2.14.1 (the
# CUDA build, ~5.5 GB with its nvidia-* wheels), while the main environment pins the CPU
# torch==2.13.0 (torchvision 0.28 does not load next to it: "operator torchvision::nms does
# not exist"). So torchgeo lives in its own virtualenv; bench_peers.py runs its tiling peer
# there in a child process (same GeoTIFF, same tile size) and everything else in-process.
# PYTHON picks the interpreter (default: python3; torchgeo 0.8 needs Python >= 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-peers}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install --upgrade pip >/dev/null
"$VENV/bin/pip" install "torch==2.14.1" "torchvision==0.29.1" -e ".[bench-peers]"
"$VENV/bin/python" -c "import torchgeo, torchvision, torch; print('torchgeo', torchgeo.__version__, 'torchvision', torchvision.__version__, 'torch', torch.__version__)"
echo "PEERS-VENV-DONE"

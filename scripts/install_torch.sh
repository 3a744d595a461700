#!/usr/bin/env bash
# Install torch into the environment of the Python given as $1: the CUDA build where an NVIDIA GPU
# answers, else the CPU build.
#
# Why: `pip install torch==2.13.0` from the default index (PyPI) resolves the CUDA build, ~2.75 GB
# of nvidia wheels, even on a machine without a GPU: the pin selects a version, not CPU. CPU wheels
# come from PyTorch's CPU index. Where that index cannot be reached (a machine that reaches PyPI
# only), the default index is used instead: that gives the CPU wheel only where the default index
# or pip's find-links hold one; on public PyPI it is the CUDA build again (said below when it happens).
#
#   scripts/install_torch.sh .venv/bin/python        TORCH=torch==2.13.0 by default
set -euo pipefail

python=${1:?usage: scripts/install_torch.sh PYTHON}
torch=${TORCH:-torch==2.13.0}
cpu_index=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

# Does the index answer within 10 s? (pip itself would retry for minutes before giving up.)
reachable() {
    "$python" - "$1" <<'PY'
import sys
import urllib.request

try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10)
except OSError as e:
    print(f"install_torch: {sys.argv[1]} cannot be reached ({e})")
    sys.exit(1)
PY
}

if nvidia-smi > /dev/null 2>&1; then
    echo "install_torch: NVIDIA GPU found: $torch from the default index (CUDA build)"
    "$python" -m pip install -q "$torch"
elif reachable "$cpu_index"; then
    echo "install_torch: no NVIDIA GPU (nvidia-smi absent or failing): $torch from $cpu_index"
    "$python" -m pip install -q --index-url "$cpu_index" "$torch"
else
    echo "install_torch: no NVIDIA GPU and no CPU index: $torch from the default index" \
        "(CPU only where it holds a CPU wheel; public PyPI gives the CUDA build)"
    "$python" -m pip install -q "$torch"
fi

#!/usr/bin/env bash
# Create the virtual environment and install chargen with its test tools.
# On a machine without an NVIDIA GPU, install PyTorch's CPU build first: the default PyPI wheel
# for Linux bundles CUDA and weighs several GB.
set -euo pipefail
venv=${1:-.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found: installing PyTorch with CUDA"
    pip install "torch>=2.3"
  else
    echo "setup: no NVIDIA GPU: installing the CPU build of PyTorch"
    pip install --retries 1 --timeout 20 --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0+cpu"
  fi
fi
pip install -e ".[test,all]"
bash "$(dirname "$0")/install-browser.sh"
echo "setup: done ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"

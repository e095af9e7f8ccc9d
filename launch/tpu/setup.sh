#!/usr/bin/env bash
# The default install on a Cloud TPU VM worker (what `tpu.setup_command` runs unless set), from the
# project directory (tpu.workdir) where the source archive was unpacked: a virtual environment `.venv`
# there with the project and jax[tpu] (the `tpu` extra). Run again, it only updates what changed.
#
#   bash launch/tpu/setup.sh [PROJECT_DIR]
#
# The TPU runtime images (Ubuntu 22.04) ship Python 3.10 and the project needs >= 3.11: the first of
# python3.13, python3.12, python3.11, python3 that is new enough is used; when none is, python3.11 is
# installed with apt (Ubuntu 22.04 has it). SCALING_PYTHON names another interpreter;
# SCALING_EXTRAS the extras to install (default: tpu).
set -euo pipefail
cd "${1:-.}"

new_enough() {
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

python="${SCALING_PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null && new_enough "$candidate"; then
      python="$candidate"
      break
    fi
  done
fi
if [ -z "$python" ]; then
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv
  python=python3.11
fi

if [ ! -x .venv/bin/python ] || ! new_enough .venv/bin/python; then
  rm -rf .venv
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${SCALING_EXTRAS-tpu}]"
# Importing only: touching the TPU here would start the runtime on one worker outside the job.
.venv/bin/python -c 'import sys, jax, scaling; print(f"scaling setup: jax {jax.__version__}, Python {sys.version.split()[0]}")'

#!/usr/bin/env bash
# Create .venv (when missing) and install contractive into it, editable, with the test tools.
# Idempotent and quick when nothing changed. TORCH_SPEC picks the PyTorch build, e.g.
#   TORCH_SPEC="torch" ./setup.sh        # the default build for your platform (CUDA on Linux)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.contractive-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.sh -nt "$stamp" ]; then
  echo "setup.sh: installing contractive into .venv (first time: about a minute)" >&2
  pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
  # The CPU build of torch 2.13.0 that lies on this machine kind's disk; any torch>=2.4 works.
  "${pip[@]}" "${TORCH_SPEC:-torch==2.13.0}" || "${pip[@]}" "torch>=2.4"
  "${pip[@]}" -e ".[dev]"
  touch "$stamp"
fi

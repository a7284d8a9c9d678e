#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py; docs/gpu.md): `bash bench/gpu_check.sh [--smoke] [OUT_DIR]`.
# On a bare GPU machine it uses that machine's python3 and torch; wheels placed in .whl/ (for a package
# the image lacks) are installed into a temporary folder first, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if compgen -G ".whl/*.whl" >/dev/null; then
    site=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" bench/gpu_check.py "$@"

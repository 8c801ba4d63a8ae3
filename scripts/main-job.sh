#!/usr/bin/env bash
# Set up tvm-place on a fresh machine, then run the main job (scripts/main_job.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "onnx"
exec .venv/bin/python scripts/main_job.py "$@"

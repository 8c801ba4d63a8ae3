#!/usr/bin/env bash
# Create .venv (if missing) and install tvm-place with the extras named in $1 (e.g. "test,torch").
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
spec="."
if [ -n "$extras" ]; then
  spec=".[${extras}]"
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"

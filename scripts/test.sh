#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "test,torch"
export TVM_PLACE_CACHE_DIR="${TVM_PLACE_CACHE_DIR:-$PWD/.tvm_place_cache}"
exec .venv/bin/python -m pytest "$@"

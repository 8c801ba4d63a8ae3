#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "test,torch,hub"
export TVM_PLACE_CACHE_DIR="${TVM_PLACE_CACHE_DIR:-$PWD/.tvm_place_cache}"
# Two pytest workers: the suite is CPU-bound Python and the target machine has two cores.
# loadgroup: the tests of xdist group "ray" share one worker, and so one Ray instance.
exec .venv/bin/python -m pytest -n "${TVM_PLACE_TEST_WORKERS:-2}" --dist loadgroup "$@"

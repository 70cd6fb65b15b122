#!/usr/bin/env bash
# Installs what is missing, checks style, and runs the whole test suite: unit tests, then
# integration tests against a real local stack that the tests start on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
./cluster/setup.sh
.venv/bin/ruff check ray_apps tests bench
.venv/bin/ruff format --check ray_apps tests bench
.venv/bin/python -m pytest tests "$@"

#!/usr/bin/env bash
# Set up (scripts/setup.sh), then what CI checks: ruff, ruff format, mypy and the test suite, with a PostgreSQL
# server on loopback for the shared Optuna study test. Idempotent; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-egl}"   # headless MuJoCo rendering through Mesa's EGL
PY="$(bash scripts/setup.sh | tail -n 1)"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
"$PY" -m mypy
bash .ci/postgres.sh
"$PY" -m pytest "$@"

#!/usr/bin/env bash
# Set up (scripts/setup.sh), then what CI checks: ruff, ruff format, mypy, the test suite (with a PostgreSQL
# server on loopback for the shared Optuna study test) and the docstring examples. Idempotent; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-egl}"   # headless MuJoCo rendering through Mesa's EGL
PY="$(bash scripts/setup.sh | tail -n 1)"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
"$PY" -m mypy
bash .ci/postgres.sh
"$PY" -m pytest "$@"
# The library's docstring examples (">>>") run as doctests; every module imports without its optional simulator
# (examples that need mani_skill, libero or a GPU stay literal blocks). The deprecated alias modules are left out:
# importing them warns, and they have no examples.
"$PY" -m pytest -q --doctest-modules sb3_vla \
  --ignore=sb3_vla/vla --ignore=sb3_vla/wrappers/residual_map.py --ignore=sb3_vla/wrappers/residual_math.py \
  --ignore=sb3_vla/wrappers/adapters.py --ignore=sb3_vla/pretrain.py

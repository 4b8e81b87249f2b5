#!/usr/bin/env bash
# Install LIBERO (PyPI libero 0.1.1) and robosuite 1.4.0 into the current environment WITHOUT their pinned
# dependencies, so that mujoco (>= 4.0, for GarmentFold-v0) and torch stay as they are. sb3_vla.envs.libero.compat
# patches the three robosuite functions that break on MuJoCo >= 3.10 when a LIBERO env is built.
#
# Only what the LIBERO envs import is installed: bddl (BDDL task parser, also --no-deps: its jupytext/pytest
# requirements are for its own notebooks), numba (robosuite's transform utils), termcolor, future, easydict.
# libero's other requirements (robomimic, hydra, wandb, thop, einops) are for its lifelong-learning training code,
# which sb3-vla does not use.
#
# Scene/object assets are not on PyPI: LIBERO downloads them from the Hugging Face hub at first use, or set
# SB3_VLA_LIBERO_ASSETS (or pass assets_path=) to a local copy of LIBERO's libero/libero/assets folder.
#
# Usage: .ci/install_libero.sh   (idempotent; prints the mujoco / torch versions it left in place)
set -euo pipefail
PY=${PYTHON:-python}
"$PY" -m pip install --no-deps "libero==0.1.1" "robosuite==1.4.0" "bddl==1.0.1"
"$PY" -m pip install "numba>=0.57" termcolor "future>=0.18.2" easydict pyopengl pyyaml
"$PY" -c "import mujoco, torch, libero, robosuite; print('mujoco', mujoco.__version__, 'torch', torch.__version__, 'robosuite', robosuite.__version__)"

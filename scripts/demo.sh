#!/usr/bin/env bash
# Set up (scripts/setup.sh), then the headline job on a short demo budget: residual SAC on the shipped SmallVLA
# base in GarmentFold-v0 (zoo_configs/sac.yml), with a progress bar, then the base's and the trained policy's
# success on the same seeded evaluation episodes. Idempotent: each run trains a new run folder under logs/demo.
#   DEMO_STEPS     agent decisions to train (default 2000 = 8000 env steps, a few minutes on 2 CPU cores; the
#                  full budget is 25000, and the actor trains after the first 1250, the critic burn-in)
#   DEMO_EPISODES  evaluation episodes for the summary (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-egl}"
PY="$(bash scripts/setup.sh | tail -n 1)"
STEPS="${DEMO_STEPS:-2000}"
EPISODES="${DEMO_EPISODES:-10}"
LOG="logs/demo"
"$PY" -m sb3_vla.train --algo sac --env GarmentFold-v0 -n "$STEPS" -f "$LOG" --eval-freq 0
RUN="$(ls -td "$LOG"/sac/GarmentFold-v0_* | head -n 1)"
echo "Base and trained policy on the same $EPISODES episodes:"
"$PY" -m sb3_vla.evaluate "$RUN" --episodes "$EPISODES"

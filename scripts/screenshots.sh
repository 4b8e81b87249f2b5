#!/usr/bin/env bash
# Remake the README's pictures with the README's own commands (about 10 minutes on 2 CPU cores):
#   docs/images/pendulum_curve.png   python -m sb3_vla.plot on a residual SAC run of Pendulum-v1 (the zoo YAML entry)
#   docs/images/garment_fold.gif     python -m sb3_vla.record on a short headline run (GarmentFold-v0, SmallVLA base)
#   docs/images/garment_fold_frame.png   one frame of that GIF
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-egl}"
PY="${PY:-python}"
LOG="$(mktemp -d)"
trap 'rm -rf "$LOG"' EXIT
"$PY" -m sb3_vla.train --algo sac --env Pendulum-v1 -n 8000 --eval-freq 1000 --eval-episodes 10 -f "$LOG" --seed 0
"$PY" -m sb3_vla.plot "$LOG"/sac/Pendulum-v1_* --out docs/images/pendulum_curve.png \
  --title "Residual SAC on Pendulum-v1 (zero base), 10 fixed eval episodes"
"$PY" -m sb3_vla.train --algo sac --env GarmentFold-v0 -n 500 --eval-freq 0 -f "$LOG" --seed 0
"$PY" -m sb3_vla.record "$LOG"/sac/GarmentFold-v0_* --out docs/images/garment_fold.gif --episodes 1 --fps 8
"$PY" - <<'PY'
from PIL import Image, ImageSequence

gif = Image.open("docs/images/garment_fold.gif")
frames = list(ImageSequence.Iterator(gif))
frames[len(frames) * 2 // 3].convert("RGB").save("docs/images/garment_fold_frame.png")
print(f"{len(frames)} frames; saved frame {len(frames) * 2 // 3}")
PY

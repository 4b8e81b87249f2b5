#!/usr/bin/env bash
# Debian packages sb3-vla's tests need (idempotent; as root or with sudo):
#  - offscreen OpenGL for MuJoCo rendering: EGL (MUJOCO_GL=egl) and OSMesa (MUJOCO_GL=osmesa)
#  - a Vulkan device for ManiSkill3/SAPIEN: Mesa lavapipe >= 23 from the backports suite (.ci/install_vulkan.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends libegl1 libgl1 libgles2 libegl-mesa0 libgl1-mesa-dri libosmesa6 \
  >/dev/null
bash .ci/install_vulkan.sh

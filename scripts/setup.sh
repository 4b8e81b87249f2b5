#!/usr/bin/env bash
# Set up sb3-vla on a Debian/Ubuntu machine with Python >= 3.10 (idempotent): the Debian packages for headless
# rendering and ManiSkill's Vulkan device, the library with every optional backend and the test tools, and LIBERO.
# Uses the active Python environment; where that Python is the system's own (PEP 668, "externally managed"), it
# creates and uses .venv instead. Prints the Python it set up, last, for the calling script.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
PY="${PYTHON:-python3}"
bash .ci/setup_system.sh >&2
if [ -z "${VIRTUAL_ENV:-}" ] && "$PY" - <<'PYEOF'
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)
PYEOF
then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  PY="$PWD/.venv/bin/python"
fi
"$PY" -m pip install -q -e ".[dev]" >&2
PYTHON="$PY" bash .ci/install_libero.sh >&2
echo "$PY"

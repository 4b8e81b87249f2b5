#!/usr/bin/env bash
# Install a Vulkan device for SAPIEN (ManiSkill3) on a CPU-only Debian machine: the Vulkan loader and
# Mesa's lavapipe software ICD, version >= 23 (Debian 12's Mesa 22 lacks a feature SAPIEN needs).
#
# The backports suite is derived from the machine's existing Debian apt source entry (deb822 files in
# /etc/apt/sources.list.d/*.sources or one-line entries in /etc/apt/sources.list): the same URI and signing
# key, suite "<codename>-backports". No mirror host name is written here. Idempotent: does nothing when a
# lavapipe >= 23 is already installed, and adds the backports entry only once.
#
# Usage: .ci/install_vulkan.sh             (as root, or with sudo available)
#        .ci/install_vulkan.sh --dry-run   print the backports entry it would add, change nothing
set -euo pipefail

MIN_MESA_MAJOR=23
SOURCES_DIR=${APT_SOURCES_DIR:-/etc/apt/sources.list.d}
SOURCES_LIST=${APT_SOURCES_LIST:-/etc/apt/sources.list}
LIST_FILE=$SOURCES_DIR/sb3-vla-backports.sources
DRY_RUN=0
[ "${1:-}" = "--dry-run" ] && DRY_RUN=1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install_vulkan.sh: needs root (or sudo) to run apt-get" >&2; exit 1
  fi
fi

mesa_major() {
  local v
  v=$(dpkg-query -W -f='${Status} ${Version}' mesa-vulkan-drivers 2>/dev/null | awk '/install ok installed/ {print $4}')
  [ -n "$v" ] || { echo 0; return; }
  v=${v#*:}            # drop an epoch
  echo "${v%%.*}"
}

have_lavapipe() {
  [ "$(mesa_major)" -ge "$MIN_MESA_MAJOR" ] && dpkg-query -W -f='${Status}' libvulkan1 2>/dev/null | grep -q "install ok installed" \
    && ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1
}

if [ "$DRY_RUN" -eq 0 ] && have_lavapipe; then
  echo "install_vulkan.sh: lavapipe (mesa-vulkan-drivers $(mesa_major).x) and libvulkan1 already installed"
  exit 0
fi

if [ ! -r /etc/os-release ]; then echo "install_vulkan.sh: no /etc/os-release; install a Vulkan ICD by hand" >&2; exit 1; fi
# shellcheck disable=SC1091
. /etc/os-release
if [ "${ID:-}" != "debian" ] || [ -z "${VERSION_CODENAME:-}" ]; then
  echo "install_vulkan.sh: not Debian (${ID:-unknown}); install Mesa lavapipe >= ${MIN_MESA_MAJOR} (mesa-vulkan-drivers)" \
       "and the Vulkan loader (libvulkan1) with your package manager" >&2
  exit 1
fi
CODENAME=$VERSION_CODENAME
BACKPORTS="${CODENAME}-backports"

backports_configured() {
  grep -rhsE "^[^#]*(Suites:.*[[:space:]]|deb[[:space:]].*[[:space:]])${BACKPORTS}([[:space:]]|$)" \
    "$SOURCES_LIST" "$SOURCES_DIR"/*.list "$SOURCES_DIR"/*.sources >/dev/null 2>&1
}

# Print "URI|SIGNED_BY|COMPONENTS" of the first enabled entry that serves the release's own suite.
find_debian_entry() {
  local f
  for f in "$SOURCES_DIR"/*.sources; do
    [ -r "$f" ] || continue
    awk -v suite="$CODENAME" '
      function flush() {
        if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no" && uri != "" && (" " suites " ") ~ (" " suite " ")) {
          if (comps == "") comps = "main"
          printf "%s|%s|%s\n", uri, signed, comps; found = 1; exit
        }
        types = ""; uri = ""; suites = ""; signed = ""; comps = ""; enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      {
        key = tolower($1); sub(/:$/, "", key); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
        if (key == "types") types = val
        else if (key == "uris") { split(val, u, /[ \t]+/); uri = u[1] }
        else if (key == "suites") suites = val
        else if (key == "components") comps = val
        else if (key == "signed-by") signed = val
        else if (key == "enabled") enabled = tolower(val)
      }
      END { if (!found) flush() }
    ' "$f" | head -n1 | grep . && return 0
  done
  if [ -r "$SOURCES_LIST" ]; then
    # one-line form: deb [options] URI SUITE COMPONENTS...
    awk -v suite="$CODENAME" '
      $1 == "deb" {
        i = 2; signed = ""
        if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) { if ($i ~ /signed-by=/) { signed = $i }; i++ }
                          if ($i ~ /signed-by=/) signed = $i; i++ }
        sub(/.*signed-by=/, "", signed); sub(/\]$/, "", signed)
        if ($(i + 1) == suite) { comps = ""; for (j = i + 2; j <= NF; j++) comps = comps (comps ? " " : "") $j
                                 printf "%s|%s|%s\n", $i, signed, comps; exit }
      }' "$SOURCES_LIST" | head -n1 | grep . && return 0
  fi
  return 1
}

if [ "$DRY_RUN" -eq 0 ] && backports_configured; then
  echo "install_vulkan.sh: ${BACKPORTS} already in the apt sources"
else
  if ! entry=$(find_debian_entry); then
    echo "install_vulkan.sh: no enabled apt entry for suite '${CODENAME}' found in /etc/apt; add ${BACKPORTS} by hand" >&2
    exit 1
  fi
  IFS="|" read -r URI SIGNED COMPS <<<"$entry"
  backports_entry() {
    echo "# Added by sb3-vla .ci/install_vulkan.sh: Mesa lavapipe >= ${MIN_MESA_MAJOR} for SAPIEN / ManiSkill3"
    echo "Types: deb"
    echo "URIs: ${URI}"
    echo "Suites: ${BACKPORTS}"
    echo "Components: ${COMPS}"
    if [ -n "$SIGNED" ]; then echo "Signed-By: ${SIGNED}"; fi
  }
  if [ "$DRY_RUN" -eq 1 ]; then backports_entry; exit 0; fi
  echo "install_vulkan.sh: adding ${BACKPORTS} from the existing entry's URI (components: ${COMPS})"
  backports_entry | $SUDO tee "$LIST_FILE" >/dev/null
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends -t "$BACKPORTS" mesa-vulkan-drivers libvulkan1
# vulkan-tools (vulkaninfo) is handy for checking the device but not required
$SUDO apt-get install -y -qq --no-install-recommends vulkan-tools >/dev/null 2>&1 || true

if ! have_lavapipe; then
  echo "install_vulkan.sh: mesa-vulkan-drivers is $(mesa_major).x after install; SAPIEN needs >= ${MIN_MESA_MAJOR}" >&2
  exit 1
fi
echo "install_vulkan.sh: installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers) (lavapipe)"
if command -v vulkaninfo >/dev/null 2>&1; then vulkaninfo --summary 2>/dev/null | grep -E "deviceName|driverInfo" || true; fi

#!/usr/bin/env bash
# Runs the whole test suite. Sets everything up first (scripts/setup.sh is
# quick when nothing changed). Extra arguments go to pytest, e.g.
#   scripts/test.sh test/unit -k manifest
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
# vision_msgs: the real package where installed, else the test stand-in (test/vision_msgs_standin/README.md),
# for the tests only. RMD_VISION_MSGS_STANDIN=0 runs them as on a robot without vision_msgs.
if [ "${RMD_VISION_MSGS_STANDIN:-1}" != 0 ] && ! python -c 'import vision_msgs.msg' 2>/dev/null; then
  bash "$root/scripts/vision_msgs_standin.sh"
  set +u
  # shellcheck disable=SC1091
  COLCON_CURRENT_PREFIX="$root/.colcon/vision_msgs_standin/install" \
    source "$root/.colcon/vision_msgs_standin/install/local_setup.sh"
  set -u
fi
cd "$root"
exec pytest "$@"

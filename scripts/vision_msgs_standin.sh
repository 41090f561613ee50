#!/usr/bin/env bash
# Builds the vision_msgs TEST STAND-IN (test/vision_msgs_standin/README.md) into
# .colcon/vision_msgs_standin/install, once: it is rebuilt only when its files change
# (about 2 minutes on two cores). scripts/test.sh runs it when no real vision_msgs is
# importable and sources the result for the tests only; scripts/env.sh never does.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/paths.sh"
venv="$rmd_venv"
source_dir="$root/test/vision_msgs_standin"
work="$root/.colcon/vision_msgs_standin"
say() { printf '[vision_msgs stand-in] %s\n' "$*"; }

want="$(cd "$source_dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
stamp="$work/install/sources.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
say "building the test stand-in for vision_msgs (first run: about 2 minutes)"
rm -rf "$work"
mkdir -p "$work"
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
"$venv/bin/colcon" --log-base "$work/log" build \
  --base-paths "$source_dir" \
  --build-base "$work/build" --install-base "$work/install" \
  --event-handlers console_direct- \
  --cmake-args -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF \
  > "$work/build.log" 2>&1 || { tail -n 40 "$work/build.log"; say "colcon build failed; full log: $work/build.log"; exit 1; }
echo "$want" > "$stamp"

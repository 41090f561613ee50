#!/usr/bin/env bash
# Runs the whole test suite. Sets everything up first (scripts/setup.sh is
# quick when nothing changed). Extra arguments go to pytest, e.g.
#   scripts/test.sh test/unit -k manifest
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
cd "$root"
exec pytest "$@"

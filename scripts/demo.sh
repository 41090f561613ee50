#!/usr/bin/env bash
# Brings up the main job: demo camera, two lifecycle perception nodes and the
# manager, with EfficientNet-Lite0 deployed, printing what the robot sees.
# Sets everything up first. Arguments go to the demo, e.g. --duration 30.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
exec "$root/.colcon/install/robot_model_deployer/lib/robot_model_deployer/demo" "$@"

#!/usr/bin/env bash
# Starts the node graph without `ros2 launch`: perception_a, perception_b, shadow
# and model_manager (and with --demo-camera the demo camera), with
# config/deployer.yaml and config/fastdds_large_data.xml, as
# launch/deployer.launch.py does. Ctrl-C stops every node. Sets everything up
# first. Arguments go to the graph command: scripts/graph.sh --help lists them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" >&2
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
exec "$root/.colcon/install/robot_model_deployer/lib/robot_model_deployer/graph" "$@"

# Source this file (bash) to use the built package: `source scripts/env.sh`.
# It activates the virtual environment and the colcon install space that
# scripts/setup.sh made.
_rmd_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="$_rmd_root" source "$_rmd_root/scripts/paths.sh"
_rmd_venv="$rmd_venv"
if [ ! -f "$_rmd_root/.colcon/install/setup.sh" ]; then
  echo "robot_model_deployer is not built yet: run scripts/setup.sh first" >&2
  return 1
fi
# colcon's and venv's scripts read unset variables: relax `set -u` while sourcing them.
_rmd_nounset="$(set +o | grep nounset)"
set +u
# shellcheck disable=SC1091
source "$_rmd_venv/bin/activate"
export AMENT_PREFIX_PATH="$_rmd_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
COLCON_CURRENT_PREFIX="$_rmd_root/.colcon/install" source "$_rmd_root/.colcon/install/setup.sh"
eval "$_rmd_nounset"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
unset _rmd_root _rmd_venv _rmd_nounset rmd_venv

# Where set-up puts things for the checkout at $root (sourced, sets $rmd_venv).
# The virtual environment lives outside the checkout: CMake rejects exported
# include paths (numpy's) that lie inside the package source directory.
_rmd_key="$(printf '%s' "$root" | sha256sum | cut -c1-10)"
rmd_venv="${RMD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/robot_model_deployer/venv-$_rmd_key}"
unset _rmd_key

#!/usr/bin/env bash
# Mender for fleet rollout (docs/fleet.md): the client and the artifact tool
# from Debian (mender-client 3.4, mender-artifact 3.9), this checkout's
# rmd-model update module in Mender's module directory, and the
# /etc/mender/artifact_info a standalone client needs. Only as root (CI is);
# otherwise it says what to run, and the Mender tests skip with that reason.
# Called by scripts/setup.sh; safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf '[setup] %s\n' "$*"; }
packages=(mender-client mender-artifact)
install_hint="sudo apt-get update && sudo apt-get install --no-install-recommends ${packages[*]}; then sudo bash scripts/setup_mender.sh"
module_dir=/usr/share/mender/modules/v3

have_tools() { command -v mender >/dev/null && command -v mender-artifact >/dev/null; }

if [ "$(id -u)" != 0 ]; then
  if have_tools && cmp -s "$root/mender/rmd-model" "$module_dir/rmd-model" && [ -f /etc/mender/artifact_info ]; then
    say "Mender client, artifact tool and the rmd-model module are installed"
  else
    say "not root: Mender set-up skipped (the Mender tests skip); to run them: $install_hint"
  fi
  exit 0
fi

if ! have_tools; then
  if ! command -v apt-get >/dev/null; then
    say "no apt-get here: install ${packages[*]} (Debian 12 versions 3.4 and 3.9) by hand; the Mender tests skip"
    exit 0
  fi
  say "installing ${packages[*]} with apt-get"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${packages[@]}"; } > "$root/.colcon/mender-apt.log" 2>&1; then
    tail -n 5 "$root/.colcon/mender-apt.log"
    say "apt-get could not install ${packages[*]} (log: .colcon/mender-apt.log); the Mender tests skip"
    exit 0
  fi
fi
say "$(mender --version 2>/dev/null | head -n 1 | cut -f1 | sed 's/^/mender-client /'), $(mender-artifact --version 2>/dev/null)"

mkdir -p "$module_dir"
if ! cmp -s "$root/mender/rmd-model" "$module_dir/rmd-model"; then
  install -m 0755 "$root/mender/rmd-model" "$module_dir/rmd-model"
  say "installed the rmd-model update module as $module_dir/rmd-model"
fi
# A standalone client reads the installed artifact's name here until it has installed one itself.
if [ ! -f /etc/mender/artifact_info ]; then
  mkdir -p /etc/mender
  echo "artifact_name=unprovisioned" > /etc/mender/artifact_info
  say "wrote /etc/mender/artifact_info (artifact_name=unprovisioned)"
fi

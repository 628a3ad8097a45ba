#!/usr/bin/env bash
# Installs a single-machine SLURM (controller, node daemon, client tools, munge)
# for tests/test_slurm.py. Idempotent: returns at once when already installed.
# Starts no daemon; the tests start their own with a temp slurm.conf.
#
# Usage (as root, Debian/Ubuntu): .ci/install_slurm.sh
set -euo pipefail

if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v sbatch >/dev/null && command -v scontrol >/dev/null; then
  echo "slurm already installed: $(dpkg-query -W -f='${Version}' slurmctld 2>/dev/null || echo ?)"
  exit 0
fi

SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101: the packages' postinst scripts must not start daemons.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge
echo "installed slurm $(dpkg-query -W -f='${Version}' slurmctld)"

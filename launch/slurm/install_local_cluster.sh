#!/usr/bin/env bash
# Installs SLURM (slurmctld, slurmd, client commands, munge) from the Debian/Ubuntu archive so the
# launcher tests can start a throwaway one-node cluster (tests/slurm_testlib.py). Does nothing if sbatch,
# slurmctld and slurmd are there already; otherwise needs root and apt-get (about 20 s).
# Usage: launch/slurm/install_local_cluster.sh
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"  # slurmctld and slurmd live in sbin
if command -v sbatch >/dev/null 2>&1 && command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1; then
  echo "slurm already installed: $(slurmd -V)"
  exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
  echo "install_local_cluster.sh: must run as root to install slurm-wlm" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_local_cluster.sh: needs apt-get (Debian/Ubuntu)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends slurm-wlm
echo "installed: $(slurmd -V)"  # client commands need a slurm.conf even for --version

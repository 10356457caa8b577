#!/bin/bash
# Adapted from the tested single-node recipe in ../shared/slurm (see its README for the pitfalls).
# Install the Debian packages for a single-node SLURM on localhost; WITH_DBD=1 adds mariadb + slurmdbd (sacct works).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS="munge slurmctld slurmd slurm-client"
[ "${WITH_DBD:-0}" = 1 ] && PKGS="$PKGS slurmdbd mariadb-server"
apt-get update -qq
apt-get install -y -qq --no-install-recommends $PKGS >/dev/null

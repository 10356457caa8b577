#!/bin/bash
# Adapted from the tested single-node recipe in ../shared/slurm (see its README for the pitfalls).
# Stop the daemons started by start_slurm.sh, by PID (reverse order).
S=${SLURM_STATE_DIR:-/tmp/slurm-local}
stop() { # $1 = pidfile
  [ -s "$1" ] || return 0; local p; p=$(cat "$1")
  kill -0 "$p" 2>/dev/null || return 0
  kill -TERM "$p"; for i in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.2; done
  echo "PID $p ($1) did not exit after TERM" >&2
}
stop $S/slurmd.pid; stop $S/slurmctld.pid; stop $S/slurmdbd.pid
stop /run/mysqld/mysqld.pid; stop /run/munge/munged.pid

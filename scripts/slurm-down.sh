#!/usr/bin/env bash
# Stops what scripts/slurm-up.sh started, and only that: the daemons whose PID files it recorded
# in var/slurm/started/. Daemons that were already running before slurm-up are left alone.
# Jobs still in the queue are cancelled first so that no trainer outlives the cluster.
#
# Usage: scripts/slurm-down.sh [--quiet]     (SLURM_STATE_DIR overrides var/slurm)
set -uo pipefail

QUIET=0
[[ "${1:-}" == "--quiet" ]] && QUIET=1
say() { [[ $QUIET == 1 ]] || echo "slurm-down: $*" >&2; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SLURM_STATE_DIR:-$REPO/var/slurm}"
STARTED="$STATE/started"

stop() {  # stop NAME SYSTEM_PIDFILE: NAME's recorded PID, only if it is still that daemon
    local name="$1" sys_pidfile="$2" rec="$STARTED/$1.pid" pid comm
    [[ -s "$rec" ]] || return 0
    pid="$(tr -dc '0-9' < "$rec")"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
        if [[ "$comm" == "$name" ]]; then
            say "stopping $name ($pid)"
            kill -TERM "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        fi
    fi
    rm -f "$rec"
    # slurmctld drops privileges and cannot remove its root-owned PID file; a stale one breaks
    # later package operations and the next start.
    [[ -n "$sys_pidfile" ]] && rm -f "$sys_pidfile"
}

if [[ -s "$STARTED/slurmctld.pid" ]] && command -v squeue >/dev/null; then
    ids="$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')"
    if [[ -n "${ids// /}" ]]; then
        say "cancelling jobs $ids"
        # shellcheck disable=SC2086
        scancel $ids 2>/dev/null
        sleep 1
    fi
fi
stop sshd "$STATE/sshd.pid"
stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
stop munged ""
say "done"

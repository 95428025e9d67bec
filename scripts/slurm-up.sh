#!/usr/bin/env bash
# A real single-node Slurm cluster plus a loopback sshd (a stand-in LUMI login node) for the
# Slurm backend's tests and for local trials of TRAINING_BACKEND=slurm.
#
# Installs (Debian packages) and starts whatever is absent: munged, slurmctld, slurmd and an sshd
# on 127.0.0.1:2222 whose keys, config, known_hosts and scratch folder live in var/slurm/ (git-
# ignored). Idempotent: running daemons are left alone, and only the daemons this script started
# are recorded in var/slurm/started/ so that scripts/slurm-down.sh stops those and nothing else.
# Prints the environment variables that point the platform at this cluster (also written to
# var/slurm/env.sh). Needs root (apt-get, munge and slurm daemons); no systemd required.
#
# Usage: scripts/slurm-up.sh [--quiet]     (SLURM_STATE_DIR overrides var/slurm)
set -euo pipefail

QUIET=0
[[ "${1:-}" == "--quiet" ]] && QUIET=1
say() { [[ $QUIET == 1 ]] || echo "slurm-up: $*" >&2; }
die() { echo "slurm-up: $*" >&2; exit 1; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SLURM_STATE_DIR:-$REPO/var/slurm}"
SSH_PORT="${SLURM_TEST_SSH_PORT:-2222}"
PYTHON="${SLURM_TEST_PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)"

[[ $(id -u) == 0 ]] || die "must run as root (apt-get, munged, slurmctld, slurmd)"

mkdir -p "$STATE/started" "$STATE/ssh" "$STATE/scratch" "$STATE/log"
chmod 0755 "$STATE" "$STATE/scratch"

alive() {  # alive PIDFILE -> 0 when the process named in PIDFILE runs
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(tr -dc '0-9' < "$1")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

# --- packages ---------------------------------------------------------------------------------
PKGS=(slurmctld slurmd slurm-client munge openssh-server)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    guard_created=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        # Package scripts must start nothing: this script starts the daemons it wants itself.
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        guard_created=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$STATE/log/apt.log" 2>&1 || {
        apt-get update -qq >>"$STATE/log/apt.log" 2>&1
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$STATE/log/apt.log" 2>&1
    } || { [[ $guard_created == 1 ]] && rm -f /usr/sbin/policy-rc.d; die "apt-get failed, see $STATE/log/apt.log"; }
    [[ $guard_created == 1 ]] && rm -f /usr/sbin/policy-rc.d
fi

# --- munge ------------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
if ! alive /run/munge/munged.pid; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
    cp /run/munge/munged.pid "$STATE/started/munged.pid" 2>/dev/null \
        || pgrep -n -x munged > "$STATE/started/munged.pid"
fi

# --- slurm.conf -------------------------------------------------------------------------------
NODE="$(hostname -s)"
MARK="# written by synapsex scripts/slurm-up.sh"
CONF=/etc/slurm/slurm.conf
if [[ ! -s $CONF ]] || head -n1 "$CONF" | grep -qF "$MARK"; then
    hw="$(slurmd -C | head -n1)"
    cpu_fields="$(grep -oE '(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' <<<"$hw" | tr '\n' ' ')"
    real_mem="$(grep -oE 'RealMemory=[0-9]+' <<<"$hw" | cut -d= -f2)"
    real_mem=$((real_mem * 95 / 100))
    install -d /etc/slurm
    cat > "$CONF.new" <<EOF
$MARK
ClusterName=ci
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
AccountingStorageType=accounting_storage/none
MinJobAge=3600
KillWait=5
InactiveLimit=0
NodeName=${NODE} NodeAddr=127.0.0.1 ${cpu_fields}RealMemory=${real_mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    if ! cmp -s "$CONF.new" "$CONF"; then mv "$CONF.new" "$CONF"; else rm -f "$CONF.new"; fi
else
    say "$CONF was not written by this script: using it as it is"
fi
install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm

if ! alive /run/slurmctld.pid; then
    say "starting slurmctld"
    rm -f /run/slurmctld.pid  # a stale one (slurmctld cannot remove it as user slurm)
    /usr/sbin/slurmctld
    for _ in $(seq 50); do alive /run/slurmctld.pid && break; sleep 0.1; done
    alive /run/slurmctld.pid || die "slurmctld did not start; see /var/log/slurm/slurmctld.log"
    cp /run/slurmctld.pid "$STATE/started/slurmctld.pid"
fi
if ! alive /run/slurmd.pid; then
    say "starting slurmd"
    rm -f /run/slurmd.pid
    /usr/sbin/slurmd
    for _ in $(seq 50); do alive /run/slurmd.pid && break; sleep 0.1; done
    alive /run/slurmd.pid || die "slurmd did not start; see /var/log/slurm/slurmd.log"
    cp /run/slurmd.pid "$STATE/started/slurmd.pid"
fi

node_state=""
for _ in $(seq 150); do
    node_state="$(sinfo -h -N -o %t 2>/dev/null | head -n1 || true)"
    case "$node_state" in
        idle*|mix*|alloc*) break ;;
        drain*|down*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.2
done
case "$node_state" in idle*|mix*|alloc*) ;; *) die "node state is '$node_state', not idle" ;; esac

# --- loopback sshd (the login node) -----------------------------------------------------------
SSH="$STATE/ssh"
[[ -s "$SSH/host_ed25519_key" ]] || ssh-keygen -q -t ed25519 -N '' -C synapsex-slurm-host -f "$SSH/host_ed25519_key"
[[ -s "$SSH/id_ed25519" ]] || ssh-keygen -q -t ed25519 -N '' -C synapsex-slurm-client -f "$SSH/id_ed25519"
cp "$SSH/id_ed25519.pub" "$SSH/authorized_keys"
chmod 0600 "$SSH/host_ed25519_key" "$SSH/id_ed25519" "$SSH/authorized_keys"
echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$SSH/host_ed25519_key.pub")" > "$SSH/known_hosts"
cat > "$SSH/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSH/host_ed25519_key
PidFile $STATE/sshd.pid
AuthorizedKeysFile $SSH/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
MaxStartups 50:30:100
MaxSessions 50
EOF
if ! alive "$STATE/sshd.pid"; then
    say "starting sshd on 127.0.0.1:$SSH_PORT"
    install -d -m 0755 /run/sshd
    /usr/sbin/sshd -f "$SSH/sshd_config" -E "$STATE/log/sshd.log"
    for _ in $(seq 50); do alive "$STATE/sshd.pid" && break; sleep 0.1; done
    alive "$STATE/sshd.pid" || die "sshd did not start; see $STATE/log/sshd.log"
    cp "$STATE/sshd.pid" "$STATE/started/sshd.pid"
fi
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$SSH_PORT") 2>/dev/null && break; sleep 0.1; done

# --- the settings that point the platform at this cluster -------------------------------------
cat > "$STATE/env.sh" <<EOF
export TRAINING_BACKEND=slurm
export SLURM_SSH_HOST=127.0.0.1
export SLURM_SSH_PORT=$SSH_PORT
export SLURM_SSH_USER=$(id -un)
export SLURM_SSH_KEY_FILE=$SSH/id_ed25519
export SLURM_SSH_KNOWN_HOSTS=$SSH/known_hosts
export SLURM_REMOTE_WORK_DIR=$STATE/scratch
export SLURM_ACCOUNT=
export SLURM_PARTITION=debug
export SLURM_NODES=1
export SLURM_GPUS_PER_NODE=0
export SLURM_NTASKS_PER_NODE=1
export SLURM_CPUS_PER_TASK=1
export SLURM_MEM_PER_GPU=
export SLURM_MODULES=
export SLURM_ENV=
export SLURM_LAUNCHER=plain
export SLURM_REMOTE_PYTHON=$PYTHON
export SLURM_SACCT_MODE=jobcomp
EOF
[[ $QUIET == 1 ]] || cat "$STATE/env.sh"
say "cluster up: $(sinfo -h -o '%P %a %D %t' | head -n1); sshd on 127.0.0.1:$SSH_PORT"

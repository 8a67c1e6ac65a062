#!/usr/bin/env bash
# Starts a private single-node Slurm cluster (munged, slurmctld, slurmd) on this machine.
#
#   scripts/slurm/start.sh [DIR]
#
# Installs Debian's slurm-wlm and munge when they are missing (root and apt-get needed then),
# writes slurm.conf and everything the daemons write (state, spool, logs, pid files, the munge
# socket) under DIR (default: a new `mktemp -d`), starts the daemons and waits until `sinfo`
# shows the node idle. Standard output is exactly two lines, for the caller:
#
#   DIR
#   export SLURM_CONF=DIR/slurm.conf
#
# (the same export is in DIR/env.sh, to `source`); progress goes to standard error.
# Stop it with `scripts/slurm/stop.sh DIR`.
#
# Environment: SLURM_START_TIMEOUT (seconds to wait for the node, default 90),
# SLURMCTLD_PORT and SLURMD_PORT (default 6817 and 6818), SLURM_FAKE_GPUS (the node's fake gpu
# GRES count, default 2: no device behind it, for scheduling the GPU requests of job files).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "slurm/start: $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

timeout_s=${SLURM_START_TIMEOUT:-90}
ctld_port=${SLURMCTLD_PORT:-6817}
slurmd_port=${SLURMD_PORT:-6818}

# --- 1. packages ------------------------------------------------------------------------------
need=(slurmctld slurmd sinfo sbatch scontrol munged munge)
missing=()
for cmd in "${need[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; run as root to install slurm-wlm and munge"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    log "installing slurm-wlm and munge (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    for cmd in "${need[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after installing slurm-wlm and munge"
    done
fi
[[ $(id -u) -eq 0 ]] || die "the daemons run as root here (SlurmUser=root); run this as root"

# --- 2. the directory and the ports ---------------------------------------------------------
(($# <= 1)) || die "usage: $0 [DIR]"
dir=${1:-}
if [[ -n $dir && -d $dir ]]; then
    for daemon in munged slurmctld slurmd; do
        pid=$(cat "$dir/run/$daemon.pid" 2>/dev/null || true)
        [[ $pid =~ ^[0-9]+$ ]] || continue
        if [[ $(cat "/proc/$pid/comm" 2>/dev/null || true) == "$daemon"* ]]; then
            die "$daemon from $dir is still running (pid $pid); run $here/stop.sh $dir first"
        fi
    done
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$ctld_port" "$slurmd_port"; do
    if port_busy "$port"; then
        die "port $port on this machine is already in use (another Slurm?); set SLURMCTLD_PORT/SLURMD_PORT"
    fi
done

if [[ -n $dir ]]; then
    mkdir -p "$dir"
else
    dir=$(mktemp -d "${TMPDIR:-/tmp}/slurm.XXXXXX")
fi
dir=$(cd "$dir" && pwd)
# Other users may talk to the munge socket inside (munged warns about a private directory).
chmod 0755 "$dir"

# Fresh state on every start: this is a throwaway test cluster.
rm -rf "$dir/state" "$dir/spool" "$dir/run" "$dir/munge"
mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/run" "$dir/munge"
chmod 0755 "$dir/munge"

# --- 3. munge ---------------------------------------------------------------------------------
system_key=/etc/munge/munge.key
if [[ ! -s $system_key ]]; then
    log "creating $system_key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile="$system_key" --force
    else
        dd if=/dev/urandom of="$system_key" bs=1 count=1024 status=none
    fi
    if id munge >/dev/null 2>&1; then
        chown munge:munge /etc/munge "$system_key"
    fi
    chmod 0700 /etc/munge
    chmod 0400 "$system_key"
fi
# munged running as root insists on a key owned by root, while Debian's key belongs to the
# munge user: run on a root-owned copy (one node, so the key only has to agree with itself).
key=$dir/munge/munge.key
install -m 0400 -o root -g root "$system_key" "$key"
socket=$dir/munge/munge.socket.2

log "starting munged (socket $socket)"
munged --force \
    --key-file="$key" \
    --socket="$socket" \
    --pid-file="$dir/run/munged.pid" \
    --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munged.seed" ||
    {
        cat "$dir/log/munged.log" >&2 2>/dev/null || true
        die "munged did not start"
    }
ok=
for _ in $(seq 1 50); do
    if munge -n -S "$socket" 2>/dev/null | unmunge -S "$socket" >/dev/null 2>&1; then
        ok=1
        break
    fi
    sleep 0.2
done
[[ -n $ok ]] || {
    cat "$dir/log/munged.log" >&2 2>/dev/null || true
    die "munge credentials do not round-trip through $socket"
}

# --- 4. slurm.conf ----------------------------------------------------------------------------
node=$(hostname -s 2>/dev/null || uname -n)
node=${node%%.*}
cpus=$(nproc)
mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
[[ -n $mem_kb ]] || die "cannot read MemTotal from /proc/meminfo"
mem_mb=$((mem_kb / 1024))
conf=$dir/slurm.conf
fake_gpus=${SLURM_FAKE_GPUS:-2}

cat >"$conf" <<EOF
# Single-node test cluster written by scripts/slurm/start.sh; everything lives under $dir.
ClusterName=rankcollapse
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket

StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups: jobs are tracked through /proc, which works in the sandboxes CI runs in.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none

SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# Finished jobs leave slurmctld after 5 s; \`sbatch --wait\` then polls every 2 s.
MinJobAge=5
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0

# A fake GPU GRES (gres.conf below), so that job files that ask for GPUs (--gres=gpu:N,
# --gpus-per-task=N) are accepted and scheduled here; no GPU is behind it.
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$fake_gpus State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF

# Slurm 22.05 drops a GPU GRES without File= ("Removing file-less GPU") and wants a character
# device there, so each fake GPU is a link to /dev/null; with task/none and no cgroup device
# rules nothing opens it.
mkdir -p "$dir/fake-gpu"
for ((i = 0; i < fake_gpus; i++)); do ln -sfn /dev/null "$dir/fake-gpu/gpu$i"; done
cat >"$dir/gres.conf" <<EOF
# $fake_gpus fake GPUs (links to /dev/null) for scheduling GPU requests.
NodeName=$node Name=gpu File=$dir/fake-gpu/gpu[0-$((fake_gpus - 1))]
EOF

cat >"$dir/cgroup.conf" <<'EOF'
# Unused (proctrack/linuxproc, task/none); present so that no daemon looks elsewhere.
CgroupPlugin=autodetect
IgnoreSystemd=yes
EOF

printf 'export SLURM_CONF=%q\n' "$conf" >"$dir/env.sh"
export SLURM_CONF=$conf

# --- 5. slurmctld and slurmd ------------------------------------------------------------------
show_logs() {
    local f
    for f in "$dir"/log/*.log; do
        [[ -e $f ]] || continue
        echo "----- $f (last 40 lines) -----" >&2
        tail -n 40 "$f" >&2
    done
}
fail() {
    log "ERROR: $*"
    show_logs
    "$here/stop.sh" "$dir" >&2 || true
    exit 1
}

log "starting slurmctld and slurmd for node $node (CPUs=$cpus RealMemory=$mem_mb)"
# -c: start from empty state (it still logs that it found no state files).
slurmctld -f "$conf" -c || fail "slurmctld did not start"
slurmd -f "$conf" -N "$node" || fail "slurmd did not start"

log "waiting up to ${timeout_s}s for $node to be idle"
deadline=$((SECONDS + timeout_s))
state=
while :; do
    state=$(sinfo -h -N -n "$node" -o '%T' 2>/dev/null || true)
    [[ $state == idle ]] && break
    ((SECONDS < deadline)) || fail "node $node is not idle after ${timeout_s}s (state: '${state:-no answer from slurmctld}')"
    for daemon in slurmctld slurmd; do
        pid=$(cat "$dir/run/$daemon.pid" 2>/dev/null || true)
        if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
            # slurmctld writes its pid file a moment after forking; give it that moment.
            sleep 1
            pid=$(cat "$dir/run/$daemon.pid" 2>/dev/null || true)
            if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then fail "$daemon died"; fi
        fi
    done
    sleep 0.5
done

log "node $node is idle"
echo "$dir"
echo "export SLURM_CONF=$conf"

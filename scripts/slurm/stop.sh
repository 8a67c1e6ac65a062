#!/usr/bin/env bash
# Stops the daemons that scripts/slurm/start.sh started under DIR (slurmd, slurmctld, munged),
# by the pid files there. Leaves DIR itself (logs included) in place.
#
#   scripts/slurm/stop.sh DIR
set -euo pipefail

log() { echo "slurm/stop: $*" >&2; }
(($# == 1)) || {
    echo "usage: $0 DIR" >&2
    exit 2
}
dir=$1
[[ -d $dir ]] || {
    log "no such directory: $dir"
    exit 1
}

# pid_of DAEMON: the pid in DIR/run/DAEMON.pid when that process is alive and is DAEMON.
pid_of() {
    local pid comm
    pid=$(cat "$dir/run/$1.pid" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [[ $comm == "$1"* ]] || return 1
    echo "$pid"
}

status=0
for daemon in slurmd slurmctld munged; do
    pid=$(pid_of "$daemon") || continue
    log "stopping $daemon (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$daemon (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
        kill -0 "$pid" 2>/dev/null && {
            log "could not stop $daemon (pid $pid)"
            status=1
        }
    fi
    rm -f "$dir/run/$daemon.pid"
done
exit "$status"

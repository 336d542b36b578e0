#!/usr/bin/env bash
# Stops the daemons that start_local_slurm.sh started, by the PIDs it recorded, and
# removes the fake GPU device files it created. Anything else (a munge service it
# reused, packages, /etc/slurm, job state) is left as it is. Safe to run when nothing runs.
#   --daemons-only   keep the fake GPU device files (used by the start script on restart)
set -euo pipefail

STATE=${LOCAL_SLURM_STATE:-/run/internseg-local-slurm}

say() { echo "stop_local_slurm: $*"; }

[ "$(id -u)" -eq 0 ] || { echo "stop_local_slurm: error: must run as root" >&2; exit 1; }
[ -d "$STATE" ] || { say "nothing recorded in $STATE; nothing to stop"; exit 0; }

start_time() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }

stop() {
    local name=$1 f="$STATE/$1.pid" pid st
    [ -s "$f" ] || return 0
    read -r pid st <"$f"
    # PID and start time must both match: a recycled PID belongs to someone else.
    if [ -z "$pid" ] || [ "$(start_time "$pid")" != "$st" ]; then
        say "$name (pid $pid) is no longer running"
        rm -f "$f"
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 150); do
        [ "$(start_time "$pid")" = "$st" ] || break
        sleep 0.1
    done
    if [ "$(start_time "$pid")" = "$st" ]; then
        say "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
        kill -KILL "$pid"
    fi
    rm -f "$f"
    say "stopped $name (pid $pid)"
}

# Reverse start order: the node daemon first, munge (which both authenticate with) last.
stop slurmd
stop slurmctld
stop munged

if [ "${1:-}" != "--daemons-only" ] && [ -s "$STATE/created-files" ]; then
    while read -r path; do
        rm -f "$path"
    done <"$STATE/created-files"
    rm -f "$STATE/created-files"
fi

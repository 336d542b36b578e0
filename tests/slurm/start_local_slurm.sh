#!/usr/bin/env bash
# A one-node Slurm cluster on localhost for `pytest -m slurm`: Debian's slurm-wlm + munge,
# partitions `cpu` (default) and `gpu`, fake GPUs as GRES. Daemons are started by hand
# (CI machines and containers have no usable systemd) and their exact PIDs recorded, so
# that stop_local_slurm.sh stops what this script started and nothing else.
# Idempotent: running it again while the cluster is up only checks it.
#
# Environment (all optional):
#   LOCAL_SLURM_GPUS    fake GPUs on the node (default 1)
#   LOCAL_SLURM_CPUS    CPUs the node declares (default: nproc)
#   LOCAL_SLURM_MEM_MB  memory the node declares (default: 85% of MemTotal)
#   LOCAL_SLURM_STATE   where PIDs are recorded (default /run/internseg-local-slurm)
set -euo pipefail

STATE=${LOCAL_SLURM_STATE:-/run/internseg-local-slurm}
GPUS=${LOCAL_SLURM_GPUS:-1}
CPUS=${LOCAL_SLURM_CPUS:-$(nproc)}
MEM_MB=${LOCAL_SLURM_MEM_MB:-$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.85)}' /proc/meminfo)}
CONF_DIR=/etc/slurm
# Marks the files this script owns: a slurm.conf without it belongs to someone else.
MARKER="# written by internseg tests/slurm/start_local_slurm.sh"
T0=$(date +%s.%N)

say() { echo "start_local_slurm: $*"; }
die() { echo "start_local_slurm: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts munged, slurmctld, slurmd); try: sudo $0"
[ "$GPUS" -ge 1 ] 2>/dev/null || die "LOCAL_SLURM_GPUS must be an integer >= 1, got '$GPUS'"

mkdir -p "$STATE"

# A recorded PID counts only while the same process lives: PID and start time both match,
# so a PID recycled by an unrelated process is never mistaken for ours.
start_time() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }
alive() {
    local f="$STATE/$1.pid" pid st
    [ -s "$f" ] || return 1
    read -r pid st <"$f"
    [ -n "$pid" ] && [ "$(start_time "$pid")" = "$st" ]
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    # Debian starts services from postinst; a policy-rc.d that answers 101 stops that, so
    # the only daemons running are the ones started (and recorded) below.
    local own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null
    if [ "$own_policy" = 1 ]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
}

# One character device per fake GPU: slurmd only counts a GRES it can stat. c 1 3 is
# /dev/null's numbers, so opening one is harmless.
make_gpu_files() {
    local i
    for ((i = 0; i < GPUS; i++)); do
        if [ ! -e "/dev/fakegpu$i" ]; then
            mknod -m 666 "/dev/fakegpu$i" c 1 3
            echo "/dev/fakegpu$i" >>"$STATE/created-files"
        fi
    done
}

write_config() {
    local host=$1 conf gres
    conf=$(cat <<EOF
$MARKER
ClusterName=localcluster
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# No cgroups: nothing to configure, works on v1/v2/hybrid hosts; limits are not enforced.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Lets the node declare more (or other) CPUs/memory than the hardware without being drained.
SlurmdParameters=config_overrides
ReturnToService=2
# The Snakemake plugin's squeue status mode needs finished jobs kept this long.
MinJobAge=300
# Seconds between the time-limit SIGTERM and SIGKILL (Slurm's default, stated for the tests).
KillWait=30
OverTimeLimit=0
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without it a job that asks for no memory gets the whole node.
DefMemPerCPU=500
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:$GPUS State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP
EOF
)
    gres=$(printf '%s\nAutoDetect=off\nNodeName=%s Name=gpu File=/dev/fakegpu[0-%d]\n' \
        "$MARKER" "$host" "$((GPUS - 1))")
    if [ -e "$CONF_DIR/slurm.conf" ] && ! grep -qxF "$MARKER" "$CONF_DIR/slurm.conf"; then
        die "$CONF_DIR/slurm.conf exists and was not written by this script; not touching it"
    fi
    mkdir -p "$CONF_DIR"
    CONFIG_CHANGED=0
    if [ "$(cat "$CONF_DIR/slurm.conf" 2>/dev/null)" != "$conf" ]; then
        printf '%s\n' "$conf" >"$CONF_DIR/slurm.conf"
        CONFIG_CHANGED=1
    fi
    if [ "$(cat "$CONF_DIR/gres.conf" 2>/dev/null)" != "$gres" ]; then
        printf '%s\n' "$gres" >"$CONF_DIR/gres.conf"
        CONFIG_CHANGED=1
    fi
}

# Start a daemon in the foreground of its own session and record its exact PID: a daemon
# that forks would leave us recording the wrong process.
launch() {
    local name=$1
    shift
    setsid nohup "$@" >>"/var/log/slurm/$name.console.log" 2>&1 </dev/null &
    local pid=$!
    sleep 0.2
    local st
    st=$(start_time "$pid") || true
    [ -n "$st" ] || die "$name exited at once; see /var/log/slurm/$name.console.log and /var/log/slurm/$name.log"
    echo "$pid $st" >"$STATE/$name.pid"
    say "started $name (pid $pid)"
}

stop_ours() {
    # Used only when our config changed under our own running daemons.
    "$(dirname "$0")/stop_local_slurm.sh" --daemons-only
}

install_packages
HOST=$(hostname -s)
make_gpu_files
write_config "$HOST"
mkdir -p /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/munge

if [ "$CONFIG_CHANGED" = 1 ] && { alive slurmctld || alive slurmd; }; then
    say "configuration changed: restarting the daemons this script started"
    stop_ours
fi

# munge: reuse one that already answers (a host service); we then neither own nor stop it.
if alive munged || { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }; then
    :
else
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    chown munge:munge /run/munge
    chmod 755 /run/munge
    # setpriv execs (no fork), so the recorded PID is munged itself.
    launch munged setpriv --reuid=munge --regid=munge --clear-groups munged --foreground
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

alive slurmctld || launch slurmctld slurmctld -D
alive slurmd || launch slurmd slurmd -D

# Ready when the node is schedulable. ReturnToService=2 brings a DOWN node back by itself;
# a node left DRAINED by an earlier run needs an explicit resume.
state=""
for _ in $(seq 600); do
    state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -1 || true)
    case "$state" in
        idle | mixed | allocated | completing) break ;;
        drain*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.1
done
case "$state" in
    idle | mixed | allocated | completing) ;;
    *) die "node $HOST did not become idle (state '${state:-no answer}'); see /var/log/slurm/*.log" ;;
esac
say "node $HOST is $state ($(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s)"
sinfo

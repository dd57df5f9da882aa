#!/usr/bin/env bash
# A one-node SLURM cluster on this host, for running and testing the `hydra/launcher=slurm` preset.
#
#   scripts/slurm-local.sh up     # make slurm-up: install if missing, configure, start, wait until idle
#   scripts/slurm-local.sh down   # make slurm-down: cancel its jobs, stop the daemons it started
#
# Needs root and Debian's packages (slurmctld, slurmd, slurm-client, munge; apt-get installs them
# once, which is the only step that needs a package mirror). Running `up` again is harmless: a cluster
# that is up is left as it is. `down` stops only the daemons whose pids `up` recorded.
# The cluster: one node (this host, its cores and memory as `slurmd -C` reports them), one partition
# `local`, memory and cores consumable (jobs ask for both), no accounting database (sacct answers
# nothing; cnnstudy's launcher watches jobs with squeue instead).
set -euo pipefail

STATE_DIR=${SLURM_LOCAL_DIR:-/var/lib/cnnstudy-slurm}   # pids, logs, spool and state of this cluster
SLURM_CONF=/etc/slurm/slurm.conf                        # where sinfo/sbatch/srun look by default
MARKER="# written by cnnstudy scripts/slurm-local.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)

die() {
    echo "slurm-local: $*" >&2
    exit 1
}

alive() { # alive <name>: the daemon whose pid `up` recorded still runs
    local pidfile="$STATE_DIR/$1.pid"
    [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

install_packages() {
    local missing=()
    for command in slurmctld slurmd sinfo munged; do
        command -v "$command" >/dev/null || missing+=("$command")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    command -v apt-get >/dev/null || die "cannot install SLURM (${missing[*]} missing): no apt-get on this host"
    echo "slurm-local: installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # the package lists may be stale or absent (fresh containers): update once and retry
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >"$STATE_DIR/apt.log" 2>&1 ||
        { apt-get update -qq >>"$STATE_DIR/apt.log" 2>&1 &&
            apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >>"$STATE_DIR/apt.log" 2>&1; } ||
        die "apt-get could not install ${PACKAGES[*]} (see $STATE_DIR/apt.log)"
}

check_ports() { # slurmctld and slurmd listen on 6817 and 6818: someone else's daemon there is a conflict
    local port
    command -v ss >/dev/null || return 0
    for port in 6817 6818; do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            die "port $port is taken (another SLURM, or another program): stop it or run 'make slurm-down'"
        fi
    done
}

write_munge_key() {
    [[ -s /etc/munge/munge.key ]] && return  # Debian's package writes one; a key of the admin's is kept
    install -d -o munge -g munge -m 0700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
}

write_slurm_conf() {
    if [[ -f $SLURM_CONF ]] && ! grep -qF "$MARKER" "$SLURM_CONF"; then
        die "$SLURM_CONF exists and was not written by this script: this host has its own SLURM, use that"
    fi
    local host node
    host=$(hostname -s)
    # `slurmd -C` prints this host's line (CPUs, sockets, cores, threads, RealMemory) exactly as slurmd
    # will check it; a node configured with more than it has would be drained at once.
    node=$(slurmd -C | head -n 1)
    local cpus mem_mb
    cpus=$(grep -o 'CPUs=[0-9]*' <<<"$node" | cut -d= -f2)
    mem_mb=$(grep -o 'RealMemory=[0-9]*' <<<"$node" | cut -d= -f2)
    mkdir -p "$(dirname "$SLURM_CONF")"
    cat >"$SLURM_CONF" <<EOF
$MARKER (do not edit: 'make slurm-up' rewrites it)
ClusterName=cnnstudy
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# requeued jobs may start again after cred_expire seconds (default 120): short on a one-node test cluster
AuthInfo=cred_expire=10
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/d
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
# no cgroups in containers: track job processes by process group, bind no tasks
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
# look at pending jobs every 5 s (default 60/30 s): a requeued job starts again within seconds
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job that asks no memory gets its cores' share of the node, not all of it (SLURM's default)
DefMemPerCPU=$((mem_mb / cpus))
ReturnToService=2
KillWait=10
MpiDefault=none
$node Port=6818 State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if alive munged; then return; fi
    if [[ -S /run/munge/munge.socket.2 ]] && munge -n >/dev/null 2>&1; then
        return # a munged of the system answers already: use it, and leave it running on `down`
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid --force
    cp /run/munge/munged.pid "$STATE_DIR/munged.pid"
}

wait_idle() {
    local state=""
    for _ in $(seq 60); do
        state=$(sinfo -h -o %t 2>/dev/null | head -n 1 || true)
        [[ $state == idle* || $state == mix* || $state == alloc* ]] && return
        sleep 0.5
    done
    die "the node did not become idle (sinfo: '${state:-no answer}'; $(sinfo -h -R -o %E 2>/dev/null | head -n 1)); logs in $STATE_DIR"
}

up() {
    [[ $(id -u) -eq 0 ]] || die "needs root (it installs packages and starts daemons): run it with sudo"
    mkdir -p "$STATE_DIR/ctld" "$STATE_DIR/d"
    if alive slurmctld && alive slurmd; then
        wait_idle
        echo "slurm-local: already up ($(sinfo -h -o '%P %D node, %c CPUs, %m MB, %t'))"
        return
    fi
    install_packages
    check_ports
    write_munge_key
    write_slurm_conf
    start_munge
    slurmctld   # both daemonize and write their pid files ($STATE_DIR/*.pid)
    slurmd
    wait_idle
    echo "slurm-local: up ($(sinfo -h -o '%P %D node, %c CPUs, %m MB, %t'))"
}

stop() { # stop <name>: SIGTERM, then wait for the process to go (SIGKILL after 15 s)
    alive "$1" || { rm -f "$STATE_DIR/$1.pid"; return; }
    local pid
    pid=$(cat "$STATE_DIR/$1.pid")
    kill -TERM "$pid"
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    rm -f "$STATE_DIR/$1.pid"
}

down() {
    [[ $(id -u) -eq 0 ]] || die "needs root: run it with sudo"
    if alive slurmctld; then  # the jobs first, while slurmd can still end them
        squeue -h -o %A | xargs -r scancel 2>/dev/null || true
        for _ in $(seq 30); do
            [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
    stop slurmd
    stop slurmctld
    stop munged
    echo "slurm-local: down"
}

case "${1:-}" in
up) up ;;
down) down ;;
*) die "usage: $0 up|down" ;;
esac

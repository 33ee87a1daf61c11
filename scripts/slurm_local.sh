#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (localhost), for the `slurm` tests and for
# trying the sbatch examples without a cluster. Needs root; no systemd.
#
#   bash scripts/slurm_local.sh up     install (Debian slurm-wlm + munge) if missing, start
#   bash scripts/slurm_local.sh down   stop the daemons
#   bash scripts/slurm_local.sh status exit 0 when the node accepts jobs
#
# No cgroups in a container: proctrack/linuxproc and task/none. The node declares more
# CPUs than the machine has (config_overrides), so that `srun -n 6` fits on 2 cores.
set -euo pipefail
CONF_DIR=/etc/slurm
STATE=/var/spool/slurm-pal
LOG=/var/log/slurm-pal
CPUS=${PAL_SLURM_CPUS:-16}

install() {
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    fi
}

configure() {
    mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" "$LOG" /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    cat > "$CONF_DIR/slurm.conf" <<CONF
ClusterName=pal-local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldPidFile=/run/slurmctld-pal.pid
SlurmdPidFile=/run/slurmd-pal.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
KillWait=10
NodeName=localhost CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
}

ready() {
    sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'
}

up() {
    install
    configure
    # The daemons start from /: a job step inherits slurmd's working directory, and one in
    # a checkout that is later deleted makes every step print "Unable to get current
    # working directory" (seen when a second clone replaced the first).
    pgrep -x munged >/dev/null || (cd / && { runuser -u munge -- munged --force 2>/dev/null || munged --force; })
    # (cd / || exit; cmd &): only the daemon runs in the background, with its own output,
    # so no shell holds the caller's stdout open while it runs.
    pgrep -x slurmctld >/dev/null || (cd / || exit; slurmctld -D >"$LOG/slurmctld.out" 2>&1 &)
    pgrep -x slurmd >/dev/null || (cd / || exit; slurmd -D >"$LOG/slurmd.out" 2>&1 &)
    for _ in $(seq 60); do
        if ready; then
            scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
            echo "slurm: localhost up ($CPUS CPUs)"
            return 0
        fi
        sleep 0.5
    done
    echo "slurm: the node did not come up; logs in $LOG" >&2
    return 1
}

down() {
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    echo "slurm: stopped"
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    status) ready ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the `slurm` tests and for trying
# --executor slurm: installs Debian's slurm-wlm and munge if missing, writes a
# minimal slurm.conf (this host, its cores and memory, one partition "debug",
# job accounting to a text file so sacct answers), starts munged, slurmctld and
# slurmd, and waits until the node is idle. Needs root. Safe to run again.
#   bash scripts/slurm_local.sh          start (or check) the cluster
#   bash scripts/slurm_local.sh stop     stop it
set -euo pipefail
if [ "${1:-}" = "stop" ]; then
  pkill -x slurmd || true; pkill -x slurmctld || true; pkill -x munged || true
  exit 0
fi
[ "$(id -u)" = "0" ] || { echo "slurm_local.sh: needs root (apt-get, daemons)" >&2; exit 1; }
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
state=/var/spool/slurm-local
mkdir -p /etc/slurm "$state/ctld" "$state/d" /var/log/slurm /run/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge 2>/dev/null || true
chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=prunebench-local
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
pgrep -x munged >/dev/null || munged --force
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
  if sinfo -h -o "%T" 2>/dev/null | grep -qE "idle|mixed|allocated"; then
    echo "slurm: one-node cluster up ($host, $cpus CPUs, ${mem_mb} MB, partition debug)"
    exit 0
  fi
  sleep 1
done
echo "slurm_local.sh: the node did not come up; see /var/log/slurm/" >&2
sinfo >&2 || true
exit 1

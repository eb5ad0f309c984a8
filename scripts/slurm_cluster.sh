#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for `rl sweep hydra/launcher=slurm_cpu` and the slow tests
# (tests/test_slurm_e2e.py): Debian's slurm-wlm + munge, no systemd, no accounting database.
#
#   bash scripts/slurm_cluster.sh start    # install (root, once), start munged, slurmctld, slurmd; wait for idle
#   bash scripts/slurm_cluster.sh status   # daemons, partition, node state, queue
#   bash scripts/slurm_cluster.sh stop     # cancel every job, wait for an empty queue, stop the daemons by pid
#   eval "$(bash scripts/slurm_cluster.sh env)"   # this shell's sinfo/sbatch/rl sweep use the cluster
#
# Every file SLURM writes (slurm.conf, state, spool, logs, pid files) lives in the state folder
# ${RL_SLURM_DIR:-/tmp/rl-slurm}, so start/stop touch nothing else, /etc/slurm included: SLURM's commands find the
# cluster through SLURM_CONF=<state folder>/slurm.conf, which `env` prints, so a process that was not given it
# (another user's test run on the same machine) does not see a cluster at all.
# Job state survives stop/start (job ids go on counting); remove the folder after `stop` to start from job 1.
# With no accounting database `sacct` has nothing to say: `env` also puts scripts/slurm/ first on PATH (its `sacct`
# answers submitit's queries from slurmctld), as tests/test_slurm_e2e.py and .ci/run do.
set -euo pipefail

DIR=${RL_SLURM_DIR:-/tmp/rl-slurm}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF
PARTITION=${RL_SLURM_PARTITION:-cpu}
NODE=$(hostname -s)

die() { echo "error: $*" >&2; exit 2; }

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

munge_ok() { command -v munge >/dev/null && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed and this is not root: apt-get install slurm-wlm munge"
  echo "installing slurm-wlm and munge (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_conf() {
  mkdir -p "$DIR"/{state,spool,log}
  local cpus mem_mb
  cpus=$(nproc)
  # RealMemory above what slurmd finds makes the node INVALID: stay 10% under the machine's total
  mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  cat >"$CONF" <<EOF
# Written by scripts/slurm_cluster.sh (rewritten on every start): one node, one partition, no accounting.
ClusterName=rl
SlurmctldHost=$NODE(127.0.0.1)
# the daemons and the jobs run as root: there is no slurm user to set up on a CI machine
SlurmUser=root
SlurmdUser=root
# cred_expire=10: a requeued job may start again after 10 s instead of the default 120
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
# no cgroups (a container without systemd): processes are tracked by parent pid, tasks are not bound
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
# CPUs and memory are consumable: two 1-CPU jobs share the node (select/linear would give each the whole node)
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=512
# finished jobs stay known to slurmctld (and to scripts/slurm/sacct) for an hour
MinJobAge=3600
ReturnToService=2
SchedulerType=sched/backfill
# a requeued job becomes eligible again only on a scheduling pass (every 60 s by default, 30 s for backfill): look
# every 5 s, so a job requeued at its time limit starts again ~15 s later instead of up to a minute
SchedulerParameters=sched_interval=5,bf_interval=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  if munge_ok; then return; fi
  [ "$(id -u)" = 0 ] || die "munged is not running and this is not root"
  mkdir -p /run/munge "$DIR/munge"
  chown munge:munge /run/munge "$DIR/munge"
  chmod 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge /etc/munge/munge.key
  chmod 0700 /etc/munge
  chmod 0400 /etc/munge/munge.key
  runuser -u munge -- munged --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log"
  touch "$DIR/munge/started-here"  # stop only stops a munged that this script started
  for _ in $(seq 50); do munge_ok && return; sleep 0.1; done
  die "munged did not start (see $DIR/munge/munged.log)"
}

# never fails (set -e): before slurmctld answers there is no state
node_state() { { sinfo -h -n "$NODE" -o %T 2>/dev/null || true; } | head -1; }

cmd_start() {
  local t0=$SECONDS
  if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then
    case "$(node_state)" in
      idle|mixed|allocated)
        echo "already running: partition $PARTITION, node $NODE ($(node_state)); SLURM_CONF=$CONF"
        return ;;
    esac
  fi
  install_packages
  write_conf
  start_munge
  alive "$DIR/slurmctld.pid" || slurmctld
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
  alive "$DIR/slurmd.pid" || slurmd
  local state=""
  for _ in $(seq 150); do
    state=$(node_state)
    case "$state" in
      idle|mixed|allocated) break ;;
      down*|drain*|fail*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.2
  done
  case "$state" in
    idle|mixed|allocated) ;;
    *) echo "error: node $NODE is '${state:-unknown}' after 30 s; logs: $DIR/log/" >&2
       tail -5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
       exit 1 ;;
  esac
  echo "SLURM started in $((SECONDS - t0)) s: partition $PARTITION (default), node $NODE $state," \
       "$(nproc) CPUs; use it with: export SLURM_CONF=$CONF (or eval \"\$(bash $0 env)\")"
}

cmd_status() {
  local code=0
  for d in slurmctld slurmd; do
    if alive "$DIR/$d.pid"; then echo "$d: running (pid $(cat "$DIR/$d.pid"))"; else echo "$d: stopped"; code=3; fi
  done
  if munge_ok; then echo "munged: running"; else echo "munged: stopped"; code=3; fi
  if [ "$code" = 0 ]; then
    sinfo -o "%P %a %D %T %c %m %G"
    squeue -o "%i %j %T %M %l %R"
  fi
  return $code
}

stop_pid() {  # stop_pid NAME PIDFILE: SIGTERM, wait up to 10 s, then SIGKILL
  local f=$2 pid
  alive "$f" || return 0
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || { echo "$1 stopped (pid $pid)"; return 0; }; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  echo "$1 killed (pid $pid)"
}

cmd_stop() {
  if alive "$DIR/slurmctld.pid"; then
    # job steps left behind by slurmd's death hang: cancel everything and wait for the queue to drain first
    scancel --full --quiet --user="$(id -un)" 2>/dev/null || scancel --quiet --state=PENDING,RUNNING 2>/dev/null || true
    scancel --quiet $(squeue -h -o %i 2>/dev/null) 2>/dev/null || true
    for _ in $(seq 150); do
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] || echo "warning: jobs still queued after 30 s: $(squeue -h -o %i | tr '\n' ' ')" >&2
  fi
  stop_pid slurmd "$DIR/slurmd.pid"
  stop_pid slurmctld "$DIR/slurmctld.pid"
  if [ -e "$DIR/munge/started-here" ]; then
    stop_pid munged "$DIR/munge/munged.pid"
    rm -f "$DIR/munge/started-here"
  fi
}

cmd_env() {
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  printf 'export SLURM_CONF=%q\nexport PATH=%q:"$PATH"\n' "$CONF" "$here/slurm"
}

case "${1:-}" in
  start) cmd_start ;;
  env) cmd_env ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "error: usage: $0 start|stop|status|env (got '${1:-}')" >&2; exit 2 ;;
esac

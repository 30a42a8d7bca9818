#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, for testing profiles/slurm (CI and developers).
#
#   tests/slurm/cluster.sh start  [ROOT]   install munge + slurm-wlm if missing, write slurm.conf,
#                                          start munged, slurmctld, slurmd; wait until the node is idle
#   tests/slurm/cluster.sh status [ROOT]   daemons and node state; exit 0 only if the cluster is up
#   tests/slurm/cluster.sh stop   [ROOT]   cancel jobs, stop every daemon `start` started (by pid file)
#
# ROOT (argument, else $ZEPHYR_SLURM_ROOT, else /tmp/zephyr-slurm) holds all state, logs and sockets.
# Needs root (the daemons and apt run as root) and Debian's packages (slurm-wlm 22.05, munge).
# The only thing written outside ROOT is the symlink /etc/slurm/slurm.conf -> ROOT/etc/slurm.conf:
# jobs run `srun` through snakemake's jobstep plugin, which strips SLURM_CONF from the environment,
# so the client commands inside a job only find the compiled-in path.
#
# Daemons never outlive their use: a failed `start` stops what it started, and a watchdog stops the
# cluster after $ZEPHYR_SLURM_TTL seconds (default 1800) if `stop` is never called.
# Accounting is off (no slurmdbd): `sacct` cannot work, use `slurm-status-command: squeue`.
set -euo pipefail

ACTION=${1:-}
ROOT=${2:-${ZEPHYR_SLURM_ROOT:-/tmp/zephyr-slurm}}
PARTITION=${ZEPHYR_SLURM_PARTITION:-debug}
TTL=${ZEPHYR_SLURM_TTL:-1800}
SYSTEM_CONF=/etc/slurm/slurm.conf
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
DAEMONS=(slurmd slurmctld munged)

case "$ROOT" in /*) ;; *) ROOT=$PWD/$ROOT ;; esac
CONF=$ROOT/etc/slurm.conf
export SLURM_CONF=$CONF

log() { echo "cluster.sh: $*" >&2; }
words() { echo "$1" | tr '\n' ' '; }
die() { log "error: $*"; exit 1; }

pid_of() { cat "$ROOT/run/$1.bgpid" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

wait_for() {  # wait_for DAEMON SECONDS COMMAND...: poll until COMMAND succeeds; fail if DAEMON exits
  local name=$1 deadline=$((SECONDS + $2))
  shift 2
  while [ "$SECONDS" -lt "$deadline" ]; do
    timeout -k 1 5 "$@" >/dev/null 2>&1 && return 0
    if [ "$name" != - ] && ! alive "$name"; then
      log "$name exited; the end of its output ($ROOT/log/$name.out, $ROOT/log/$name.log):"
      tail -n 5 "$ROOT/log/$name.out" "$ROOT/log/$name.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.25
  done
  log "timed out waiting for: $*"
  return 1
}

ensure_packages() {
  local missing=0 cmd
  for cmd in munged mungekey slurmctld slurmd sbatch squeue scontrol; do
    command -v "$cmd" >/dev/null 2>&1 || missing=1
  done
  [ "$missing" = 0 ] && return 0
  log "installing munge and slurm-wlm (apt, log in $ROOT/log/apt.log)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$ROOT/log/apt.log" 2>&1 || { tail -20 "$ROOT/log/apt.log" >&2; return 1; }
  local i
  for i in $(seq 1 20); do  # another apt may hold the dpkg lock for a while
    if apt-get install -y -qq --no-install-recommends munge slurm-wlm slurmctld slurmd slurm-client >>"$ROOT/log/apt.log" 2>&1; then
      return 0
    fi
    grep -qiE 'could not get lock|lock-frontend' "$ROOT/log/apt.log" || break
    log "dpkg is locked, retry $i"
    sleep 10
  done
  tail -20 "$ROOT/log/apt.log" >&2
  return 1
}

write_config() {
  mkdir -p "$ROOT"/{etc,state,spool/slurmd,log,run,munge}
  # munged refuses a socket whose directories are not all world-executable (search permission).
  chmod 755 "$ROOT" "$ROOT/munge"
  local d=$ROOT
  while d=$(dirname "$d") && [ "$d" != / ]; do
    case "$(stat -c %A "$d")" in
      ?????????[xt]) ;;
      *) die "munged needs every directory above ROOT to be world-executable; $d is $(stat -c %A "$d") (use a ROOT under /tmp, or chmod o+x $d)" ;;
    esac
  done
  [ -f "$ROOT/munge/munge.key" ] || mungekey --create --keyfile="$ROOT/munge/munge.key"
  chmod 600 "$ROOT/munge/munge.key"

  # The node's real hardware (CPUs, sockets, cores, threads, memory), so that limits are real too.
  local hw
  hw=$(slurmd -C | head -1 | tr ' ' '\n' |
    grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ')
  [ -n "$hw" ] || die "slurmd -C printed no hardware line"

  # Loopback only. These options make the daemons bind to the address `hostname` resolves to
  # (not SlurmctldHost's), so they are only safe when that is a loopback address.
  local comm
  comm="# CommunicationParameters unset: $(hostname) does not resolve to loopback"
  if getent hosts "$(hostname)" | awk '{print $1}' | grep -qE '^(127\.|::1$)'; then
    comm="CommunicationParameters=NoCtldInAddrAny,NoInAddrAny"
  fi

  cat >"$CONF" <<EOF
# Written by tests/slurm/cluster.sh: a single-node SLURM cluster on localhost, for tests only.
ClusterName=zephyr-test
SlurmctldHost=localhost
SlurmctldPort=6817
SlurmdPort=6818
$comm
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$ROOT/munge/munge.socket.2
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool/slurmd
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
SchedulerType=sched/backfill
# No slurmdbd: sacct cannot answer, so the snakemake profile must use 'squeue' for job status.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# Reject at submission a job that can never run here (e.g. more CPUs than the node has); without
# this it is accepted, stays PENDING (PartitionConfig) forever, and snakemake waits forever.
EnforcePartLimits=ALL
# Finished jobs stay visible to squeue/scontrol for an hour (the test checks every job of a run).
# The snakemake slurm plugin trusts 'squeue' only if MinJobAge >= 3 x
# slurm-init-seconds-before-status-checks; otherwise it uses sacct, which cannot work here.
MinJobAge=3600
InactiveLimit=0
KillWait=5
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost ${hw}State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

  # The compiled-in path must lead to this config (see the header). Never replace a real file.
  mkdir -p "$(dirname "$SYSTEM_CONF")"
  if [ -e "$SYSTEM_CONF" ] && [ ! -L "$SYSTEM_CONF" ]; then
    die "$SYSTEM_CONF is a real file (a SLURM installation?); not replacing it"
  fi
  ln -sfn "$CONF" "$SYSTEM_CONF"
}

start_daemon() {  # start_daemon NAME COMMAND...: in the background, in its own session, off our stdio
  # Own session: a Ctrl-C meant for the caller (pytest) must not kill the daemons before the caller's
  # cleanup has cancelled the jobs (their slurmstepd would be orphaned). (Without job control, setsid
  # execs in place, so $! is the daemon's pid.)
  setsid "${@:2}" </dev/null >"$ROOT/log/$1.out" 2>&1 &
  echo $! >"$ROOT/run/$1.bgpid"
}

start_watchdog() {
  # Stops the cluster after TTL seconds unless `stop` kills the watchdog first. It execs into
  # `cluster.sh stop`, so `stop` can tell itself apart from it by pid.
  # shellcheck disable=SC2016  # expanded by the inner bash
  setsid bash -c 'trap "kill \$s 2>/dev/null; exit 0" TERM; sleep "$1" & s=$!; wait $s; exec "$2" stop "$3"' \
    watchdog "$TTL" "$SELF" "$ROOT" </dev/null >>"$ROOT/log/watchdog.log" 2>&1 &
  echo $! >"$ROOT/run/watchdog.bgpid"
}

do_start() {
  [ "$(id -u)" = 0 ] || die "needs root (it starts munged, slurmctld and slurmd as root)"
  if alive slurmctld && alive slurmd && scontrol ping >/dev/null 2>&1; then
    log "already running in $ROOT"
    return 0
  fi
  mkdir -p "$ROOT/log" "$ROOT/run"
  local other
  other=$( (pgrep -x slurmctld; pgrep -x slurmd) || true)
  [ -z "$other" ] || die "other slurm daemons are running (pids: $(words "$other")); stop them first"

  trap 'rc=$?; if [ "$rc" != 0 ]; then log "start failed; stopping what it started (logs: $ROOT/log)"; do_stop; fi' EXIT
  trap 'exit 1' INT TERM HUP
  local t0=$SECONDS
  ensure_packages
  write_config
  start_watchdog

  start_daemon munged munged -F --key-file="$ROOT/munge/munge.key" --socket="$ROOT/munge/munge.socket.2" \
    --pid-file="$ROOT/munge/munged.pid" --log-file="$ROOT/munge/munged.log" --seed-file="$ROOT/munge/munged.seed"
  wait_for munged 10 bash -c "munge -S '$ROOT/munge/munge.socket.2' -n | unmunge -S '$ROOT/munge/munge.socket.2'"
  start_daemon slurmctld slurmctld -D -i
  wait_for slurmctld 30 scontrol ping
  start_daemon slurmd slurmd -D -N localhost
  wait_for slurmd 60 bash -c "sinfo -h -N -o %T | grep -qx idle"
  trap - EXIT INT TERM HUP
  log "up in $((SECONDS - t0)) s (ROOT=$ROOT; stops by itself after ${TTL} s)"
  sinfo -N -o '%N %P %T %c %m'
}

do_status() {
  local n rc=0
  for n in munged slurmctld slurmd watchdog; do
    if alive "$n"; then echo "$n: running (pid $(pid_of "$n"))"; else echo "$n: not running"; [ "$n" = watchdog ] || rc=1; fi
  done
  if [ "$rc" = 0 ]; then
    sinfo -N -o '%N %P %T %c %m' || rc=1
    squeue -o '%i %j %T %M %R' || rc=1
  fi
  return "$rc"
}

stop_all() {  # stop_all NAME...: SIGTERM to all, wait up to 10 s, then SIGKILL what is left
  local n p pids=""
  for n in "$@"; do
    p=$(pid_of "$n")
    if [ -n "$p" ] && [ "$p" != "$$" ] && kill -0 "$p" 2>/dev/null; then
      kill "$p" 2>/dev/null && pids="$pids $p" && log "stopping $n ($p)"
    fi
  done
  for _ in $(seq 1 40); do
    local left=""
    for p in $pids; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
    pids=$left
    [ -z "$pids" ] && break
    sleep 0.25
  done
  for p in $pids; do
    log "pid $p did not stop, SIGKILL"
    kill -9 "$p" 2>/dev/null || true
  done
  for n in "$@"; do rm -f "$ROOT/run/$n.bgpid"; done
}

do_stop() {
  set +e
  if alive slurmctld && [ -f "$CONF" ]; then
    local jobs
    mapfile -t jobs < <(timeout 10 squeue -h -o %A 2>/dev/null)
    if [ "${#jobs[@]}" -gt 0 ]; then
      log "cancelling jobs: ${jobs[*]}"
      timeout 10 scancel "${jobs[@]}" 2>/dev/null
      # shellcheck disable=SC2016  # expanded by the inner bash
      wait_for - 15 bash -c '[ -z "$(squeue -h -t PD,R,CG,CF,S -o %A)" ]'
    fi
  fi
  stop_all "${DAEMONS[@]}" watchdog
  [ "$(readlink "$SYSTEM_CONF" 2>/dev/null)" = "$CONF" ] && rm -f "$SYSTEM_CONF"
  local left
  left=$(pgrep -x slurmstepd)
  [ -z "$left" ] || log "warning: slurmstepd processes still running: $(words "$left")"
  set -e
  return 0
}

case "$ACTION" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) echo "usage: $0 start|stop|status [ROOT]   (ROOT defaults to \$ZEPHYR_SLURM_ROOT or /tmp/zephyr-slurm)" >&2; exit 2 ;;
esac

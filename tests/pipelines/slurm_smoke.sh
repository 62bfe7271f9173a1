#!/usr/bin/env bash
# Slurm test: a local single-node Slurm (munged + slurmctld + slurmd, all state under a temporary folder,
# configuration of ../shared/TOOLCHAIN.md §5, MpiDefault=pmi2) started and stopped here; pipelines/slurm/*.sbatch
# submitted with sbatch at tiny sizes; every job must end COMPLETED with the pipeline's table written.
#   tests/pipelines/slurm_smoke.sh SOURCE_DIR BUILD_DIR
# Installs slurm-wlm and munge with apt-get when they are missing. Needs root (SlurmUser=root).
set -euo pipefail
src=$(cd "$1" && pwd) build=$(cd "$2" && pwd)
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
S=$(mktemp -d /tmp/ds-slurm.XXXXXX)
chmod 0755 "$S"
export SLURM_CONF=$S/slurm.conf
cpus=$(nproc); mem=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
cat > "$SLURM_CONF" <<CONF
ClusterName=dstest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$S/munge/munge.socket.2
CredType=cred/munge
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=pmi2
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=60
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p "$S/munge" "$S/state" "$S/spool" "$S/log" "$S/work"
chown munge:munge "$S/munge"; chmod 0755 "$S/munge"
down() {  # stop by PID: slurmd, slurmctld, munged, each waited for
  for pf in "$S/slurmd.pid" "$S/slurmctld.pid" "$S/munge/munged.pid"; do
    [ -s "$pf" ] || continue
    pid=$(cat "$pf"); kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$S"
}
trap down EXIT
setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --socket="$S/munge/munge.socket.2" \
  --pid-file="$S/munge/munged.pid" --log-file="$S/munge/munged.log" --seed-file="$S/munge/munged.seed"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N localhost
for _ in $(seq 100); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 0.2; done
sinfo -h -o %T | grep -q idle || { echo "FAIL: the node is not idle"; cat "$S/log/"*.log; exit 1; }

tiny=(PRESET=tiny CORPUS_N=300 SEQ_LEN=192 PRETRAIN_STEPS=6 PRETRAIN_BATCH=4 COLD_N=20 SFT_STEPS=3 SFT_BATCH=2 RL_STEPS=2
      STUDENT_STEPS=3 DISTILL_PROMPTS=2 DISTILL_N=2 DISTILL_STEPS=2
      G=4 PROMPTS_PER_STEP=2 MAX_NEW=16 REJ_PROMPTS=2 CHAT_N=10 EVAL_N=2 EVAL_K=4 OMP_WAIT_POLICY=passive)
declare -A jobs
for f in "$src"/pipelines/slurm/*.sbatch; do
  name=$(basename "$f" .sbatch)
  exports="ALL,DS_SRC=$src,BUILD=$build,OUT=$S/work/$name,$(IFS=,; echo "${tiny[*]}")"
  jobs[$name]=$(cd "$S/work" && sbatch --parsable --export="$exports" --output="$S/work/$name.out" "$f")
  echo "submitted $name: job ${jobs[$name]}"
done
fail=0
for name in "${!jobs[@]}"; do
  id=${jobs[$name]} state=""
  for _ in $(seq 600); do
    state=$(scontrol show job "$id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
    case $state in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) break ;; esac
    sleep 0.2
  done
  echo "$name: job $id $state"
  if [ "$state" != COMPLETED ] || [ ! -s "$S/work/$name/summary.txt" ]; then
    fail=1; echo "FAIL: $name"; cat "$S/work/$name.out"
  fi
done
[ $fail -eq 0 ] || { tail -20 "$S/log/slurmctld.log" "$S/log/slurmd.log"; exit 1; }
echo "PASS slurm smoke"

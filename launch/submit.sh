#!/usr/bin/env bash
# Submits one run of any entry point to SLURM; it survives the queue's time limit.
#
# Usage:
#   launch/submit.sh --flagfile=experiments/flags/bow_mlp.flags [--name=NAME]
#     [--time=HH:MM:SS] [--gpus=G] [--module=experiments.train]
#     [--signal_lead=SECONDS] [--max_restarts=N] [--no_check] [--dry_run]
#     [ANY sbatch OPTION, as --opt=value: --partition= --gres=gpu:1 --dependency=
#      --mail-type= --account= --qos= --cpus-per-task= --mem= --nodes= ...]
#     [--workdir=DIR (run folder other than WORKSPACE/runs/NAME)] [-- EXTRA_FLAGS...]
#
# Runs `python -m MODULE --flagfile=F EXTRA... [--workdir=$JAXRANK_HOME/runs/NAME]`
# through launch/train.sbatch (--workdir only for modules that take it: train,
# pretrain, evaluate, predict; encode and the other tools run as they are).
# SECONDS (default 300) before the time limit the trainer gets SIGUSR1,
# checkpoints and exits 85; the job then requeues itself and resumes from that
# checkpoint, as many times as the run needs. The job log is appended to
# runs/NAME/slurm-JOBID.out. Submitting again with the same NAME resumes that run.
#
# Before `sbatch` (and with --dry_run) the full command line is checked the way
# the job would parse it (`python -m experiments.workspace check`): an unknown
# flag or config key, a missing data folder or split, a store model the config
# names but the workspace lacks, each fails at once in one line, with a "did you
# mean". --no_check skips that (e.g. a model a --dependency job will store).
#
#   --gpus=G            GPUs per node (one process per node sees them all;
#                       --ntasks-per-node=G for one process per GPU). A job
#                       that asks for GPUs (--gpus, --gres=gpu...) fails in one
#                       line at start if jax finds none.
#   --nodes / --ntasks-per-node > 1: srun starts one process per task and the
#                       trainer calls jax.distributed.initialize().
#   Options this script does not know go to sbatch unchanged (write them as
#   --opt=value); launch/train.sbatch sets SRUN_CPUS_PER_TASK from
#   --cpus-per-task, which srun no longer inherits (Slurm >= 22.05).
#
# Environment:
#   JAXRANK_HOME    workspace root on the shared filesystem (default:
#                   ./workspace under the project folder): runs/, models/, ...
#   JAXRANK_PYTHON  interpreter on the compute nodes (default: .venv/bin/python
#                   under the project folder, made by launch/make_env.sh)
#
# Sweeps use the same options: see launch/sweep.sh.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }

flagfile="" name="" time_limit="01:00:00" signal_lead=300 sweep="" module="experiments.train"
max_restarts="" max_parallel="" dry_run=0 check=1 wants_gpu=0 workdir_opt=""
sbatch_args=()
while (( $# )); do
  case "$1" in
    --flagfile=*) flagfile="${1#*=}" ;;
    --name=*) name="${1#*=}" ;;
    --time=*) time_limit="${1#*=}" ;;
    --signal_lead=*) signal_lead="${1#*=}" ;;
    --gpus=*) sbatch_args+=("--gpus-per-node=${1#*=}"); wants_gpu=1 ;;
    --workdir=*) workdir_opt="${1#*=}" ;;  # run folder other than WORKSPACE/runs/NAME
    --sweep=*) sweep="${1#*=}" ;;            # set by launch/sweep.sh
    --max_parallel=*) max_parallel="${1#*=}" ;;  # sweeps: tasks running at once
    --module=*) module="${1#*=}" ;;          # entry point other than experiments.train
    --max_restarts=*) max_restarts="${1#*=}" ;;
    --dry_run) dry_run=1 ;;
    --no_check) check=0 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    --gres=*|--gpus-per-*=*|--gpus-per-node=*) sbatch_args+=("$1")
      [[ "$1" == *gpu* ]] && wants_gpu=1 ;;
    -*) sbatch_args+=("$1") ;;               # any other sbatch option, as --opt=value
    *) echo "submit.sh: unexpected argument $1 (sbatch options as --opt=value; flags for" \
            "the job after --)" >&2; exit 2 ;;
  esac
  shift
done
extra_flags=("$@")

[[ -n "$flagfile" ]] || { echo "submit.sh: --flagfile is required" >&2; usage; }
[[ -f "$flagfile" ]] || { echo "submit.sh: flagfile $flagfile not found" >&2; exit 2; }
[[ "$signal_lead" =~ ^[0-9]+$ ]] || { echo "submit.sh: --signal_lead must be seconds" >&2; exit 2; }
if [[ -z "$name" ]]; then name="$(basename "$flagfile" .flags)-$(date +%Y%m%d-%H%M%S)"; fi
[[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "submit.sh: --name may use only A-Za-z0-9._-" >&2; exit 2; }

home="${JAXRANK_HOME:-$src/workspace}"
[[ "$home" == /* ]] || home="$PWD/$home"
[[ "$flagfile" == /* ]] || flagfile="$PWD/$flagfile"
py="${JAXRANK_PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x "$src/.venv/bin/python" ]]; then py="$src/.venv/bin/python"; else py="python3"; fi
fi
# The workspace layout has one owner (jaxrank.store.Workspace): ask it.
ws_path() { (cd "$src" && JAXRANK_HOME="$home" "$py" -m experiments.workspace path "$@"); }
workdir="${workdir_opt:-$(ws_path runs "$name")}"
# The job runs later (and again after each requeue): it runs a frozen copy of the flags.
snapshot_dir="$(ws_path launch "$name")"
train_flags=("--flagfile=$snapshot_dir/train.flags" "${extra_flags[@]}")

# Check the job's command line now, as the job will parse it (it runs in $src).
workdir_flag=1
if [[ "$module" == experiments.* ]] && (( check )); then
  check_args=("--module=$module" "--workdir=$workdir")
  if [[ -n "$sweep" ]]; then
    [[ -f "$sweep" ]] || { echo "submit.sh: sweep file $sweep not found" >&2; exit 2; }
    check_args+=("--sweep=$(cd "$(dirname "$sweep")" && pwd)/$(basename "$sweep")")
  fi
  if ! out="$(cd "$src" && JAXRANK_HOME="$home" "$py" -m experiments.workspace check \
                "${check_args[@]}" -- "--flagfile=$flagfile" "${extra_flags[@]}")"; then
    echo "submit.sh: not submitted (--no_check to submit anyway)" >&2
    exit 2
  fi
  workdir_flag="${out##*workdir_flag=}"
elif [[ "$module" == experiments.* ]]; then
  case "$module" in
    experiments.train|experiments.pretrain|experiments.evaluate|experiments.predict) ;;
    *) workdir_flag=0 ;;
  esac
fi

script_args=()
script_args+=("--module=$module")
(( workdir_flag )) || script_args+=("--no_workdir")
[[ -n "$max_restarts" ]] && script_args+=("--max_restarts=$max_restarts")

if [[ -n "$sweep" ]]; then
  [[ -f "$sweep" ]] || { echo "submit.sh: sweep file $sweep not found" >&2; exit 2; }
  # One run per non-blank, non-comment line; task i = line i of the cleaned copy.
  n_tasks="$(grep -cvE '^[[:space:]]*(#|$)' "$sweep" || true)"
  (( n_tasks > 0 )) || { echo "submit.sh: $sweep has no runs" >&2; exit 2; }
  sbatch_args+=("--array=0-$((n_tasks - 1))${max_parallel:+%$max_parallel}"
                "--output=$workdir-%a/slurm-%A_%a.out")
  script_args+=("--sweep=$snapshot_dir/sweep.txt")
else
  sbatch_args+=("--output=$workdir/slurm-%j.out")
fi

cmd=(sbatch --parsable
  --job-name="$name"
  --time="$time_limit"
  --requeue
  --signal="B:USR1@$signal_lead"
  --open-mode=append
  --chdir="$src"
  --export="ALL,JAXRANK_SRC=$src,JAXRANK_HOME=$home,JAXRANK_EXPECT_GPU=$wants_gpu"
  "${sbatch_args[@]}"
  "$src/launch/train.sbatch" "$workdir" "${script_args[@]}" -- "${train_flags[@]}")

if (( dry_run )); then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi

mkdir -p "$snapshot_dir"
cp "$flagfile" "$snapshot_dir/train.flags"
if [[ -n "$sweep" ]]; then
  grep -vE '^[[:space:]]*(#|$)' "$sweep" > "$snapshot_dir/sweep.txt"
  # SLURM opens the log before the script runs: the folders must exist.
  for (( i = 0; i < n_tasks; i++ )); do mkdir -p "$workdir-$i"; done
else
  mkdir -p "$workdir"
fi

job_id="$("${cmd[@]}")"
job_id="${job_id%%;*}"
echo "$job_id" > "$snapshot_dir/job_id"
echo "submitted job $job_id: $name"
if [[ -n "$sweep" ]]; then
  echo "  runs:  $workdir-{0..$((n_tasks - 1))} (log of task i: slurm-${job_id}_i.out in its run folder)"
else
  echo "  run:   $workdir"
  echo "  log:   $workdir/slurm-$job_id.out"
fi
echo "  watch: squeue -j $job_id; scontrol show job $job_id | grep -E 'JobState|Restarts'"

#!/usr/bin/env bash
# Submits one training run to SLURM; it survives the queue's time limit.
#
# Usage:
#   launch/submit.sh --flagfile=experiments/flags/bow_mlp.flags [--name=NAME]
#     [--time=HH:MM:SS] [--partition=P] [--gpus=G] [--nodes=N]
#     [--ntasks-per-node=T] [--cpus-per-task=C] [--mem=M] [--account=A]
#     [--qos=Q] [--signal_lead=SECONDS] [--max_restarts=N] [--dry_run]
#     [--workdir=DIR] [--dependency=afterok:JOB[:JOB]] [--kill-on-invalid-dep=yes]
#     [-- EXTRA_TRAIN_FLAGS...]
#
# Runs `python -m experiments.train --flagfile=F EXTRA... --workdir=$JAXRANK_HOME/runs/NAME`
# through launch/train.sbatch. SECONDS (default 300) before the time limit the
# trainer gets SIGUSR1, checkpoints and exits 85; the job then requeues itself
# and resumes from that checkpoint, as many times as the run needs. The job log
# is appended to runs/NAME/slurm-JOBID.out. Submitting again with the same NAME
# also resumes that run.
#
#   --gpus=G            GPUs per node (one process per node sees them all;
#                       --ntasks-per-node=G for one process per GPU).
#   --nodes / --ntasks-per-node > 1: srun starts one process per task and the
#                       trainer calls jax.distributed.initialize().
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

flagfile="" name="" time_limit="01:00:00" signal_lead=300 sweep="" module=""
max_restarts="" max_parallel="" dry_run=0 workdir_opt=""
sbatch_args=()
while (( $# )); do
  case "$1" in
    --flagfile=*) flagfile="${1#*=}" ;;
    --name=*) name="${1#*=}" ;;
    --time=*) time_limit="${1#*=}" ;;
    --signal_lead=*) signal_lead="${1#*=}" ;;
    --partition=*|--nodes=*|--ntasks-per-node=*|--cpus-per-task=*|--mem=*|--account=*|--qos=*|--constraint=*)
      sbatch_args+=("$1") ;;
    --gpus=*) sbatch_args+=("--gpus-per-node=${1#*=}") ;;
    --dependency=*|--kill-on-invalid-dep=*) sbatch_args+=("$1") ;;  # launch/pipeline.sh
    --workdir=*) workdir_opt="${1#*=}" ;;  # run folder other than WORKSPACE/runs/NAME
    --sweep=*) sweep="${1#*=}" ;;            # set by launch/sweep.sh
    --max_parallel=*) max_parallel="${1#*=}" ;;  # sweeps: tasks running at once
    --module=*) module="${1#*=}" ;;          # entry point other than experiments.train
    --max_restarts=*) max_restarts="${1#*=}" ;;
    --dry_run) dry_run=1 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "submit.sh: unknown option $1" >&2; usage ;;
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
workdir="${workdir_opt:-$home/runs/$name}"
# The job runs later (and again after each requeue): it runs a frozen copy of the flags.
snapshot_dir="$home/launch/$name"
train_flags=("--flagfile=$snapshot_dir/train.flags" "${extra_flags[@]}")

script_args=()
[[ -n "$module" ]] && script_args+=("--module=$module")
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
  --export="ALL,JAXRANK_SRC=$src,JAXRANK_HOME=$home"
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

#!/usr/bin/env bash
# One command for a whole recipe: every stage it needs, in order, resumable.
#
# Usage:
#   JAXRANK_HOME=W launch/pipeline.sh --data_dir=D1[,D2...] --name=NAME [--local]
#     [--recipe=experiments/recipes/best.sh] [--members=M] [--quick]
#     [--time=HH:MM:SS] [--partition=P] [--gpus=G] [--account=A] [--qos=Q]
#     [--mem=M] [--cpus-per-task=C] [--constraint=C] [--signal_lead=S]
#
# The recipe (a bash file, sourced) declares its stages, in order, with
#   stage STAGE [--after=S1,S2] [--time=HH:MM:SS] -- MODULE ARGS...
# (`python -m MODULE ARGS...`; --after defaults to the stage declared before;
# --time is the stage's SLURM time limit per slot). It may read NAME, DATA_DIR
# (absolute folders, comma-separated), WORKSPACE, MEMBERS (default 3) and
# QUICK (1 with --quick: tiny steps for tests and smoke runs). The default
# recipe leaves the ensemble run W/runs/NAME, which experiments.predict and
# experiments.evaluate take as --workdir.
#
# --local   the stages run one after another in this shell (log of each in
#           W/pipelines/NAME/STAGE/local.log as well).
# otherwise each stage is one SLURM job (launch/submit.sh, so it is signalled
#           before its time limit, checkpoints and is requeued like a training
#           run), started only after the stages it depends on ended well
#           (--dependency=afterok); their logs: W/pipelines/NAME/STAGE/slurm-*.out.
#
# A stage is done when W/pipelines/NAME/STAGE/done.json exists, written
# atomically when its command exits 0 (experiments.stage). Rerunning the same
# command skips done stages and continues the others (every stage's command
# resumes where it stopped); in SLURM mode a stage whose job is still queued
# or running is not submitted twice. Delete a stage's done.json to redo it.
#
# Environment: JAXRANK_HOME (workspace, default ./workspace under the project
# folder), JAXRANK_PYTHON (interpreter, default .venv/bin/python there).
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }
die() { echo "pipeline.sh: $*" >&2; exit 2; }
log() { echo "[pipeline $(date '+%F %T')] $*"; }
absolute() { if [[ "$1" == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }

local_mode=0 data_dir="" name="" recipe="$src/experiments/recipes/best.sh" members=3 quick=0
time_limit="01:00:00"
submit_args=()
while (( $# )); do
  case "$1" in
    --local) local_mode=1 ;;
    --data_dir=*) data_dir="${1#*=}" ;;
    --name=*) name="${1#*=}" ;;
    --recipe=*) recipe="$(absolute "${1#*=}")" ;;
    --members=*) members="${1#*=}" ;;
    --quick) quick=1 ;;
    --time=*) time_limit="${1#*=}" ;;
    --partition=*|--gpus=*|--account=*|--qos=*|--mem=*|--cpus-per-task=*|--constraint=*|--signal_lead=*|--max_restarts=*)
      submit_args+=("$1") ;;
    -h|--help) usage 0 ;;
    *) echo "pipeline.sh: unknown option $1" >&2; usage ;;
  esac
  shift
done

[[ -n "$name" ]] || die "--name is required"
[[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "--name may use only A-Za-z0-9._-"
[[ -n "$data_dir" ]] || die "--data_dir is required (one folder, or several: D1,D2)"
[[ "$members" =~ ^[1-9][0-9]*$ ]] || die "--members must be a positive integer"
[[ -f "$recipe" ]] || die "recipe $recipe not found"
dirs=()
IFS=, read -ra parts <<< "$data_dir"
for d in "${parts[@]}"; do
  [[ -d "$d" ]] || die "data folder $d not found"
  dirs+=("$(cd "$d" && pwd)")
done
home="$(absolute "${JAXRANK_HOME:-$src/workspace}")"
export JAXRANK_HOME="$home"
py="${JAXRANK_PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x "$src/.venv/bin/python" ]]; then py="$src/.venv/bin/python"; else py="python3"; fi
fi
state="$home/pipelines/$name"

# What the recipe may read.
NAME="$name" WORKSPACE="$home" MEMBERS="$members" QUICK="$quick"
DATA_DIR="$(IFS=,; echo "${dirs[*]}")"

# --- the stage table --------------------------------------------------------------
stages=()
declare -A stage_after=() stage_time=()
stage() {
  local s="$1" after="" t="$time_limit" prev
  shift
  if (( ${#stages[@]} )); then after="${stages[${#stages[@]}-1]}"; fi
  [[ "$s" =~ ^[A-Za-z0-9_-]+$ ]] || die "stage name '$s' may use only A-Za-z0-9_-"
  [[ -z "${stage_time[$s]:-}" ]] || die "stage $s is declared twice"
  while (( $# )); do
    case "$1" in
      --after=*) after="${1#*=}" ;;
      --time=*) t="${1#*=}" ;;
      --) shift; break ;;
      *) die "stage $s: unknown option $1 (stage NAME [--after=A,B] [--time=T] -- MODULE ARGS...)" ;;
    esac
    shift
  done
  (( $# )) || die "stage $s: no command"
  local -a prevs=()
  IFS=, read -ra prevs <<< "$after"
  for prev in "${prevs[@]}"; do
    [[ -n "${stage_time[$prev]:-}" ]] || die "stage $s: --after=$prev names no stage declared before it"
  done
  local dir="$state/$s" arg
  mkdir -p "$dir"
  if [[ ! -e "$dir/done.json" ]]; then  # the frozen command the stage (and its requeues) runs
    {
      printf -- '--stage=%s\n--module=%s\n' "$s" "$1"
      shift
      for arg in "$@"; do
        [[ "$arg" != *$'\n'* ]] || die "stage $s: an argument holds a newline"
        printf -- '--arg=%s\n' "$arg"
      done
    } > "$dir/.stage.flags.tmp"
    mv "$dir/.stage.flags.tmp" "$dir/stage.flags"
  fi
  stages+=("$s")
  stage_after[$s]="$after"
  stage_time[$s]="$t"
}

cd "$src"  # stages run `python -m` from the project folder
# shellcheck source=/dev/null
source "$recipe"
(( ${#stages[@]} )) || die "recipe $recipe declares no stage"
log "$name: ${#stages[@]} stages (${stages[*]}) from $recipe; state in $state"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1

if (( local_mode )); then
  for s in "${stages[@]}"; do
    dir="$state/$s"
    if [[ -e "$dir/done.json" ]]; then log "stage $s: done before, skipped"; continue; fi
    log "stage $s: running (log: $dir/local.log)"
    rc=0
    "$py" -m experiments.stage --flagfile="$dir/stage.flags" --workdir="$dir" 2>&1 \
      | tee -a "$dir/local.log" || rc=$?
    if (( rc != 0 )); then
      log "stage $s failed (exit $rc). Rerun the same command to continue: done stages are skipped."
      exit "$rc"
    fi
  done
  log "pipeline $name: all stages done"
  exit 0
fi

# --- SLURM: one job per stage, chained with afterok ---------------------------------
declare -A job_of=()
live_states="PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED,REQUEUED,REQUEUE_HOLD,RESIZING"
for s in "${stages[@]}"; do
  dir="$state/$s"
  if [[ -e "$dir/done.json" ]]; then log "stage $s: done before, skipped"; continue; fi
  job_name="$name.$s"
  id_file="$home/launch/$job_name/job_id"
  if [[ -f "$id_file" ]]; then
    old="$(cat "$id_file")"
    st="$(squeue -h -j "$old" -t "$live_states" -o %T 2>/dev/null | head -n1 || true)"
    if [[ -n "$st" ]]; then
      job_of[$s]="$old"
      log "stage $s: job $old from an earlier submission is $st; not submitted again"
      continue
    fi
  fi
  deps=()
  IFS=, read -ra afters <<< "${stage_after[$s]}"
  for a in "${afters[@]}"; do
    if [[ -n "${job_of[$a]:-}" ]]; then deps+=("${job_of[$a]}"); fi
  done
  args=(--module=experiments.stage "--flagfile=$dir/stage.flags" "--name=$job_name"
        "--workdir=$dir" "--time=${stage_time[$s]}" "${submit_args[@]}")
  if (( ${#deps[@]} )); then
    args+=("--dependency=afterok:$(IFS=:; echo "${deps[*]}")" --kill-on-invalid-dep=yes)
  fi
  out="$(bash "$src/launch/submit.sh" "${args[@]}")"
  id="$(sed -n 's/^submitted job \([0-9]*\).*/\1/p' <<< "$out")"
  [[ -n "$id" ]] || die "stage $s: submit.sh gave no job id:\n$out"
  job_of[$s]="$id"
  log "stage $s: job $id${deps[*]:+ after ${deps[*]}}"
done
log "pipeline $name: submitted; watch: squeue -n $(IFS=,; for s in "${stages[@]}"; do printf '%s.%s,' "$name" "$s"; done | sed 's/,$//')"

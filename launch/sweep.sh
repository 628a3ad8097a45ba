#!/usr/bin/env bash
# Submits a sweep: one run per line of SWEEPFILE, all in one SLURM job array.
#
# Usage:
#   launch/sweep.sh SWEEPFILE --flagfile=F [--name=NAME] [--max_parallel=K]
#     [any launch/submit.sh option] [-- FLAGS FOR EVERY RUN...]
#
# SWEEPFILE holds flag overrides, one run per line (shell quoting allowed;
# blank lines and lines starting with # are skipped), e.g.
#   --config.optim.lr=1e-3 --config.train.seed=0
#   --config.optim.lr=3e-4 --config.train.seed=0
# (experiments/flags/sweep_lr.txt is this example). Every line is checked
# before `sbatch` (see launch/submit.sh): a typo fails at once, naming its line.
# Task i (0-based, counting only run lines) trains with
#   --flagfile=F [FLAGS FOR EVERY RUN] [line i] --workdir=$JAXRANK_HOME/runs/NAME-i
# and, like a single run, checkpoints and requeues itself at its time limit
# (each task on its own). --max_parallel=K caps the tasks running at once.
# Compare the runs afterwards: python -m experiments.results
set -euo pipefail

if (( $# < 1 )) || [[ "$1" == -* ]]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
sweep="$1"; shift
exec "$(dirname "${BASH_SOURCE[0]}")/submit.sh" "--sweep=$sweep" "$@"

r"""Trains a ranker; run again with the same flags to resume.

  python -m experiments.train --flagfile=experiments/flags/bow_mlp.flags \
      --config.data.data_dir=jaxrank/data/sample --workdir=workspace/runs/bow

Exit codes: 0 finished, 85 stopped by SIGUSR1 after checkpointing (requeue).
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (experiments/configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder. Default: WORKSPACE/runs/<--name>.")
_NAME = flags.DEFINE_string("name", None, "Run name under WORKSPACE/runs (default: model name).")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a run even though the config differs from its "
    "config.json (the change is recorded in run.json). Without it such a resume is refused.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  stop = common.StopFlag()  # first: a USR1 during jax start-up must not kill us
  common.setup_jax()

  config = _CONFIG.value
  ws = common.workspace()
  workdir = common.run_dir(_WORKDIR.value, _NAME.value or config.model.name)
  if not config.data.data_dir:
    raise app.UsageError("set --config.data.data_dir (a competition-format folder)")
  ws.fill_run_config(config)
  with common.workdir_lock(workdir):  # a second trainer on this run stops here, writing nothing
    from jaxrank import train  # after jax.distributed.initialize
    out = train.train_and_evaluate(config, workdir, should_stop=stop, workspace=ws,
                                   allow_config_change=_ALLOW_CHANGE.value)
  if out["status"] == "preempted":
    sys.exit(common.EXIT_PREEMPTED)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  common.run(main)

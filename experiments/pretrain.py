r"""Makes an encoder and saves it into the store.

MLM pretraining of a small RoBERTa on notebook text (`objective="mlm"`):

  python -m experiments.pretrain --flagfile=experiments/flags/pretrain.flags \
      --config.data.data_dir=../shared/data/nbcorpus [--workdir=...] [--workspace=...]

Contrastive fine-tuning of a stored encoder on (markdown, next code) pairs of
the training fold (`objective="pairs"`, jaxrank.pair_finetune):

  python -m experiments.pretrain --flagfile=experiments/flags/pair_finetune.flags \
      --config.data.data_dir=../shared/data/nbcorpus --config.data.fold=0

Run again with the same flags to resume from the last checkpoint. Exit codes as
experiments.train: 0 finished (model stored), 85 stopped by SIGUSR1 after
checkpointing (launch/submit.sh --module=experiments.pretrain requeues it).
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/configs/pretrain.py")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints. Default: WORKSPACE/runs/"
                               "pretrain-<save_as>.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  stop = common.StopFlag()
  common.setup_jax()
  from jaxrank import pair_finetune, pretrain, store  # after jax.distributed.initialize
  from jaxrank.data import notebooks as nb_io

  config = _CONFIG.value
  if not config.data.data_dir:
    raise app.UsageError("set --config.data.data_dir (a competition-format folder)")
  ws = store.Workspace(common.workspace_root()).ensure()
  cache = config.data.cache_dir or str(common.notebook_cache_dir())
  nbs = nb_io.load_split(config.data.data_dir, config.data.split, cache_dir=cache)
  if config.data.max_notebooks:
    nbs = nbs[:config.data.max_notebooks]
  workdir = _WORKDIR.value or str(ws.runs_dir / f"pretrain-{config.model.save_as}")
  if config.objective not in ("mlm", "pairs"):
    raise app.UsageError(f"config.objective must be 'mlm' or 'pairs', got {config.objective!r}")
  with common.workdir_lock(workdir):  # one trainer per workdir
    if config.objective == "pairs":  # the held-out fold's orders are never read
      out = pair_finetune.finetune(config, ws, pair_finetune.training_notebooks(nbs, config.data),
                                   workdir, should_stop=stop)
    else:
      out = pretrain.pretrain(config, ws, nbs, workdir, should_stop=stop)
  if out["steps"] < out["total"]:
    print(f"stopped at step {out['steps']}/{out['total']}: run again to resume")
    sys.exit(common.EXIT_PREEMPTED)
  if out["manifest"]:
    print(f"stored model {out['manifest']['name']!r} "
          f"({out['manifest']['parameter_count']} parameters) after {out['steps']} steps")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  common.run(main)

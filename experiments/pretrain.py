r"""MLM-pretrains a small RoBERTa on notebook text and saves it into the store.

  python -m experiments.pretrain --flagfile=experiments/flags/pretrain.flags \
      --config.data.data_dir=../shared/data/nbcorpus [--workdir=...] [--workspace=...]

Run again with the same flags to resume from the last checkpoint.
"""

from absl import app, flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/configs/pretrain.py")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints. Default: WORKSPACE/runs/"
                               "pretrain-<save_as>.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.setup_jax()
  from jaxrank import pretrain, store  # after jax.distributed.initialize
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
  out = pretrain.pretrain(config, ws, nbs, workdir)
  if out["manifest"]:
    print(f"stored model {out['manifest']['name']!r} "
          f"({out['manifest']['parameter_count']} parameters) after {out['steps']} steps")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)

"""Damaged checkpoints (a crash or a full disk mid-write) never stop a run.

Real Orbax checkpoints on disk, damaged the ways a node crash leaves them: a
truncated data file, lost metadata, an empty step folder.
"""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrank import checkpoint, train
from tests.tiny import tiny_bow_config


def _state(v):
  return {"step": jnp.asarray(v, jnp.int32), "params": {"w": jnp.full((64, 8), float(v))},
          "opt_state": {"mu": jnp.full((64, 8), -float(v))}}


def _biggest_file(step_dir) -> str:
  files = [f for f in glob.glob(f"{step_dir}/state/**/d/*", recursive=True) if os.path.isfile(f)]
  return max(files, key=os.path.getsize)


def _truncate(path):
  os.truncate(path, os.path.getsize(path) // 2)


DAMAGE = {
    "truncated data file": lambda d: _truncate(_biggest_file(d)),
    "lost array manifest": lambda d: os.remove(f"{d}/state/manifest.ocdbt"),
    "lost meta item": lambda d: os.remove(f"{d}/meta/metadata"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE) + ["empty step folder"])
def test_damaged_newest_step_is_set_aside_and_the_previous_one_restored(tmp_path, damage):
  ck = checkpoint.Checkpointer(tmp_path, keep=3)
  for s in (1, 2, 3):
    ck.save(s, _state(s), {"step": s})
  ck.wait()
  if damage == "empty step folder":
    (tmp_path / "checkpoints" / "4").mkdir()
    bad = 4
  else:
    DAMAGE[damage](tmp_path / "checkpoints" / "3")
    bad = 3
  ck.close()

  ck = checkpoint.Checkpointer(tmp_path, keep=3)
  assert ck.latest_step() == bad  # Orbax alone would resume from (and crash on) it
  state, meta = ck.restore(checkpoint.abstract_of(_state(0)))
  good = 3 if bad == 4 else 2
  assert meta == {"step": good} and int(state["step"]) == good
  np.testing.assert_array_equal(state["params"]["w"], np.full((64, 8), float(good)))
  # Set aside, not deleted; the run goes on and may save that step number again.
  assert not (tmp_path / "checkpoints" / str(bad)).exists()
  aside = list((tmp_path / "checkpoints" / "broken").iterdir())
  assert [p.name.split("-")[0] for p in aside] == [f"step_{bad}"]
  assert ck.latest_step() == good
  ck.save(bad, _state(9), {"step": bad})
  ck.wait()
  assert bad in ck.latest.all_steps()
  ck.close()


def test_nothing_restores_is_one_clear_error_and_moves_nothing(tmp_path):
  ck = checkpoint.Checkpointer(tmp_path)
  ck.save(1, _state(1), {"step": 1})
  ck.wait()
  with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint restores \(checkpoints/1: "):
    # A config that no longer fits the run: nothing is moved, the run is not restarted.
    ck.restore(checkpoint.abstract_of(dict(_state(0), params={"w": jnp.zeros((3, 8))})))
  assert (tmp_path / "checkpoints" / "1").is_dir()
  assert not (tmp_path / "checkpoints" / "broken").exists()
  ck.close()


def test_restore_params_reads_no_optimiser_state_and_falls_back(tmp_path):
  ck = checkpoint.Checkpointer(tmp_path)
  ck.save(1, _state(1), {"step": 1})
  ck.save(2, _state(2), {"step": 2})
  ck.save(2, _state(7), {"step": 2}, best=True)
  ck.wait()
  ck.close()
  params = checkpoint.restore_params(tmp_path, best=True)
  assert list(params) == ["w"] and params["w"][0, 0] == 7.0
  _truncate(_biggest_file(tmp_path / "best" / "2"))
  with pytest.raises(Exception):
    checkpoint.restore_params(tmp_path, best=True)  # no fallback asked
  assert checkpoint.restore_params(tmp_path, best=True, fallback=True)["w"][0, 0] == 2.0
  assert (tmp_path / "best" / "2").is_dir()  # a reader changes nothing
  for s in (1, 2):
    _truncate(_biggest_file(tmp_path / "checkpoints" / str(s)))
  with pytest.raises(checkpoint.CheckpointError) as e:
    checkpoint.restore_params(tmp_path, best=True, fallback=True)
  msg = str(e.value)
  assert "\n" not in msg and "best/2" in msg and "checkpoints/2" in msg and "checkpoints/1" in msg


def test_truncated_newest_checkpoint_rerun_resumes_and_matches_uninterrupted(tmp_path):
  cfg = tiny_bow_config(**{"train.steps": 4, "train.checkpoint_every": 1,
                           "train.keep_checkpoints": 3})
  stops = iter([False, False, True])  # stop after step 3
  out = train.train_and_evaluate(cfg, tmp_path / "a", should_stop=lambda: next(stops, False))
  assert out["step"] == 3
  _truncate(_biggest_file(tmp_path / "a" / "checkpoints" / "3"))
  out = train.train_and_evaluate(cfg, tmp_path / "a")  # the same command again
  assert (out["status"], out["step"]) == ("done", 4)
  assert [p.name.split("-")[0] for p in (tmp_path / "a" / "checkpoints" / "broken").iterdir()] \
      == ["step_3"]
  train.train_and_evaluate(cfg, tmp_path / "b")
  got, want = (jax.tree.leaves(checkpoint.restore_params(tmp_path / w)) for w in "ab")
  for x, y in zip(got, want, strict=True):
    np.testing.assert_array_equal(x, y)



def test_a_step_already_on_disk_is_not_written_again(tmp_path):
  # Killed after best/5 was written but before the next periodic save: the resumed
  # run replays step 5 and finds it better again. Orbax alone refuses the save.
  ck = checkpoint.Checkpointer(tmp_path)
  ck.save(5, _state(5), {"step": 5}, best=True)
  ck.wait()
  ck.close()
  ck = checkpoint.Checkpointer(tmp_path)
  ck.save(5, _state(5), {"step": 5}, best=True)
  ck.save(6, _state(6), {"step": 6}, best=True)
  ck.wait()
  assert ck.best.all_steps() == [6]
  ck.close()

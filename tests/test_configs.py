"""Model configs: one default per field, unknown keys fail naming themselves.

Every family in `jaxrank.train.MODELS` has its config in
`experiments/configs/<name>.py`; the dataclass built from `config.model` must
agree with that file on every default, so a field means the same whether a
model is built from the config or from the dataclass in a test.
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from jaxrank import train


def _cfg_class(name):
  mod_name, cls_name = train.MODELS[name]
  return getattr(importlib.import_module(mod_name), cls_name)


@pytest.mark.parametrize("name", sorted(train.MODELS))
def test_config_and_dataclass_agree_on_every_default(name):
  config = importlib.import_module(f"experiments.configs.{name}").get_config()
  assert config.model.name == name
  defaults = {f.name: f.default for f in dataclasses.fields(_cfg_class(name))}
  model = {k: v for k, v in config.model.items() if k not in train.TRAINER_KEYS}
  assert set(model) <= set(defaults), sorted(set(model) - set(defaults))
  differ = {k: (v, defaults[k]) for k, v in model.items() if k != "dtype" and v != defaults[k]}
  assert not differ, f"config vs dataclass defaults differ: {differ}"
  # Built as the trainer builds it, the config gives exactly the dataclass defaults.
  built = train.model_config(_cfg_class(name), config.model, vocab_size=7)
  assert built == _cfg_class(name)(vocab_size=7)


def test_an_unknown_model_key_fails_in_one_line_naming_it():
  config = importlib.import_module("experiments.configs.bow_mlp").get_config()
  with config.unlocked():
    config.model.hiden_dim = 3
  with pytest.raises(ValueError) as e:
    train.family_from_config(config, vocab_size=10)
  msg = str(e.value)
  assert "\n" not in msg and "'hiden_dim'" in msg and "BowMlpConfig" in msg


def test_a_named_encoder_needs_a_workspace():
  config = importlib.import_module("experiments.configs.roberta_pointwise").get_config()
  with pytest.raises(ValueError, match="model.encoder_name='minilm-l6' needs model.workspace"):
    train.family_from_config(config, vocab_size=10)

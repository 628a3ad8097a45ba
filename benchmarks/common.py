"""Helpers the benchmark scripts share (no absl flags here: several scripts import it)."""

from __future__ import annotations

import ast
from typing import Any, Sequence


def literal(text: str) -> Any:
  """A Python literal ("4", "(1, 2)", "False"), else the text itself (a string value)."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def overrides(items: Sequence[str]) -> dict[str, Any]:
  """["optim.lr=3e-3", "model.head=gap"] -> {"optim.lr": 0.003, "model.head": "gap"}."""
  return {k: literal(v) for k, v in (item.split("=", 1) for item in items)}

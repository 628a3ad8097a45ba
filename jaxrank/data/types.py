"""The one in-memory notebook type every module shares."""

from __future__ import annotations

import dataclasses

CODE = "code"
MARKDOWN = "markdown"
CELL_TYPES = (CODE, MARKDOWN)


@dataclasses.dataclass(frozen=True)
class Notebook:
  """A notebook as the competition ships it.

  `cell_ids`, `cell_types` and `sources` are aligned and in *file order*: code
  cells first in their true order, then markdown cells (shuffled). `order` is
  the true order of all cell ids when known (train), else None (test).
  """

  id: str
  cell_ids: tuple[str, ...]
  cell_types: tuple[str, ...]
  sources: tuple[str, ...]
  order: tuple[str, ...] | None = None
  ancestor_id: str | None = None

  @property
  def n_cells(self) -> int:
    return len(self.cell_ids)

  @property
  def code_ids(self) -> tuple[str, ...]:
    return tuple(c for c, t in zip(self.cell_ids, self.cell_types) if t == CODE)

  @property
  def markdown_ids(self) -> tuple[str, ...]:
    return tuple(c for c, t in zip(self.cell_ids, self.cell_types) if t == MARKDOWN)

  @property
  def n_code(self) -> int:
    return sum(t == CODE for t in self.cell_types)

  @property
  def n_markdown(self) -> int:
    return self.n_cells - self.n_code

"""Data layer: read and validate competition files, folds, caches, batching."""

from jaxrank.data.folds import ancestor_folds, split_train_val
from jaxrank.data.notebooks import (DataError, load_split, parse_notebook, read_notebook,
                                    sample_data_dir)
from jaxrank.data.types import CELL_TYPES, CODE, MARKDOWN, Notebook

__all__ = [
    "CELL_TYPES", "CODE", "MARKDOWN", "DataError", "Notebook", "ancestor_folds",
    "load_split", "parse_notebook", "read_notebook", "sample_data_dir", "split_train_val",
]

"""The encoding loop as it was before the speed work, and helpers to compare against it.

Flag-free (unlike `benchmarks.bench_encoder`, whose absl flags would clash with the
entry points' in one process), so tests can import it.
"""

from __future__ import annotations


def corpus_texts(data_dir: str, n_cells: int, seed: int = 0, cache_dir=None) -> list[str]:
  """`n_cells` distinct cell texts (as the encoder sees them) drawn at random from a
  competition folder's train split (default: the embedded sample)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxrank.data import notebooks as nb_io  # pylint: disable=g-import-not-at-top
  from jaxrank.features import subword as sw  # pylint: disable=g-import-not-at-top
  nbs = nb_io.load_split(data_dir or nb_io.sample_data_dir(), "train", cache_dir=cache_dir)
  texts = list(dict.fromkeys(sw.clean_text(s, 2000) for nb in nbs for s in nb.sources))
  return [texts[i] for i in np.random.default_rng(seed).permutation(len(texts))[:n_cells]]


def legacy_vectors(tok, encode, texts, max_tokens=64, max_chars=2000, batch_rows=64,
                   save_every=2048):
  """The encoding loop of `EncoderFeaturizer.vectors` before the speed work (the
  baseline): chunks of texts sorted by characters, every text tokenized whole,
  batches cut to the longest row (multiple of 8) and read back one by one."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxrank.features import encoder as ef  # pylint: disable=g-import-not-at-top
  order = np.argsort([len(t) for t in texts], kind="stable")
  out = []
  for s in range(0, len(order), save_every):
    idx = order[s:s + save_every]
    ids = legacy_tokenize(tok, [texts[i] for i in idx], max_tokens, max_chars)
    for b in range(0, len(idx), batch_rows):
      part = ids[b:b + batch_rows]
      out.append(encode(part[:, :ef.bucket_width(int((part != tok.pad_token_id).sum(1).max()),
                                                 max_tokens)]))
  return np.concatenate(out)


def legacy_tokenize(tok, texts, max_tokens, max_chars):
  """Token ids as before the speed work: the tokenizer reads every text whole."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxrank.features import subword as sw  # pylint: disable=g-import-not-at-top
  out = np.full((len(texts), max_tokens), tok.pad_token_id, np.int32)
  enc = tok([sw.clean_text(t, max_chars) or " " for t in texts], truncation=True,
            max_length=max_tokens, add_special_tokens=True)["input_ids"]
  for i, ids in enumerate(enc):
    out[i, :len(ids)] = ids
  return out


def cosines(a, b):
  """Row-wise cosine agreement of two [N, E] arrays: mean, min and 1st percentile."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
  return {"mean": float(cos.mean()), "min": float(cos.min()),
          "p01": float(np.percentile(cos, 1))}

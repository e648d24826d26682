#!/usr/bin/env bash
# The SRU paper's Table 1 analogue: every cell on every set with `minirec train classify --preset paper`
# (2 layers of 128, Adam 1e-3, batch 32, dropout 0.5, random 300-d embeddings, max pooling, early
# stopping with patience 3; 10-fold cross-validation on mr/subj/cr/mpqa, the own split on trec/sst2).
#
#   benchmarks/classify_table.sh [OUT] [DATA_DIR]        # all of it: 5 cells x 6 sets
#   CELLS="sru lstm" SETS="trec cr" benchmarks/classify_table.sh /tmp/clf ../shared/data
#
# Re-running continues: finished runs and folds are skipped, interrupted ones resume. Each run
# leaves OUT/SET-CELL/results.json (trec, sst2) or OUT/SET-CELL/summary.json (the folds merged);
# copy those into results/classify-SET-CELL.json. Runs one job at a time, niced; for parallel
# folds start several `minirec train classify ... --fold K` by hand (same --out).
set -euo pipefail
out=${1:-runs/classify}
data=${2:-../shared/data}
cells=${CELLS:-sru lstm qrnn lrn mingru}
sets=${SETS:-trec cr mr subj mpqa sst2}
python=${PYTHON:-python}
for set in $sets; do
  for cell in $cells; do
    dir="$out/$set-$cell"
    case $set in
      mr|subj|cr|mpqa) resume=--resume ;;  # the fold driver starts what has no checkpoint
      *) if [ -e "$dir/results.json" ] && grep -q '"status": "completed"' "$dir/results.json"; then continue; fi
         resume=; [ -e "$dir/checkpoint.npz" ] && resume=--resume ;;
    esac
    echo "== $set $cell $(date +%H:%M:%S)"
    nice "$python" -m minirec train classify --preset paper --dataset "$set" --cell "$cell" \
      --data-dir "$data" --out "$dir" $resume --no-progress
  done
done

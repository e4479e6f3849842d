#!/bin/sh
# The study of docs/gnn.md: layouts x samplers on synthetic DGraphFin-style graphs at 1% and
# 10% of DGraphFin's size, 3 seeds, through the test matrix (defconfigs/gnn-layouts-samplers
# with a fixed number of epochs instead of a time budget, so every cell does the same work),
# plus the
# sampling-only read-amplification table of `knlp gnn ra` (every layout) at both sizes.
# scripts/gnn_report.py turns the results into the tables and the figure.
# usage: scripts/gnn_study.sh OUTDIR [EPOCHS_1PCT] [EPOCHS_10PCT]
set -eu
out=${1:?usage: gnn_study.sh OUTDIR [EPOCHS_1PCT] [EPOCHS_10PCT]}
e1=${2:-10}
e10=${3:-2}
top=$(cd "$(dirname "$0")/.." && pwd)
K="$top/build/knlp"
mkdir -p "$out"
for scale in 1:37000:$e1 10:370000:$e10; do
	pct=${scale%%:*}; rest=${scale#*:}; nodes=${rest%%:*}; epochs=${rest#*:}
	layouts="identity random bfs metis rcm"
	d="$out/pct$pct"
	mkdir -p "$d"
	[ -s "$d/ra.json" ] || "$K" gnn ra --config "$top/defconfigs/gnn-layouts-samplers" --set GNN_SYNTH_NODES="$nodes" \
		--samplers "neighbor page" --store-dir "$d" --json "$d/ra.json"
	ls "$d"/test_matrix_results_*/all_results.json >/dev/null 2>&1 || (cd "$d" && "$K" matrix --config "$top/defconfigs/gnn-layouts-samplers" --set GNN_SYNTH_NODES="$nodes" \
		--set GNN_EPOCHS="$epochs" --set MAX_TIME=0 --set GNN_MATRIX_LAYOUTS="$layouts" --set MATRIX_RESULTS_DIR=. --yes)
done
/usr/bin/python3 "$top/scripts/gnn_report.py" "$out"

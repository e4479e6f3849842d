#!/bin/bash
# The pruning study of docs/pruning.md: the CPU-sized GPT-2 on the default corpus at 50%
# sparsity, dense / magnitude / movement / bitter0 / bitter7 / bitter8, equal iterations,
# several seeds; then scripts/prune_report.py writes summary.json, a plot and report.html.
#   scripts/prune_study.sh [OUT_DIR] [SEEDS...]      (default: prune-study, seeds 1 2 3)
# Runs already complete in OUT_DIR are kept (rerun to continue an interrupted study).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-prune-study}
shift || true
seeds=${*:-1 2 3}
KNLP=${KNLP:-$top/build/knlp}
PY=/usr/bin/python3
mkdir -p "$out"
methods="dense magnitude movement bitter0 bitter7 bitter8"
total=$(( $(echo $methods | wc -w) * $(echo $seeds | wc -w) ))
n=0
for m in $methods; do
	preset=gpt2-cpu-prune-$m
	[ "$m" = dense ] && preset=gpt2-tiny-cpu
	cfg="$out/$m.config"
	KCONFIG_CONFIG="$cfg" $PY "$top/scripts/kconfig.py" defconfig "$preset" >/dev/null
	for s in $seeds; do
		n=$((n + 1))
		run="$out/$m-seed$s"
		if grep -q '"status": "complete"' "$run/training_metrics.json" 2>/dev/null; then
			echo "[$n/$total] $m seed $s: complete, kept"
			continue
		fi
		rm -rf "$run"
		echo "[$n/$total] $m seed $s"
		"$KNLP" train --config "$cfg" --set SEED=$s --set MAX_ITERS=1000 --set SAMPLE_AT_EVAL=n \
			--out "$run" >"$out/$m-seed$s.log" 2>&1 || { echo "  failed: see $out/$m-seed$s.log"; tail -3 "$out/$m-seed$s.log"; }
		tail -1 "$out/$m-seed$s.log"
	done
done
$PY "$top/scripts/prune_report.py" "$out"

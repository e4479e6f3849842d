#!/bin/bash
# The attention study of docs/attention.md, at CPU scale on the default corpus:
#  (a) vanilla vs SDPA gate vs reciprocal attention (gpt2-cpu-ra-sdpa-ablation), 3 seeds,
#      at equal iterations, and at equal wall time (each variant gets the iterations that
#      vanilla's iteration budget buys at its own quiet-machine step time);
#  (b) MLA vs KVSplice vs hybrid-last vs hybrid-first (gpt2-cpu-kvsplice-ablation), 3 seeds.
# Then every final checkpoint is scored on a cloze set from the validation split and its
# attention Fisher spectrum is taken, and scripts/attention_report.py writes
# OUT/summary.json, OUT/report.html and the plots.
#   scripts/attention_study.sh [OUT_DIR]        (default attn-study; reruns continue)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-attn-study}
KNLP=${KNLP:-$top/build/knlp}
BENCH=${BENCH:-$top/build/knlp_bench}
PY=/usr/bin/python3
mkdir -p "$out"
for s in ra-sdpa kvsplice; do
	KCONFIG_CONFIG="$out/$s.config" $PY "$top/scripts/kconfig.py" defconfig gpt2-cpu-$s-ablation >/dev/null
	if [ -f "$out/$s/plan.json" ]; then
		"$KNLP" matrix --config "$out/$s.config" --continue --dir "$out/$s" --yes
	else
		"$KNLP" matrix --config "$out/$s.config" --out "$out/$s" --yes
	fi
done

# Equal wall time: quiet step times from the benchmark (same shape, B 16, T 128).
if [ ! -f "$out/step_times.json" ]; then
	echo "{" >"$out/step_times.json.tmp"
	sep=
	for v in vanilla gate ra mla kvsplice hybrid-last hybrid-first; do
		j=$("$BENCH" attention $v 4 4 128 16 20)
		printf '%s"%s": %s\n' "$sep" "$v" "$j" >>"$out/step_times.json.tmp"
		sep=,
	done
	echo "}" >>"$out/step_times.json.tmp"
	mv "$out/step_times.json.tmp" "$out/step_times.json"
fi
iters=$(grep -o 'CONFIG_MAX_ITERS=[0-9]*' "$out/ra-sdpa.config" | cut -d= -f2)
for v in gate ra; do
	n=$($PY -c "import json; t=json.load(open('$out/step_times.json')); print(round($iters * t['vanilla']['train_step_ms'] / t['$v']['train_step_ms']))")
	sym=SDPA_GATE; [ $v = ra ] && sym=RA
	for s in 1337 1338 1339; do
		run="$out/equal-time/gpt2-$v-s$s"
		grep -q '"status": "complete"' "$run/training_metrics.json" 2>/dev/null && continue
		rm -rf "$run"; mkdir -p "$out/equal-time"
		echo "equal time: $v seed $s, $n iterations (vanilla: $iters)"
		"$KNLP" train --config "$out/ra-sdpa.config" --set GPT2_ATTN_VARIANTS= --set MATRIX_SEEDS=1 --set GPT2_ATTN_$sym=y \
			--set SEED=$s --set MAX_ITERS=$n --out "$run" >"$run.log" 2>&1 || { echo "failed: $run.log"; tail -3 "$run.log"; }
	done
done

# Cloze accuracy and Fisher spectrum of every final checkpoint.
[ -f "$out/cloze.jsonl" ] || "$KNLP" cloze --config "$out/ra-sdpa.config" --out "$out/cloze.jsonl" --count 400 --seed 1
for run in "$out"/ra-sdpa/gpt2-* "$out"/kvsplice/gpt2-* "$out"/equal-time/gpt2-*; do
	[ -d "$run/checkpoints" ] || continue
	[ -f "$run/cloze.json" ] || "$KNLP" eval --checkpoint "$run" --task hellaswag --data "$out/cloze.jsonl" 2>/dev/null >"$run/cloze.json"
	[ -f "$run/fisher.json" ] || "$KNLP" fim attention --checkpoint "$run" --layers all --out "$run/fisher.json" >/dev/null
done
$PY "$top/scripts/attention_report.py" "$out"

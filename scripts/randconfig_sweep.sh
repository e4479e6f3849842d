#!/bin/bash
# make randconfig-sweep N=50: N random valid configurations (KCONFIG_SEED = FIRST .. FIRST+N-1,
# fixed), each trained for a few steps on tiny shapes (sizes overridden so a run takes
# seconds: GPT-2 1 x 32 on a 16-token context, 3 iterations; image models and the GNN
# stopped by a 5 s budget on a 2,000-node graph; the CPU and Fashion-MNIST pinned). Every configuration must either train
# with finite losses or be rejected up front with one clear "knlp: error:" line; nothing
# may crash, hang (60 s) or leave a failed run marked complete; an error after training has
# started (a logged step or a checkpoint) is a failure, not a rejection. At least MIN_TRAINED
# configurations (default half) must train, so a sweep that rejects everything fails too.
# Prints one line per configuration and a summary; exit status 1 when any configuration
# failed or too few trained.
# usage: scripts/randconfig_sweep.sh KNLP N [FIRST] [OUTDIR] [MIN_TRAINED]
set -u
K=$1
N=${2:-50}
first=${3:-1}
out=${4:-$(mktemp -d /tmp/knlp-randsweep-XXXXXX)}
min_trained=${5:-$(( (N + 1) / 2 ))}
top=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3
mkdir -p "$out/configs"
KCONFIG_CONFIG="$out/.config" $PY "$top/scripts/kconfig.py" randconfigs "$out/configs" "$first" $((first + N - 1)) || exit 1
if [ ! -s "$out/data/meta.json" ]; then
	$PY -c "open('$out/corpus.txt', 'w').write(' '.join(['the driver maps the page.', 'a module frees a buffer.'] * 400))"
	"$K" prepare --corpus "$out/corpus.txt" --out "$out/data" >/dev/null 2>&1 || { echo "sweep: prepare failed"; exit 1; }
fi
tiny=(--set DATA_DIR="$out/data" --set DATASET_CUSTOM=y --set DATA_TOKENIZER_BYTE=y
	--set GPT2_SIZE_CUSTOM=y --set GPT2_N_LAYER=1 --set GPT2_N_HEAD=2 --set GPT2_N_EMBD=32 --set GPT2_BLOCK_SIZE=16 --set GPT2_VOCAB_SIZE=0
	--set BATCH_SIZE=2 --set GRAD_ACCUM=1 --set MAX_ITERS=3 --set WARMUP_ITERS=1 --set EVAL_INTERVAL=2 --set EVAL_SAMPLES=1
	--set SAMPLE_TOKENS=4 --set MAX_TIME=5 --set EPOCHS=1 --set GNN_SYNTH_NODES=2000 --set GNN_EPOCHS=1
	--set FIM_CHUNKS=2 --set FIM_SEQ=8 --set TIER_ITERS=2 --set TIER_WARMUP=1 --set TIER_CONTEXT=8 --set NUM_THREADS=2
	--set OUTPUT_DIR="$out/runs" --set MATRIX_RESULTS_DIR="$out/matrix"
	--set DEVICE_CPU=y --set IMAGE_DATASET_FASHION_MNIST=y --set IMAGE_DATA_DIR= --set IMAGE_NUM_CLASSES=0
	--set DEBUG_DRY_RUN=n)
# What the machine decides, not the configuration, is pinned: the CPU (no GPU here), the
# image dataset Debian ships (CIFAR and MNIST are bring-your-own), no dry runs.
trained=0 rejected=0 failed=0
for ((s = first; s < first + N; s++)); do
	cfg="$out/configs/rand-$s"
	run="$out/runs/r$s"
	rm -rf "$run"
	timeout -k 5 60 "$K" train --config "$cfg" "${tiny[@]}" --out "$run" >"$out/r$s.log" 2>&1
	rc=$?
	model=$(sed -n 's/^CONFIG_MODEL_\(.*\)=y/\1/p' "$cfg" | tr 'A-Z' 'a-z')
	status=$($PY -c "import json,sys; print(json.load(open('$run/training_metrics.json')).get('status',''))" 2>/dev/null)
	if [ $rc -eq 0 ]; then
		if $PY - "$run/training_metrics.json" <<'PY' 2>/dev/null; then
import json, math, os, sys
m = json.load(open(sys.argv[1]))
assert m["status"] in ("complete", "stopped_time_budget"), m["status"]
vals = [h["train_loss"] for h in m["history"] if h.get("train_loss") is not None]
vals += [m["progress"]["train_loss"]] if m["progress"].get("train_loss") is not None else []
jl = os.path.join(os.path.dirname(sys.argv[1]), "metrics.jsonl")
vals += [json.loads(l)["loss"] for l in open(jl) if '"type":"train"' in l] if os.path.exists(jl) else []
assert vals and all(math.isfinite(v) for v in vals), vals
PY
			trained=$((trained + 1)); echo "rand-$s $model: trained ($status)"
		else
			failed=$((failed + 1)); echo "rand-$s $model: FAILED: exit 0 but metrics are missing or not finite"
		fi
	elif [ $rc -ge 124 ]; then
		failed=$((failed + 1)); echo "rand-$s $model: FAILED: crashed or hung (exit $rc): $(tail -n 2 "$out/r$s.log" | tr '\n' ' ')"
	else
		err=$(grep -c '^knlp: error: ' "$out/r$s.log")
		started=0 # a logged step or a checkpoint: the error came after training began
		{ grep -q '"type":"train"' "$run/metrics.jsonl" 2>/dev/null || [ -e "$run/checkpoints/LATEST" ]; } && started=1
		if [ "$err" -eq 1 ] && [ "$status" != "complete" ] && [ $started -eq 0 ]; then
			rejected=$((rejected + 1)); echo "rand-$s $model: rejected: $(grep '^knlp: error: ' "$out/r$s.log" | cut -c1-160)"
		else
			why="exit $rc without one clear error line"
			[ $started -eq 1 ] && why="failed after training had started (exit $rc)"
			failed=$((failed + 1)); echo "rand-$s $model: FAILED: $why: $(tail -n 3 "$out/r$s.log" | tr '\n' ' ')"
		fi
	fi
done
echo "randconfig sweep: $N configurations (seeds $first..$((first + N - 1))): $trained trained, $rejected rejected cleanly, $failed failed; logs in $out"
if [ $trained -lt $min_trained ]; then
	echo "randconfig sweep: FAILED: only $trained trained (at least $min_trained must; a sweep that rejects everything tests nothing)"
	exit 1
fi
[ $failed -eq 0 ]

#!/bin/bash
# Test matrices end to end: plan, run, SIGKILL at random moments + continue (same results
# as an uninterrupted matrix, nothing lost or counted twice), shards + merge, seeds and
# the baseline comparison, failures, refusals, and the HTML report in headless Chromium.
. "$(dirname "$0")/lib.sh"
cd "$T"

# A small learnable byte corpus.
$PYTHON - <<'PY'
import random
r = random.Random(5)
s = " ".join(r.choice(["the driver maps the page.", "a module frees a buffer.", "this patch locks memory."])
             for _ in range(3000))
open("corpus.txt", "w").write(s)
PY
"$KNLP" prepare --corpus corpus.txt --out data >/dev/null 2>&1 || { bad "prepare"; finish; exit 1; }

cat >m.config <<EOC
CONFIG_DEVICE_CPU=y
CONFIG_DATA_DIR="$T/data"
CONFIG_NUM_THREADS=1
CONFIG_GPT2_SIZE_CUSTOM=y
CONFIG_GPT2_N_LAYER=1
CONFIG_GPT2_N_HEAD=2
CONFIG_GPT2_N_EMBD=32
CONFIG_GPT2_BLOCK_SIZE=16
CONFIG_BATCH_SIZE=4
CONFIG_MAX_ITERS=12
CONFIG_WARMUP_ITERS=2
CONFIG_EVAL_INTERVAL=6
CONFIG_EVAL_SAMPLES=2
CONFIG_LOG_INTERVAL=3
CONFIG_CHECKPOINT_INTERVAL=3
# CONFIG_SAMPLE_AT_EVAL is not set
CONFIG_OPTIMIZER_MODE_MULTIPLE=y
CONFIG_OPTIMIZER_ENABLE_SGD=y
CONFIG_OPTIMIZER_ENABLE_ADAMW=y
CONFIG_PRUNING_MODE_MULTIPLE=y
CONFIG_PRUNING_ENABLE_NONE=y
CONFIG_PRUNING_ENABLE_MAGNITUDE=y
# CONFIG_PRUNING_ENABLE_MOVEMENT is not set
# CONFIG_SPARSITY_ENABLE_70 is not set
# CONFIG_SPARSITY_ENABLE_90 is not set
CONFIG_PRUNING_WARMUP=2
CONFIG_PRUNING_FREQUENCY=2
CONFIG_PRUNING_RAMP_END=8
CONFIG_MATRIX_RESULTS_DIR="$T/results"
EOC
M() { KNLP_PEAK_FLOPS=1e9 "$KNLP" matrix --config m.config "$@"; }

# Results without the fields that measure time.
strip() {
	$PYTHON - "$@" <<'PY'
import json, os, sys
d = sys.argv[1]
res = json.load(open(os.path.join(d, "all_results.json")))
out = []
for e in res:
    for k in ("elapsed_time", "throughput", "rss_mean_mb", "rss_peak_mb", "gpu_memory_mean_mb", "gpu_memory_peak_mb"):
        e.pop(k, None)
    m = json.load(open(os.path.join(d, e["test_id"], "training_metrics.json")))
    for k in ("total_time", "throughput", "mfu", "tokens_per_second", "hardware"):
        m.pop(k, None)
    m["metrics"].pop("timestamps", None)
    for h in m["history"]:
        h.pop("elapsed", None)
    out.append([e, m])
print(json.dumps(out, sort_keys=True))
PY
}

# --- plan and refusals
out=$(M --dry-run 2>&1)
echo "$out" | grep -q "^4 runs; no earlier results" && ok || bad "dry run: $out"
echo "$out" | grep -q "gpt2_adamw_magnitude_50" && ok || bad "dry run ids: $out"
"$KNLP" matrix --config m.config --is-matrix && ok || bad "--is-matrix"
printf '# two learning rates\nCONFIG_LEARNING_RATE=1e-3|3e-3\n' >range.config
M --dry-run --sweep range.config 2>&1 | grep -q "^8 runs" && ok || bad "sweep plan"
M --dry-run --sweep range.config 2>&1 | grep -q "gpt2_sgd_magnitude_50_learning_rate-3e-3" && ok || bad "sweep ids"
printf 'CONFIG_BATCH_SIZE=x|y\n' >badrange.config
expect_fail "badrange.config:1: CONFIG_BATCH_SIZE expects an integer" M --dry-run --sweep badrange.config
printf 'CONFIG_SEED=1\n' >one.config
"$KNLP" matrix --config one.config --is-matrix && bad "one run reported as a matrix" || ok
expect_fail "stdin is not a terminal, so confirm with --yes" M --out "$T/never" </dev/null
expect_fail "every combination was filtered out" M --set OPTIMIZER_ENABLE_SGD=n --set OPTIMIZER_ENABLE_ADAMW=n \
	--set OPTIMIZER_ENABLE_ADAMWPRUNE=y --set PRUNING_ENABLE_NONE=n --dry-run

# --- an uninterrupted matrix
M --yes --out "$T/A" >A.log 2>&1 && ok || { bad "matrix A failed"; cat A.log; }
[ "$(ls "$T"/A/*/COMPLETE | wc -l)" -eq 4 ] && ok || bad "A: not 4 COMPLETE markers"
grep -q "== Best per optimizer" A/summary_report.txt && ok || bad "summary sections"
grep -q "runs planned 4, complete 4, failed 0" A/summary_report.txt && ok || bad "summary counts"
$PYTHON -c "import json,sys; r=json.load(open('A/all_results.json')); sys.exit(0 if len(r)==4 and all(e['success'] and e['quality_metric']=='loss' and e['quality']>0 and e['figures']['val_perplexity']>1 for e in r) else 1)" && ok || bad "all_results"
sp=$($PYTHON -c "import json; print([e for e in json.load(open('A/all_results.json')) if e['test_id']=='gpt2_adamw_magnitude_50'][0]['final_sparsity'])")
[ "$sp" = "0.5" ] && ok || bad "magnitude run sparsity $sp"
# Dry run again: the plan is now timed from the results found.
M --dry-run --set MATRIX_RESULTS_DIR="$T" 2>&1 | grep -q "estimated" && ok || bad "no estimate from earlier results"

# --- SIGKILL at random moments, then continue: same results as A
RANDOM=7
kills=0
for attempt in 1 2 3 4 5; do
	if [ -f B/plan.json ]; then where="--continue --dir $T/B"; else where="--out $T/B"; fi
	setsid bash -c "KNLP_PEAK_FLOPS=1e9 '$KNLP' matrix --config m.config --yes $where >>B.log 2>&1" &
	pid=$!
	sleep "$((RANDOM % 20 + 3))e-1"
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL -- "-$pid" 2>/dev/null && kills=$((kills + 1))
	fi
	wait "$pid" 2>/dev/null
done
M --yes --continue --dir "$T/B" >>B.log 2>&1 && ok || { bad "continue after kills"; tail -20 B.log; }
[ $kills -ge 2 ] && ok || bad "only $kills kills landed"
[ "$(strip B)" = "$(strip A)" ] && ok || bad "killed + continued matrix differs from the uninterrupted one"
[ "$($PYTHON -c "import json; print(len(json.load(open('B/all_results.json'))))")" = 4 ] && ok || bad "B: run count"
# Continue on a finished matrix runs nothing.
M --yes --continue --dir "$T/B" 2>&1 | grep -q "4 already complete" && ok || bad "continue of a finished matrix"
# Continue with another configuration is refused, naming the symbol.
expect_fail "different configuration: CONFIG_MAX_ITERS (12 -> 13)" M --yes --continue --dir "$T/B" --set MAX_ITERS=13
# Rerun one optimizer's runs from zero.
M --yes --rerun --dir "$T/B" --optimizer sgd >rerun.log 2>&1 && ok || bad "rerun"
grep -q "2 already complete" rerun.log && ok || bad "rerun kept the other runs: $(head -1 rerun.log)"
[ "$(strip B)" = "$(strip A)" ] && ok || bad "rerun results differ"

# --- shards and merge equal the single matrix
M --yes --shard 1/2 --out "$T/S1" >/dev/null 2>&1 && M --yes --shard 2/2 --out "$T/S2" >/dev/null 2>&1 && ok || bad "shards"
[ "$($PYTHON -c "import json; print(len(json.load(open('S1/plan.json'))['runs']))")" = 2 ] && ok || bad "shard size"
"$KNLP" matrix merge --out "$T/MERGED" "$T/S2" "$T/S1" >/dev/null && ok || bad "merge"
[ "$(strip MERGED)" = "$(strip A)" ] && ok || bad "merged shards differ from the single matrix"
expect_fail "present in two shards" "$KNLP" matrix merge --out "$T/M2" "$T/S1" "$T/S1"

# --- a Slurm job array over 3 shards
(cd "$T" && sh "$TOP/scripts/slurm.sh" m.config 3 "" >/dev/null) && ok || bad "slurm script"
grep -q '^#SBATCH --array=1-3$' knlp-matrix.slurm && grep -q -- '--shard "${SLURM_ARRAY_TASK_ID}/3"' knlp-matrix.slurm \
	&& bash -n knlp-matrix.slurm && ok || bad "slurm script content"
expect_fail "SHARDS must be a positive number" sh "$TOP/scripts/slurm.sh" m.config x ""

# --- seeds, the baseline comparison, parallel runs
M --yes --jobs 2 --out "$T/SEEDS" --set MATRIX_SEEDS=2 --set PRUNING_ENABLE_MAGNITUDE=n \
	--set MATRIX_BASELINE=gpt2_adamw_none >seeds.log 2>&1 && ok || { bad "seeded matrix"; tail seeds.log; }
grep -q "gpt2_sgd_none .* n=2 .*diff [-+][0-9.]* \[[-+][0-9.]*, [-+][0-9.]*\] \(better\|worse\|inconclusive\)" SEEDS/summary_report.txt \
	&& ok || { bad "no Welch interval against the baseline"; cat SEEDS/summary_report.txt; }
grep -q "gpt2_adamw_none .*baseline" SEEDS/summary_report.txt && ok || bad "baseline row"
grep -q '^CONFIG_NUM_THREADS=1$' SEEDS/gpt2_sgd_none_s1337/matrix.config && ok || bad "parallel thread split"
# An external baseline is reused, not re-run.
M --yes --out "$T/EXT" --set MATRIX_SEEDS=2 --set PRUNING_ENABLE_MAGNITUDE=n \
	--set MATRIX_BASELINE="$T/SEEDS/gpt2_adamw_none" >ext.log 2>&1 && ok || { bad "external baseline"; tail ext.log; }
[ ! -d EXT/gpt2_adamw_none_s1337 ] && ok || bad "external baseline runs were re-run"
grep -q "gpt2_sgd_none .*diff" EXT/summary_report.txt && ok || bad "external baseline comparison"

# --- one GPU per parallel run: CUDA_VISIBLE_DEVICES from the runner's own list (this
# machine has no GPU, so each run fails and its error names the device it was given)
CUDA_VISIBLE_DEVICES=3,5 M --yes --jobs 2 --out "$T/GPU" --set DEVICE_CUDA=y >gpu.log 2>&1
[ "$(cat GPU/*/error.txt | grep -o 'CUDA_VISIBLE_DEVICES=[0-9]*' | sort -u | tr '\n' ' ')" = "CUDA_VISIBLE_DEVICES=3 CUDA_VISIBLE_DEVICES=5 " ] \
	&& ok || bad "GPU assignment: $(cat GPU/*/error.txt)"

# --- failures: recorded, the matrix goes on (or stops when asked)
M --yes --out "$T/F" --set DATA_DIR="$T/nowhere" >f.log 2>&1 && bad "failing matrix exited 0" || ok
[ "$(ls F/*/error.txt | wc -l)" -eq 4 ] && ok || bad "not every failure recorded"
grep -q "dataset folder not found" F/gpt2_sgd_none/error.txt && ok || bad "error.txt content: $(cat F/gpt2_sgd_none/error.txt)"
M --yes --out "$T/F1" --set DATA_DIR="$T/nowhere" --stop-on-failure 1 >f1.log 2>&1
[ "$(ls F1/*/error.txt | wc -l)" -eq 1 ] && ok || bad "stop-on-failure ran more than one run"
expect_fail "cannot" M --yes --out /proc/knlp-results
# Disk full while the runner records the second run (its 11th atomic write: config.txt,
# plan.json, two summaries, then per run matrix.config, COMPLETE and two summaries): it
# stops with one line,
# the two finished runs stay complete, and continue finishes the matrix with A's results.
KNLP_FAULT_ENOSPC_AT=11 M --yes --out "$T/FULL" >full.log 2>&1 && bad "disk full went unnoticed" || ok
grep -q "knlp: error: .*all_results.json: cannot flush to disk (No space left on device)" full.log && ok || bad "disk-full message: $(tail -2 full.log)"
[ "$(ls FULL/*/COMPLETE | wc -l)" -eq 2 ] && ok || bad "completed runs lost after disk full"
M --yes --continue --dir "$T/FULL" >/dev/null 2>&1 && [ "$(strip FULL)" = "$(strip A)" ] && ok || bad "continue after disk full"

# --- report: plots and an HTML page that loads in a browser
$PYTHON "$TOP/scripts/matrix_report.py" "$T/SEEDS" >report.log 2>&1 && ok || { bad "report"; cat report.log; }
for g in train_loss eval_loss quality_evolution final_quality training_time memory memory_vs_quality; do
	[ -s "SEEDS/graphs/$g.png" ] && ok || bad "graph $g missing"
done
# Nothing was pruned in SEEDS: no sparsity plots; A pruned: they are drawn.
[ ! -e SEEDS/graphs/quality_vs_sparsity.png ] && ok || bad "a sparsity plot without pruning"
$PYTHON "$TOP/scripts/matrix_report.py" "$T/A" --graphs-only >/dev/null 2>&1 && [ -s A/graphs/quality_vs_sparsity.png ] &&
	[ -s A/graphs/sparsity_progression.png ] && ok || bad "no sparsity plots for a pruned matrix"
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
	bad "chromium is not installed (make deps installs it)"
else
	dom=$(timeout 120 "$browser" --headless --no-sandbox --disable-gpu --dump-dom "file://$T/SEEDS/report.html" 2>chrome.err)
	echo "$dom" | grep -q "<th>configuration</th>" && ok || { bad "report tables not rendered"; tail -5 chrome.err; }
	echo "$dom" | grep -q "gpt2_sgd_none_s1338" && ok || bad "report lacks the runs"
	[ "$(echo "$dom" | grep -o '<img alt=' | wc -l)" -ge 6 ] && ok || bad "report lacks its plots"
	! grep -qi "uncaught\|ERR_FILE_NOT_FOUND" chrome.err && ok || bad "browser errors: $(grep -i 'uncaught\|ERR_FILE' chrome.err | head -3)"
fi
finish

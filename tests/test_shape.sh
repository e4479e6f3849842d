#!/bin/bash
# The shape of the project after the redesign, checked from outside:
# - choices decide what runs: GPT2_SIZE_124M by preset, fragment or --set builds 124.4M
#   parameters; custom-only symbols set under a named size are refused by name;
# - `knlp run` decides between one run, a matrix and a data-parallel launch, and prepares
#   the data; every family writes the one metrics envelope; `knlp matrix summary --latest`;
# - the report scripts' statistics and pruning analysis come from the binary
#   (`knlp stats interval`, `knlp prune analyze`);
# - the tree: almost no string-keyed configuration reads outside the config layer, no
#   duplicated code between the family files.
. "$(dirname "$0")/lib.sh"
export KNLP_PEAK_FLOPS=1e9
cd "$T"
K="$PYTHON $TOP/scripts/kconfig.py"

# --- the size choice decides the shape, however it is chosen
cycle_data d >/dev/null 2>&1
KCONFIG_CONFIG=q.config $K defconfig gpt2-tiny-cpu >/dev/null
params() { "$KNLP" train "$@" --set DEBUG_DRY_RUN=y --set "DATA_DIR=\"$T/d\"" --set GPT2_VOCAB_SIZE=50257 --out dry 2>&1 |
	sed -n 's/.* -> \([0-9]*\) parameters$/\1/p'; }
[ "$(params --config q.config --set GPT2_SIZE_124M=y)" = 124475904 ] && ok || bad "--set GPT2_SIZE_124M=y: $(params --config q.config --set GPT2_SIZE_124M=y)"
printf 'CONFIG_GPT2_SIZE_124M=y\n' >frag
KCONFIG_CONFIG=f.config $K defconfig gpt2-tiny-cpu frag >/dev/null
[ "$(params --config f.config)" = 124475904 ] && ok || bad "fragment: $(params --config f.config)"
"$KNLP" config show --config q.config --set GPT2_SIZE_124M=y | grep -q '^CONFIG_GPT2_N_LAYER=12$' && ok || bad "config show after --set"
"$KNLP" config show --config q.config --set GPT2_SIZE_124M=y --origins | grep -q '^# (derived) CONFIG_GPT2_N_EMBD=768$' && ok ||
	bad "config show --origins: derived values not marked"
expect_fail "CONFIG_GPT2_N_LAYER=6 cannot be set: it applies only with CONFIG_GPT2_SIZE_CUSTOM=y" \
	"$KNLP" config show --config q.config --set GPT2_N_LAYER=6
"$KNLP" config show --config q.config --set GPT2_HYBRID_LAYERS=3 2>&1 >/dev/null |
	grep -q "warning: --set CONFIG_GPT2_HYBRID_LAYERS has no effect: it applies only with '(GPT2_ATTN_HYBRID && MODEL_GPT2)'" &&
	ok || bad "no warning for an override outside its menu"
"$KNLP" config show --config q.config --set GPT2_ATTN_HYBRID=y --set GPT2_HYBRID_LAYERS=3 2>&1 >/dev/null | grep -q "no effect" &&
	bad "warned about an override its menu opens" || ok
printf 'CONFIG_GPT2_SIZE_TINY=y\nCONFIG_GPT2_N_EMBD=256\n' >half.config
expect_fail "half.config: CONFIG_GPT2_N_EMBD=256 cannot be set" "$KNLP" config show --config half.config
[ "$(params --config q.config --set GPT2_SIZE_CUSTOM=y --set GPT2_N_LAYER=2 --set GPT2_N_HEAD=2 --set GPT2_N_EMBD=64)" -lt 4000000 ] &&
	ok || bad "custom shape"

# --- knlp run: one run (with its data prepared), the envelope, a matrix, a launch
printf 'CONFIG_DEVICE_CPU=y\nCONFIG_DATA_DIR="%s/run-data"\nCONFIG_GPT2_SIZE_CUSTOM=y\nCONFIG_GPT2_N_LAYER=1\nCONFIG_GPT2_N_HEAD=2\nCONFIG_GPT2_N_EMBD=32\nCONFIG_GPT2_BLOCK_SIZE=16\nCONFIG_BATCH_SIZE=2\nCONFIG_MAX_ITERS=6\nCONFIG_EVAL_INTERVAL=3\nCONFIG_EVAL_SAMPLES=1\nCONFIG_LOG_INTERVAL=1\n# CONFIG_SAMPLE_AT_EVAL is not set\nCONFIG_OUTPUT_DIR="%s/runs"\nCONFIG_RUN_NAME="one"\nCONFIG_MATRIX_RESULTS_DIR="%s/results"\n' "$T" "$T" "$T" >r.config
"$KNLP" prepare --corpus corpus.txt --out run-data >/dev/null 2>&1 || bad "prepare"
"$KNLP" run --config r.config >run.log 2>&1 && grep -q "prepare: $T/run-data is already prepared" run.log && ok ||
	bad "knlp run (one run): $(tail -3 run.log)"
$PYTHON - runs/one <<'PY' && ok || bad "the metrics envelope: $(head -c 600 runs/one/training_metrics.json)"
import json, sys
m = json.load(open(sys.argv[1] + "/training_metrics.json"))
assert m["schema"] == "knlp.training_metrics/2" and m["family"] == "gpt2" and m["status"] == "complete", m
rec = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
assert m["progress"] == {"step": 6, "total_steps": 6, "train_loss": rec[-2]["loss"]}, (m["progress"], rec[-2:])
assert m["project"] == "knlp" and json.load(open(sys.argv[1] + "/run.json"))[-1]["project"] == "knlp"
q = m["quality"]
assert q["metric"] == "loss" and q["split"] == "val" and q["higher_is_better"] is False and q["value"] > 0, q
assert [h["step"] for h in m["history"]] == [0, 3, 6] and all("eval_loss" in h and "lr" in h for h in m["history"])
assert m["throughput"]["unit"] == "tokens/s" and m["parameters"] > 0 and m["optimizer"] == "adamw"
assert m["metrics"]["val_losses"] == [h["val_loss"] for h in m["history"]]  # the original's names
assert [r["step"] for r in rec if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]
PY
"$KNLP" run --config r.config --set MATRIX_SEEDS=2 --set RUN_NAME="" --yes >m.log 2>&1 && grep -q "test matrix: 2 runs" m.log && ok ||
	bad "knlp run (matrix): $(tail -3 m.log)"
"$KNLP" matrix summary --latest --in results >sum.log 2>&1 && grep -q "runs planned 2, complete 2" sum.log && ok ||
	bad "matrix summary --latest: $(tail -3 sum.log)"
expect_fail "results-none: no test_matrix_results_* folder" "$KNLP" matrix summary --latest --in results-none
"$KNLP" run --config r.config --set DDP=y --set RUN_NAME="\"two\"" --nproc 2 >ddp.log 2>&1 &&
	grep -q "data parallel: 2 processes" ddp.log && grep -q '"world_size": 2' runs/two/training_metrics.json && ok ||
	bad "knlp run (data parallel): $(tail -3 ddp.log)"

# --- statistics and pruning analyses from the binary
out=$("$KNLP" stats interval --a 1,2,3,4 --b 0,1,2,3.5 --paired)
$PYTHON -c "
import json, sys
j = json.loads(sys.argv[1])
# differences 1, 1, 1, 0.5: mean 0.875, sd 0.25, t(0.975, 3) = 3.1824463
h = 3.1824463 * 0.25 / 2
assert abs(j['diff'] - 0.875) < 1e-12 and abs(j['lo'] - (0.875 - h)) < 1e-6 and abs(j['hi'] - (0.875 + h)) < 1e-6, j
assert j['verdict'] == 'above' and abs(j['sd_diff'] - 0.25) < 1e-12" "$out" && ok || bad "stats interval --paired: $out"
expect_fail "paired interval: 2 values against 3" "$KNLP" stats interval --a 1,2 --b 1,2,3 --paired
expect_fail "stats: --a 'x' is not a finite number" "$KNLP" stats interval --a 1,x --b 1,2
out=$("$KNLP" prune analyze --checkpoint runs/one --which final)
$PYTHON -c "
import json, sys
j = json.loads(sys.argv[1])
assert j['weights'] > 1000 and 0 <= j['v_below_1e-5'] <= 1 and -1 <= j['spearman_bitter7_vs_absw'] <= 1, j
assert j['spearman_bitter7_vs_absw'] > 0.5  # bitter7 = |w| (|v| + eps)^0.25 still ranks largely by |w|" "$out" && ok ||
	bad "prune analyze: $out"

# --- the tree
# String-keyed configuration reads outside the config layer (core/config.cpp,
# core/settings.cpp) and the config layer's own tests: none.
n=$(grep -rnE '\.(get_bool|get_int|get_float|get_string|selected|raw)\("' "$TOP"/core "$TOP"/data "$TOP"/models "$TOP"/optim \
	"$TOP"/prune "$TOP"/train "$TOP"/fim "$TOP"/quant "$TOP"/tier "$TOP"/gnn "$TOP"/matrix "$TOP"/tools "$TOP"/bench \
	--include='*.cpp' --include='*.h' | grep -v "core/config.cpp\|core/settings.cpp" | wc -l)
[ "$n" -eq 0 ] && ok || bad "$n string-keyed configuration reads outside the config layer"
# No block of 6 or more identical lines (whitespace aside, braces and blanks not counted)
# shared by two model-family files.
$PYTHON - "$TOP" <<'PY' && ok || bad "duplicated code between family files"
import sys
top = sys.argv[1]
files = ["train/gpt2_family.cpp", "train/image_family.cpp", "gnn/gnn_family.cpp"]
def windows(path):
    lines = [l.strip() for l in open(f"{top}/{path}")]
    lines = [l for l in lines if l and l not in ("{", "}", "};") and not l.startswith("//")]
    return {tuple(lines[i:i + 6]): i for i in range(len(lines) - 5)}
w = {f: windows(f) for f in files}
dup = [(a, b, k) for i, a in enumerate(files) for b in files[i + 1:] for k in w[a] if k in w[b]]
for a, b, k in dup[:3]:
    print(f"{a} and {b} share:", *k, sep="\n  ")
sys.exit(1 if dup else 0)
PY
finish

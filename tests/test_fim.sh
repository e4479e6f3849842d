#!/bin/bash
# Fisher and tiering from the command line: fim score (JSON, seeds, file), fim compare,
# the data-driven quantization plans, tier plan and bench, the end-of-training hooks of
# CONFIG_FIM_* / CONFIG_TIER_*, and bad input.
. "$(dirname "$0")/lib.sh"
cd "$T"

cycle_data data || { bad "prepare"; finish; exit 1; }
cat >a.config <<EOC
CONFIG_DEVICE_CPU=y
CONFIG_DATA_DIR="$T/data"
CONFIG_GPT2_SIZE_CUSTOM=y
CONFIG_GPT2_N_LAYER=3
CONFIG_GPT2_N_HEAD=2
CONFIG_GPT2_N_EMBD=64
CONFIG_GPT2_BLOCK_SIZE=32
CONFIG_GPT2_DROPOUT="0.0"
CONFIG_BATCH_SIZE=8
CONFIG_MAX_ITERS=20
CONFIG_WARMUP_ITERS=5
CONFIG_LEARNING_RATE="3e-3"
CONFIG_EVAL_INTERVAL=10
CONFIG_EVAL_SAMPLES=2
# CONFIG_SAMPLE_AT_EVAL is not set
# CONFIG_FIM_ATTENTION_AT_EVAL is not set
EOC
# The end-of-training hooks: Fisher, comparison, tier bench (both modes), GGUF by the fim plan.
"$KNLP" train --config a.config --out run --set FIM_SCORE=y --set FIM_COMPARE=y --set FIM_CHUNKS=8 \
	--set TIER_BENCH=y --set TIER_MODE_BOTH=y --set TIER_ITERS=5 --set TIER_WARMUP=1 --set TIER_CONTEXT=32 \
	--set QUANT_GGUF=y --set QUANT_PCT=50 --set QUANT_PLAN_FIM=y >train.log 2>&1 || bad "train with hooks: $(tail -3 train.log)"
$PYTHON - run <<'PY' && ok || bad "end-of-training Fisher, comparison, tier and plan files"
import json, sys
r = sys.argv[1]
f = json.load(open(r + "/fim/fim.json"))
assert f["chunks"] == 8 and f["seq"] == 32 and f["kinds"] == ["empirical", "true"], f["chunks"]
assert len(f["tensors"]) == 4 + 3 * 12, len(f["tensors"])  # wte wpe ln_f.{w,b} + 12 per block
c = json.load(open(r + "/fim/compare.json"))
for k in ("empirical", "true"):
    g = c["fisher"][k]["global"]["raw"]
    assert -1 <= g["spearman"] <= 1 and 0 <= g["top10%"] <= 1, g
t = json.load(open(r + "/tier.json"))
modes = [m["mode"] for m in t["modes"]]
assert modes == ["untiered", "emulated", "offload"], modes
assert t["modes"][2]["max_abs_logit_diff"] == 0.0
assert t["plan"]["tiers"]["slow"]["modules"] > 0
p = json.load(open(r + "/model.gguf.plan.json"))
assert p["plan"] == "fim" and p["score_source"]["fisher"] == "computed" and len(p["upgraded"]) == 1, p["upgraded"]  # floor(3 x 0.5)
PY
grep -q "Adam's v vs the empirical Fisher: Spearman" train.log && ok || bad "compare summary printed"

# fim score: same seed, same bytes; another seed, another true Fisher.
"$KNLP" fim score --checkpoint run --chunks 8 --seed 1 --out s1 >/dev/null 2>&1 || bad "fim score"
"$KNLP" fim score --checkpoint run --chunks 8 --seed 1 --out s1b >/dev/null 2>&1
"$KNLP" fim score --checkpoint run --chunks 8 --seed 2 --out s2 >/dev/null 2>&1
cmp -s s1/fisher.safetensors s1b/fisher.safetensors && ok || bad "fim score is not deterministic"
cmp -s s1/fisher.safetensors s2/fisher.safetensors && bad "the seed does not change the true Fisher" || ok
out=$("$KNLP" fim score --checkpoint run --chunks 8 --kind empirical --out s3 2>/dev/null)
echo "$out" | grep -Eq '^h\.2\.mlp\.c_proj\.weight +ffn_down +2 +16384 ' && ok || bad "score table row: $out"
echo "$out" | grep -q "per role" && ok || bad "score table role summary"

# fim compare from the file equals the one that computes the Fisher itself.
"$KNLP" fim compare --checkpoint run --fisher s1/fisher.safetensors --out c1.json >/dev/null 2>&1 || bad "compare --fisher"
"$KNLP" fim compare --checkpoint run --chunks 8 --seed 1 --out c2.json >/dev/null 2>&1 || bad "compare"
$PYTHON - c1.json c2.json <<'PY' && ok || bad "compare from file != computed"
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
assert a["fisher"] == b["fisher"]
PY

# Data-driven plans write their scores and where they came from.
for p in fim fim-error imatrix; do
	"$KNLP" quantize --checkpoint run --base q8_0 --upgrade f16 --pct 50 --plan $p --calib-windows 8 --out q_$p >/dev/null 2>&1 \
		|| { bad "quantize --plan $p"; continue; }
	$PYTHON - q_$p/model.gguf.plan.json $p <<'PY' && ok || bad "plan $p scores"
import json, sys
p = json.load(open(sys.argv[1]))
assert p["plan"] == sys.argv[2] and p["score_source"] is not None
down = [t for t in p["tensors"] if t["role"] == "ffn_down"]
assert len(down) == 3 and all(t["score"] > 0 for t in down), down
assert sum(t["upgraded"] for t in down) == 1
PY
done
"$KNLP" quantize --checkpoint run --base q8_0 --pct 50 --plan fim --fisher s1/fisher.safetensors --out q_file >/dev/null 2>&1 \
	&& grep -q '"fisher": ".*s1/fisher.safetensors"' q_file/model.gguf.plan.json && ok || bad "quantize --fisher FILE"

# tier plan: the cut semantics; 0.3,0.5 over 21 modules gives floor(6.3) = 6, up to floor(10.5) = 10, 11.
out=$("$KNLP" tier plan --checkpoint run --out tp.json 2>&1)
echo "$out" | grep -q "fast = the first 30% of the modules (rounded down), middle = up to 50%, slow = the rest (30/20/50)" && ok || bad "tier semantics: $out"
$PYTHON - tp.json <<'PY' && ok || bad "tier plan counts"
import json, sys
t = json.load(open(sys.argv[1]))["tiers"]
assert (t["fast"]["modules"], t["middle"]["modules"], t["slow"]["modules"]) == (6, 4, 11), t
PY
"$KNLP" tier bench --checkpoint run --source fim --chunks 8 --cuts 0,0 --iters 3 --warmup 1 --context 16 \
	--modes untiered,offload --store st --out tb.json >/dev/null 2>&1 || bad "tier bench"
$PYTHON - tb.json <<'PY' && ok || bad "tier bench everything slow"
import json, sys
j = json.load(open(sys.argv[1]))
off = j["modes"][1]
assert off["max_abs_logit_diff"] == 0.0 and off["bytes_read_per_forward"] == off["slow_tier_bytes"] > 0, off
PY
[ -s st/slow_tier.bin ] && ok || bad "slow tier file"

# Bad input.
cp -r run/checkpoints/$(cat run/checkpoints/LATEST) noopt
rm noopt/optimizer.safetensors
expect_fail "no optimizer state in this checkpoint" "$KNLP" fim compare --checkpoint noopt --chunks 2
expect_fail "use --source fim" "$KNLP" tier plan --checkpoint noopt
"$KNLP" tier plan --checkpoint noopt --source fim --chunks 4 >/dev/null 2>&1 && ok || bad "tier plan --source fim without optimizer state"
expect_fail "val.bin: " "$KNLP" fim score --checkpoint run --chunks 100000 --out x
expect_fail "exceeds the model's context" "$KNLP" fim score --checkpoint run --seq 64 --out x
expect_fail "--topk takes fractions" "$KNLP" fim compare --checkpoint run --topk 0.1,2
expect_fail "not two fractions" "$KNLP" tier plan --checkpoint run --cuts 0.6,0.2
expect_fail "unknown mode 'fast'" "$KNLP" tier bench --checkpoint run --modes untiered,fast --iters 1
expect_fail "unknown plan 'fisher'" "$KNLP" quantize --checkpoint run --plan fisher --out x
expect_fail "not a Fisher file" "$KNLP" fim compare --checkpoint run --fisher run/checkpoints/$(cat run/checkpoints/LATEST)/model.safetensors
# Refused before step 0, nothing written.
expect_fail "CONFIG_TIER_SOURCE_ADAM=y: the sgd optimizer keeps no second moment" "$KNLP" train --config a.config \
	--set OPTIMIZER_SGD=y --set TIER_BENCH=y --out sgdrun
[ ! -e sgdrun/checkpoints ] && ok || bad "refused run left checkpoints"
expect_fail "CONFIG_TIER_CUTS" "$KNLP" train --config a.config --set TIER_BENCH=y --set TIER_CUTS=half --out badcuts
expect_fail "CONFIG_FIM_SEQ=64 exceeds" "$KNLP" train --config a.config --set FIM_SCORE=y --set FIM_SEQ=64 --out badseq
finish

#!/bin/bash
# knlp train continuing from an imported Hugging Face model (CONFIG_MODEL_HF): a random
# Qwen2-shaped bf16 folder (tied, GPT-2's tokenizer) fine-tuned on Linux documentation, and
# a GPT2LMHeadModel one.
# The training loss and the estimated validation loss go down; RUN/hf is a Hugging Face
# folder of the fine-tuned weights whose `knlp eval` on the whole validation split beats the
# original's and matches an eager PyTorch forward of it; a run killed after step 12 and
# resumed ends with byte-identical weights; bad settings get one-line errors.
. "$(dirname "$0")/lib.sh"
TOK="$TOP/datasets/tokenizers/gpt2"
if [ ! -s "$TOK/tokenizer.json" ]; then
	bad "$TOK/tokenizer.json missing (make deps)"
	finish
	exit 1
fi
cd "$T"
mkdir -p corpus
for f in admin-guide/README process/submitting-patches process/coding-style; do
	zcat "/usr/share/doc/linux-doc-6.1/Documentation/$f.rst.gz" >"corpus/$(basename $f).txt"
done
"$KNLP" prepare --corpus corpus --tokenizer "$TOK" --out data >/dev/null 2>&1 || bad "prepare"
$PYTHON "$TOP/scripts/ref/hf_random_model.py" m --arch qwen2 --dtype bf16 --tokenizer "$TOK" --layers 2 --hidden 64 \
	--heads 4 --kv-heads 2 --inter 128 --ctx 128 --tied --mild >/dev/null || bad "writing the model"
orig=$(sha256sum <m/model.safetensors)
printf 'CONFIG_MODEL_HF=y\n' >ft.config
common="--set MODEL_HF_DIR=\"$T/m\" --set MODEL_HF_CONTEXT=32 --set DATA_DIR=\"$T/data\" --set BATCH_SIZE=4
	--set MAX_ITERS=20 --set WARMUP_ITERS=2 --set LEARNING_RATE=3e-3 --set MIN_LR=3e-4 --set EVAL_INTERVAL=10
	--set EVAL_SAMPLES=4 --set CHECKPOINT_INTERVAL=10 --set NUM_THREADS=2 --set SEED=3"
ft() { KNLP_PEAK_FLOPS=1e9 "$KNLP" train --config ft.config $common "$@"; }
ft --out a >a.log 2>&1 || bad "fine-tune: $(tail -3 a.log)"
# This family has no bf16 path: a bf16 choice is a notice, and run.json says fp32 and why.
KNLP_CPU_PRECISION=bf16-force ft --set MAX_ITERS=1 --set EVAL_INTERVAL=1 --out p16 >p16.log 2>&1 || bad "bf16 asked: $(tail -3 p16.log)"
grep -q "notice: bf16 was chosen (KNLP_CPU_PRECISION=bf16-force.*), but the hf family has no bf16 path; training in fp32" p16.log &&
	$PYTHON -c "import json; r = json.load(open('p16/run.json'))[-1]; assert r['precision'] == 'fp32' and 'fp32: the hf family' in r['precision_reason'], r" &&
	ok || bad "bf16 on the hf family: $(grep notice p16.log)"
$PYTHON - <<'PY' && ok || bad "losses did not go down: $(grep -h '"eval"' a/metrics.jsonl | head -3)"
import json
rec = [json.loads(l) for l in open("a/metrics.jsonl")]
ev = [r for r in rec if r.get("type") == "eval"]
assert [r["step"] for r in ev] == [0, 10, 20], [r["step"] for r in ev]
assert ev[-1]["val_loss"] < ev[0]["val_loss"] - 0.5, (ev[0]["val_loss"], ev[-1]["val_loss"])
assert ev[-1]["train_loss"] < ev[0]["train_loss"] - 0.5, (ev[0]["train_loss"], ev[-1]["train_loss"])
run = json.load(open("a/run.json"))[0]
assert run.get("hf_model", "").endswith("/m"), run
PY
grep -q "Qwen2ForCausalLM from $T/m: 2 layers x 64 hidden, 4 heads (2 kv)" a.log && ok || bad "no description: $(head -5 a.log)"
# The exported folder: every HF_DIR command reads it; on the whole validation split it
# scores better than the original, and equals the eager reference.
"$KNLP" eval --checkpoint m --data data --ctx 32 >e0.log 2>/dev/null || bad "eval original"
"$KNLP" eval --checkpoint a/hf --data data --ctx 32 >e1.log 2>/dev/null || bad "eval fine-tuned: $(ls a/hf)"
$PYTHON "$TOP/scripts/ref/llama_eager.py" a/hf data/val.bin 32 2 >r1.log || bad "eager reference"
$PYTHON - <<'PY' && ok || bad "fine-tuned eval: before $(tail -1 e0.log) after $(tail -1 e1.log) eager $(cat r1.log)"
import json
last = lambda f: json.loads(open(f).read().strip().splitlines()[-1])
b, a, r = last("e0.log"), last("e1.log"), last("r1.log")
assert a["val_loss"] < b["val_loss"] - 0.5, (b["val_loss"], a["val_loss"])
assert abs(a["val_loss"] - r["val_loss"]) <= 1e-5 * r["val_loss"], (a["val_loss"], r["val_loss"])
PY
cmp -s m/tokenizer.json a/hf/tokenizer.json && grep -q '"torch_dtype": "float32"' a/hf/config.json && ok ||
	bad "the fine-tuned folder lacks the tokenizer or the float32 config"
"$KNLP" export --checkpoint a/hf --format gguf --type q8_0 --out a.gguf >/dev/null 2>&1 && ok || bad "export fine-tuned"
[ "$(sha256sum <m/model.safetensors)" = "$orig" ] && ok || bad "fine-tuning changed the original folder"
# Killed after step 12, resumed from the checkpoint at 10: the same weights to the byte.
KNLP_FAULT_KILL_AT=after_step#12 ft --out b >b.log 2>&1
[ $? -eq 137 ] && ok || bad "the fault kill did not happen: $(tail -2 b.log)"
KNLP_PEAK_FLOPS=1e9 "$KNLP" train --resume b >br.log 2>&1 || bad "resume: $(tail -3 br.log)"
grep -q "at step 10" br.log && cmp -s a/hf/model.safetensors b/hf/model.safetensors && ok ||
	bad "resumed run differs from the uninterrupted one: $(grep -i resum br.log | head -2)"
# A GPT2LMHeadModel folder fine-tunes through knlp's GPT-2 and comes out in GPT-2's layout.
$PYTHON "$TOP/scripts/ref/hf_random_model.py" g --arch gpt2 --dtype bf16 --tokenizer "$TOK" --hidden 64 --heads 4 \
	--ctx 64 >/dev/null || bad "writing the GPT-2 folder"
KNLP_PEAK_FLOPS=1e9 "$KNLP" train --config ft.config $common --set MODEL_HF_DIR="\"$T/g\"" --out gr >gr.log 2>&1 ||
	bad "fine-tune GPT-2: $(tail -3 gr.log)"
"$KNLP" eval --checkpoint g --data data --ctx 32 >g0.log 2>/dev/null || bad "eval GPT-2 original"
"$KNLP" eval --checkpoint gr/hf --data data --ctx 32 >g1.log 2>/dev/null || bad "eval GPT-2 fine-tuned: $(ls gr/hf)"
$PYTHON "$TOP/scripts/ref/llama_eager.py" gr/hf data/val.bin 32 2 >gref.log || bad "eager reference GPT-2"
$PYTHON - <<'PY' && ok || bad "GPT-2 fine-tuned: before $(tail -1 g0.log) after $(tail -1 g1.log) eager $(cat gref.log)"
import json
last = lambda f: json.loads(open(f).read().strip().splitlines()[-1])
b, a, r = last("g0.log"), last("g1.log"), last("gref.log")
assert a["val_loss"] < b["val_loss"] - 0.5, (b["val_loss"], a["val_loss"])
assert abs(a["val_loss"] - r["val_loss"]) <= 1e-4 * r["val_loss"], (a["val_loss"], r["val_loss"])
PY
# Bad settings.
printf 'CONFIG_MODEL_HF=y\n' >bad.config
expect_fail "CONFIG_MODEL_HF_DIR is empty" "$KNLP" train --config bad.config --set DATA_DIR="\"$T/data\"" --out x1
expect_fail "CONFIG_MODEL_HF_DIR: $T/data: not a Hugging Face model folder" \
	"$KNLP" train --config bad.config --set MODEL_HF_DIR="\"$T/data\"" --set DATA_DIR="\"$T/data\"" --out x2
expect_fail "CONFIG_MODEL_HF_CONTEXT=4096 exceeds $T/m's max_position_embeddings (128)" \
	"$KNLP" train --config bad.config --set MODEL_HF_DIR="\"$T/m\"" --set MODEL_HF_CONTEXT=4096 --out x3
expect_fail "$T/nodata: token folder not found" \
	"$KNLP" train --config bad.config --set MODEL_HF_DIR="\"$T/m\"" --set MODEL_HF_CONTEXT=32 --set DATA_DIR="\"$T/nodata\"" --out x4
finish

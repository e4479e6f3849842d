#!/bin/bash
# knlp's GGUF evaluation against llama.cpp itself (node-llama-cpp's prebuilt CPU binaries,
# datasets/llama via scripts/deps.sh). A one-layer GPT-2 BPE model trained on a repetitive
# corpus (so its predictions are peaked, not uniform) is exported as f32, q8_0 and q4_k; for
# each file llama.cpp's mean next-token loss over knlp's evaluation windows must equal
# `knlp eval --gguf` (1e-4 nats for f32, 1e-3 quantized). Catches a softmax over the padded
# vocabulary rows (50304 instead of the file's 50257 tokens) and a GELU other than the
# gpt2 architecture's tanh approximation.
. "$(dirname "$0")/lib.sh"
MOD=$TOP/datasets/llama/node_modules
if [ ! -s "$MOD/node-llama-cpp/package.json" ] || [ ! -s "$MOD/@node-llama-cpp/linux-x64/package.json" ]; then
	bad "$MOD: node-llama-cpp missing (scripts/deps.sh fetches it; x86-64 only)"
	finish
	exit 1
fi
cd "$T"
$PYTHON - <<'PY'
import random
r = random.Random(5)
words = ("the driver maps a page and the module frees its buffer while this patch locks memory "
         "so the scheduler wakes one task per queue").split()
open("corpus.txt", "w").write(" ".join(r.choice(words[i % 7::7]) for i in range(30000)))
PY
"$KNLP" prepare --corpus corpus.txt --tokenizer gpt2 --out tok >prep.log 2>&1 || bad "prepare: $(tail -2 prep.log)"
# llama.cpp's probabilities are read position by position in JavaScript (50257 per
# position), so the evaluated file is short: 4 windows of 32 and a tail window.
mkdir -p small && cp tok/meta.json tok/train.bin small/ && head -c 280 tok/val.bin >small/val.bin
printf 'CONFIG_DEVICE_CPU=y\n' >g.config
KNLP_PEAK_FLOPS=1e9 "$KNLP" train --config g.config --set GPT2_SIZE_CUSTOM=y --set GPT2_N_LAYER=1 --set GPT2_N_HEAD=4 \
	--set GPT2_N_EMBD=256 --set GPT2_BLOCK_SIZE=32 --set BATCH_SIZE=8 --set MAX_ITERS=60 --set WARMUP_ITERS=5 \
	--set LEARNING_RATE=0.003 --set EVAL_INTERVAL=1000 --set EVAL_SAMPLES=1 --set SAMPLE_AT_EVAL=n --set NUM_THREADS=2 \
	--set FIM_ATTENTION_AT_EVAL=n --set DATA_DIR="\"$T/tok\"" --out run >train.log 2>&1 || bad "train: $(tail -3 train.log)"
for t in f32 q8_0 q4_k; do
	"$KNLP" export --checkpoint run --format gguf --type $t --out m_$t.gguf >x.log 2>&1 || { bad "export $t: $(cat x.log)"; continue; }
	"$KNLP" eval --gguf m_$t.gguf --data small >k_$t.log 2>/dev/null || { bad "knlp eval $t: $(cat k_$t.log)"; continue; }
	$PYTHON "$TOP/scripts/ref/llama_eval.py" "$MOD/@node-llama-cpp/linux-x64/bins/linux-x64" m_$t.gguf small/val.bin 32 \
		>l_$t.log 2>&1 || { bad "llama.cpp $t: $(tail -3 l_$t.log)"; continue; }
	$PYTHON - $t <<'PY' && ok || bad "$t: knlp $(tail -1 k_$t.log) vs llama.cpp $(tail -1 l_$t.log)"
import json, sys
t = sys.argv[1]
k = json.loads(open(f"k_{t}.log").read().strip().splitlines()[-1])
l = json.loads(open(f"l_{t}.log").read().strip().splitlines()[-1])
tol = 1e-4 if t == "f32" else 1e-3
assert k["tokens"] == l["tokens"] == 139, (k["tokens"], l["tokens"])
assert abs(k["val_loss"] - l["val_loss"]) < tol, (k["val_loss"], l["val_loss"])
# The model learned something: the check is not on near-uniform predictions.
assert l["val_loss"] < 6, l["val_loss"]
print(t, k["val_loss"], l["val_loss"], abs(k["val_loss"] - l["val_loss"]))
PY
done
# The checkpoint's own model (erf GELU, nanoGPT's) differs from the gpt2 file's only by the
# GELU approximation: close, and not identical.
"$KNLP" eval --checkpoint run --data small >c.log 2>/dev/null || bad "eval checkpoint: $(cat c.log)"
$PYTHON - <<'PY' && ok || bad "checkpoint vs f32 gguf: $(tail -1 c.log) $(tail -1 k_f32.log)"
import json
c, g = (json.loads(open(f).read().strip().splitlines()[-1]) for f in ("c.log", "k_f32.log"))
assert 0 < abs(c["val_loss"] - g["val_loss"]) < 2e-3, (c["val_loss"], g["val_loss"])
PY
finish

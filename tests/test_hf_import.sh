#!/bin/bash
# Hugging Face model folders: random Qwen2-, Llama- and GPT-2-shaped models written in
# Hugging Face's layout by scripts/ref/hf_random_model.py (fp32, bf16, fp16; sharded; tied
# and untied; GQA; linear and llama3 rope scaling). knlp's eval equals the eager PyTorch
# reference scripts/ref/llama_eager.py (written from the architectures' definitions, not from
# knlp's code); sampling runs on the KV cache; bad folders get one-line errors.
. "$(dirname "$0")/lib.sh"
TOKZ="$TOP/datasets/tokenizers"
RAND="$PYTHON $TOP/scripts/ref/hf_random_model.py"
REF="$PYTHON $TOP/scripts/ref/llama_eager.py"
[ -s "$TOKZ/qwen3/tokenizer.json" ] || { echo "FAIL: $TOKZ/qwen3/tokenizer.json missing (make deps)"; exit 1; }
mkdir -p "$T/corpus"
for f in admin-guide/README.rst process/coding-style.rst; do
	zcat "/usr/share/doc/linux-doc-6.1/Documentation/$f.gz" >"$T/corpus/$(basename "$f").txt"
done
"$KNLP" prepare --corpus "$T/corpus" --tokenizer "$TOKZ/qwen3" --out "$T/qdata" >/dev/null 2>&1 || bad "prepare qwen3"
"$KNLP" prepare --corpus "$T/corpus" --tokenizer "$TOKZ/gpt2" --out "$T/gdata" >/dev/null 2>&1 || bad "prepare gpt2"

close() { # close NAME KNLP_JSON REF_JSON TOL
	$PYTHON - "$2" "$3" "$4" <<'PY' && ok || bad "$1: knlp $(tail -1 "$2" | cut -c1-300) vs reference $(cat "$3")"
import json, sys
k = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
r = json.load(open(sys.argv[2]))
assert k["tokens"] == r["tokens"], (k["tokens"], r["tokens"])
assert abs(k["val_loss"] - r["val_loss"]) <= float(sys.argv[3]) * abs(r["val_loss"]), (k["val_loss"], r["val_loss"])
PY
}
n=0
while read -r name arch dtype extra; do
	n=$((n + 1))
	$RAND "$T/$name" --arch "$arch" --dtype "$dtype" --tokenizer "$TOKZ/qwen3" --seed $n $extra >/dev/null ||
		{ bad "writing $name"; continue; }
	"$KNLP" eval --checkpoint "$T/$name" --data "$T/qdata" --ctx 96 --batch 4 --logits "$T/$name.kl" >"$T/$name.k" \
		2>"$T/$name.err" || { bad "eval $name: $(tail -1 "$T/$name.err")"; continue; }
	$REF "$T/$name" "$T/qdata/val.bin" 96 4 --logits "$T/$name.rl" >"$T/$name.r" || { bad "reference $name"; continue; }
	close "$name" "$T/$name.k" "$T/$name.r" 1e-5
	# The first window's logits themselves, every position and vocabulary entry.
	$PYTHON - "$T/$name.kl" "$T/$name.rl" <<'PY' && ok || bad "$name: logits differ from the reference"
import sys
import numpy as np
k, r = (np.fromfile(f, np.float32) for f in sys.argv[1:3])
assert k.size == r.size and k.size % 96 == 0, (k.size, r.size)
d = np.abs(k - r).max()
assert d <= 1e-4 * np.abs(r).max(), (d, np.abs(r).max())
PY
done <<'EOF2'
qwen2-f32 qwen2 f32
qwen2-bf16-tied-sharded qwen2 bf16 --tied --shards 3
llama-bf16-gqa-llama3 llama bf16 --kv-heads 1 --rope-scaling llama3
llama-f16-mha-linear llama f16 --kv-heads 4 --rope-scaling linear
EOF2
grep -q '"dtype": "BF16"' "$T/qwen2-bf16-tied-sharded.k" && ok || bad "bf16 folder not reported as BF16"
# GPT2LMHeadModel goes through knlp's GPT-2 (bf16 widened to float32).
$RAND "$T/gpt2" --arch gpt2 --dtype bf16 --tokenizer "$TOKZ/gpt2" --ctx 64 >/dev/null || bad "writing gpt2"
"$KNLP" eval --checkpoint "$T/gpt2" --data "$T/gdata" >"$T/gpt2.k" 2>"$T/gpt2.err" || bad "eval gpt2: $(tail -1 "$T/gpt2.err")"
$REF "$T/gpt2" "$T/gdata/val.bin" 64 2 >"$T/gpt2.r" || bad "reference gpt2"
close gpt2 "$T/gpt2.k" "$T/gpt2.r" 1e-4

# The empirical Fisher diagonal (knlp's gradient taps on the bf16 weights) against plain
# autograd in the eager reference on float32 copies: every tensor's mean within 1e-4.
for name in qwen2-bf16-tied-sharded llama-bf16-gqa-llama3; do
	"$KNLP" fim score --checkpoint "$T/$name" --data "$T/qdata" --split train --kind empirical --chunks 3 --seq 48 \
		--out "$T/$name.fim" >"$T/$name.fim.log" 2>&1 || { bad "fim score $name: $(tail -2 "$T/$name.fim.log")"; continue; }
	$REF "$T/$name" "$T/qdata/train.bin" 48 4 --fisher 3 >"$T/$name.fr" || { bad "reference Fisher $name"; continue; }
	$PYTHON - "$T/$name.fim/fim.json" "$T/$name.fr" <<'PY' && ok || bad "$name: knlp's Fisher differs from autograd's"
import json, sys
f, e = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
mine = {t["name"]: t["empirical"]["mean"] for t in f["tensors"]}
assert sorted(mine) == sorted(e["means"]), sorted(set(mine) ^ set(e["means"]))
worst = max(abs(mine[k] - v) / abs(v) for k, v in e["means"].items())
assert worst < 1e-4 and abs(f["mean_loss"] - e["mean_loss"]) < 1e-5 * e["mean_loss"], (worst, f["mean_loss"], e["mean_loss"])
PY
done

# Sampling: the folder's tokenizer, the KV cache of the kv heads only, seeded.
s1=$("$KNLP" sample --checkpoint "$T/llama-bf16-gqa-llama3" --prompt "The kernel" --tokens 12 --seed 5 2>"$T/s.err")
s2=$("$KNLP" sample --checkpoint "$T/llama-bf16-gqa-llama3" --prompt "The kernel" --tokens 12 --seed 5 2>/dev/null)
[ -n "$s1" ] && [ "$s1" = "$s2" ] && ok || bad "sampling is not reproducible: '$s1' vs '$s2'"
case "$s1" in "The kernel"?*) ok ;; *) bad "sample does not continue the prompt: $s1" ;; esac
grep -q "KV cache measured .* bytes, analytic" "$T/s.err" && ! grep -q MISMATCH "$T/s.err" && ok ||
	bad "sample cache report: $(cat "$T/s.err")"
"$KNLP" sample --checkpoint "$T/gpt2" --prompt "The kernel" --tokens 4 >/dev/null 2>&1 && ok || bad "gpt2 sample"

# Bad folders: one line naming the file and the problem.
expect_fail "a Hugging Face folder needs --data TOKEN_DIR" "$KNLP" eval --checkpoint "$T/qwen2-f32"
expect_fail "has no token data of its own; pass --data DIR" "$KNLP" eval --checkpoint "$T/gpt2"
cp -r "$T/qwen2-f32" "$T/mistral"
sed -i 's/Qwen2ForCausalLM/MistralForCausalLM/' "$T/mistral/config.json"
expect_fail "architecture MistralForCausalLM is not supported (knlp supports GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM)" \
	"$KNLP" eval --checkpoint "$T/mistral" --data "$T/qdata"
cp -r "$T/qwen2-bf16-tied-sharded" "$T/noshard"
rm "$T/noshard/model-00002-of-00003.safetensors"
expect_fail "shard model-00002-of-00003.safetensors listed for tensor" "$KNLP" eval --checkpoint "$T/noshard" --data "$T/qdata"
cp -r "$T/qwen2-f32" "$T/trunc"
truncate -s -1000 "$T/trunc/model.safetensors"
expect_fail "truncated file?" "$KNLP" eval --checkpoint "$T/trunc" --data "$T/qdata"
expect_fail "exceeds the model's 256 positions" "$KNLP" eval --checkpoint "$T/qwen2-f32" --data "$T/qdata" --ctx 300
expect_fail "is larger than the model's (50257)" "$KNLP" eval --checkpoint "$T/gpt2" --data "$T/qdata"
# The GPT-2 commands on a GPT2LMHeadModel folder: a Fisher-planned quantization calibrates on
# --data's training split; without data a plan that needs it says so.
"$KNLP" quantize --checkpoint "$T/gpt2" --data "$T/gdata" --base q8_0 --upgrade f16 --pct 50 --plan fim \
	--calib-windows 2 --calib-seq 16 --out "$T/gq" >"$T/gq.log" 2>&1 || bad "gpt2 quantize: $(cat "$T/gq.log")"
grep -q '"val_loss"' "$T/gq/quantize.json" 2>/dev/null && ok || bad "gpt2 quantize.json missing"
expect_fail "has no token data of its own; pass --calib-data TOKEN_DIR" \
	"$KNLP" export --checkpoint "$T/gpt2" --format gguf --type q8_0 --plan imatrix --pct 50 --out "$T/gi.gguf"
finish

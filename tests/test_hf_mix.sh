#!/bin/bash
# llama.cpp's K-quant mixes (--type q3_k_s ... q5_k_m) and the original's recipe (--plan
# fim-q3_k_m: Q3_K_M with the top Fisher layers' ffn_down in q6_k) against llama.cpp's own
# quantizer (llama_model_quantize of node-llama-cpp's libllama, scripts/ref/llama_quantize.py):
# a random Llama-shaped model (17 layers, so that the n/16 and n/8 layer rules select layers;
# untied; ffn rows of 320, so that k-quants fall back to q4_0 / q5_0 / q5_1 / q8_0) and a
# tied Qwen2-shaped one (8 layers, ffn rows of 512) are exported as f32 and quantized by llama.cpp; knlp's export in the
# same mix must give every tensor the same type and the same bytes. The recipe's file equals
# llama.cpp's Q3_K_M except the upgraded tensors, which are the top-Fisher ffn_down layers in
# q6_k, and llama.cpp's loss on it equals knlp's eval of it.
. "$(dirname "$0")/lib.sh"
MOD=$TOP/datasets/llama/node_modules
LIB=$MOD/@node-llama-cpp/linux-x64/bins/linux-x64
TOK="$TOP/datasets/tokenizers/gpt2"
if [ ! -s "$LIB/libllama.v0.5.0.so" ] || [ ! -s "$TOK/tokenizer.json" ]; then
	bad "node-llama-cpp's libllama or the GPT-2 tokenizer.json is missing (make deps; x86-64 only)"
	finish
	exit 1
fi
cd "$T"
mkdir -p corpus
zcat /usr/share/doc/linux-doc-6.1/Documentation/admin-guide/README.rst.gz >corpus/a.txt
"$KNLP" prepare --corpus corpus --tokenizer "$TOK" --out data >/dev/null 2>&1 || bad "prepare"
mkdir -p small && cp data/meta.json small/ && head -c 142 data/val.bin >small/val.bin # 71 tokens

while read -r name arch layers extra; do
	$PYTHON "$TOP/scripts/ref/hf_random_model.py" "$name" --arch "$arch" --tokenizer "$TOK" --layers "$layers" \
		--hidden 256 --heads 4 --inter 320 --ctx 128 --mild $extra >/dev/null || { bad "writing $name"; continue; }
	"$KNLP" export --checkpoint "$name" --format gguf --type f32 --out "$name.f32.gguf" >x.log 2>&1 ||
		{ bad "export $name f32: $(cat x.log)"; continue; }
	for mix in q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m; do
		"$KNLP" export --checkpoint "$name" --format gguf --type $mix --out "$name.$mix.gguf" >x.log 2>&1 ||
			{ bad "export $name $mix: $(cat x.log)"; continue; }
		$PYTHON "$TOP/scripts/ref/llama_quantize.py" "$LIB" "$name.f32.gguf" "$name.$mix.ref.gguf" $mix \
			"$name.$mix.gguf" >"$name.$mix.cmp" 2>"$name.$mix.err" && ok ||
			bad "$name $mix differs from llama.cpp's: $(tail -1 "$name.$mix.cmp" | head -c 800) $(tail -2 "$name.$mix.err")"
		rm -f "$name.$mix.ref.gguf"
	done
done <<'EOF2'
llama17 llama 17 --kv-heads 1
qwen2tied qwen2 8 --kv-heads 2 --tied --inter 512
EOF2
grep -q '"q5_1"' llama17.q3_k_l.cmp && grep -q '"q5_0"' llama17.q3_k_m.cmp && grep -q '"q4_0"' llama17.q3_k_s.cmp &&
	ok || bad "the fallback types were not exercised"

# The recipe: Fisher on the training split; 15% of 8 layers = the top ffn_down by mean
# empirical Fisher in q6_k on top of Q3_K_M (rows of 512: q6_k fits).
"$KNLP" fim score --checkpoint qwen2tied --data data --split train --chunks 2 --seq 32 --out fim >fim.log 2>&1 ||
	bad "fim score: $(tail -3 fim.log)"
"$KNLP" export --checkpoint qwen2tied --format gguf --plan fim-q3_k_m --fisher fim/fisher.safetensors --out rec.gguf \
	>rec.log 2>&1 || bad "recipe: $(cat rec.log)"
up=$($PYTHON - <<'PY'
import json
p = json.load(open("rec.gguf.plan.json"))
f = json.load(open("fim/fim.json"))
mean = {t["name"]: t["empirical"]["mean"] for t in f["tensors"]}
top = sorted(range(8), key=lambda l: -mean[f"model.layers.{l}.mlp.down_proj.weight"])[:1]
want = sorted(f"blk.{l}.ffn_down.weight" for l in top)
assert p["recipe"] == "fim-q3_k_m" and p["base"] == "q3_k_m" and p["plan"] == "fim", p["recipe"]
assert sorted(p["upgraded"]) == want, (p["upgraded"], want)
print(",".join(want))
PY
) && ok || bad "recipe plan: $(head -c 600 rec.gguf.plan.json)"
$PYTHON "$TOP/scripts/ref/llama_quantize.py" "$LIB" qwen2tied.f32.gguf rec.ref.gguf q3_k_m rec.gguf --except q6_k "$up" \
	>rec.cmp 2>rec.err && ok || bad "recipe vs llama.cpp's Q3_K_M: $(head -c 800 rec.cmp)"
"$KNLP" eval --gguf rec.gguf --data small --ctx 32 >rk.log 2>/dev/null || bad "eval recipe"
$PYTHON "$TOP/scripts/ref/llama_eval.py" "$LIB" rec.gguf small/val.bin 32 2 >rl.log 2>&1 || bad "llama.cpp recipe: $(tail -2 rl.log)"
# The ctypes evaluator (llama_eval.py, what the tests use) against node-llama-cpp's own
# JavaScript API on the same file: the same loss.
node "$TOP/scripts/ref/llama_eval.mjs" "$MOD" rec.gguf small/val.bin 32 2 >rj.log 2>&1 || bad "node-llama-cpp: $(tail -2 rj.log)"
$PYTHON - <<'PY' && ok || bad "llama_eval.py $(tail -1 rl.log) vs llama_eval.mjs $(tail -1 rj.log)"
import json
a, b = (json.loads(open(f).read().strip().splitlines()[-1]) for f in ("rl.log", "rj.log"))
assert a["tokens"] == b["tokens"] and abs(a["val_loss"] - b["val_loss"]) <= 1e-9 * b["val_loss"], (a, b)
PY
$PYTHON - <<'PY' && ok || bad "recipe loss: knlp $(tail -1 rk.log) vs llama.cpp $(tail -1 rl.log)"
import json
k, l = (json.loads(open(f).read().strip().splitlines()[-1]) for f in ("rk.log", "rl.log"))
assert k["tokens"] == l["tokens"] == 70, (k, l)
assert abs(k["val_loss"] - l["val_loss"]) <= 1e-3 * l["val_loss"], (k, l)
PY
expect_fail "plan fim-q3_k_m is the Q3_K_M recipe; the base mix q4_k_m disagrees" \
	"$KNLP" export --checkpoint llama17 --format gguf --type q4_k_m --plan fim-q3_k_m --out no.gguf
expect_fail "unknown block type 'q3_k_x'" "$KNLP" export --checkpoint llama17 --format gguf --type q3_k_x --out no.gguf
[ ! -e no.gguf ] && ok || bad "a refused export left a file"
finish

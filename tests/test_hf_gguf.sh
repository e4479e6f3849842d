#!/bin/bash
# GGUF export of Hugging Face Llama-family folders against llama.cpp itself (node-llama-cpp's
# prebuilt CPU binaries). Random Qwen2-shaped (Qwen3's tokenizer, fp32 and bf16 weights,
# q/k/v biases, tied) and Llama-shaped (Llama-3's tokenizer, bf16, one kv head, llama3 rope
# scaling, untied) models are exported as f32 and quantized (q8_0, q4_k). For each file llama.cpp's mean
# next-token loss equals knlp's eval of the same file (1e-4 relative for f32, 1e-3 quantized);
# the f32 file's loss equals knlp's eval of the folder; llama.cpp's tokenization with the
# file's vocabulary equals knlp's on held-out text.
. "$(dirname "$0")/lib.sh"
MOD=$TOP/datasets/llama/node_modules
LLIB=$MOD/@node-llama-cpp/linux-x64/bins/linux-x64 # llama.cpp's library (scripts/ref/llama_eval.py)
TOKZ="$TOP/datasets/tokenizers"
if [ ! -s "$MOD/node-llama-cpp/package.json" ] || [ ! -s "$TOKZ/qwen3/tokenizer.json" ]; then
	bad "node-llama-cpp or the tokenizers are missing (make deps; x86-64 only)"
	finish
	exit 1
fi
cd "$T"
mkdir -p corpus held
zcat /usr/share/doc/linux-doc-6.1/Documentation/admin-guide/README.rst.gz >corpus/a.txt
# Held-out text for the tokenizer check: other documents, and odd Unicode.
zcat /usr/share/doc/linux-doc-6.1/Documentation/process/submitting-patches.rst.gz >held/1.txt
zcat /usr/share/doc/linux-doc-6.1/Documentation/translations/zh_CN/process/howto.rst.gz >held/2.txt
# (Already NFC: llama.cpp does not apply tokenizer.json's normalizer, so on decomposed input
# it follows the text as given while Hugging Face and knlp compose it first.)
printf "It's WE'LL 12345 caf\u00e9 \u65e5\u672c\u8a9e \U0001F642  \n\n\ttabs\r\n(x) [y] ...!! <|im_start|>" >held/3.txt

while read -r name arch dtype tok types extra; do
	types=$(echo "$types" | tr , ' ')
	$PYTHON "$TOP/scripts/ref/hf_random_model.py" "$name" --arch "$arch" --dtype "$dtype" --tokenizer "$TOKZ/$tok" \
		--hidden 256 --heads 4 --inter 512 --ctx 128 --mild $extra >/dev/null || { bad "writing $name"; continue; }
	[ -d "data_$tok" ] || "$KNLP" prepare --corpus corpus --tokenizer "$TOKZ/$tok" --out "data_$tok" >/dev/null 2>&1
	# A short file: llama.cpp's logits are read in JavaScript, a vocabulary per position.
	# 71 tokens: windows of 32 at 0 and 32 and one aligned to the end, 70 targets.
	mkdir -p "small_$tok" && cp "data_$tok/meta.json" "small_$tok/" && head -c 284 "data_$tok/val.bin" >"small_$tok/val.bin"
	"$KNLP" eval --checkpoint "$name" --data "small_$tok" --ctx 32 >"$name.hf.log" 2>/dev/null || bad "eval $name"
	for t in $types; do
		"$KNLP" export --checkpoint "$name" --format gguf --type $t --out "$name.$t.gguf" >x.log 2>&1 ||
			{ bad "export $name $t: $(cat x.log)"; continue; }
		"$KNLP" eval --gguf "$name.$t.gguf" --data "small_$tok" --ctx 32 >"$name.$t.k" 2>/dev/null ||
			{ bad "knlp eval $name $t: $(cat "$name.$t.k")"; continue; }
		$PYTHON "$TOP/scripts/ref/llama_eval.py" "$LLIB" "$name.$t.gguf" "small_$tok/val.bin" 32 4 >"$name.$t.l" 2>&1 ||
			{ bad "llama.cpp $name $t: $(tail -3 "$name.$t.l")"; continue; }
		$PYTHON - "$name" $t <<'PY' && ok || bad "$name $t: knlp $(tail -1 "$name.$t.k") vs llama.cpp $(tail -1 "$name.$t.l")"
import json, sys
n, t = sys.argv[1:]
last = lambda f: json.loads(open(f).read().strip().splitlines()[-1])
k, l, h = last(f"{n}.{t}.k"), last(f"{n}.{t}.l"), last(f"{n}.hf.log")
tol = 1e-4 if t == "f32" else 1e-3
assert k["tokens"] == l["tokens"] == h["tokens"] == 70, (k["tokens"], l["tokens"], h["tokens"])
assert abs(k["val_loss"] - l["val_loss"]) <= tol * l["val_loss"], (k["val_loss"], l["val_loss"])
if t == "f32":  # the file holds the folder's model
    assert abs(h["val_loss"] - l["val_loss"]) <= 1e-4 * l["val_loss"], (h["val_loss"], l["val_loss"])
else:  # and quantization changed it
    assert k["val_loss"] != h["val_loss"]
print(n, t, k["val_loss"], l["val_loss"])
PY
	done
	# llama.cpp's tokenizer with the file's vocabulary against knlp's (special tokens in the
	# text parsed as such on both sides, as Hugging Face does).
	node "$TOP/scripts/ref/llama_tokenize.mjs" "$MOD" "$name.f32.gguf" special held/*.txt >"$name.ltok" 2>&1 ||
		{ bad "llama.cpp tokenize $name: $(tail -2 "$name.ltok")"; continue; }
	"$KNLP" encode --tokenizer "$name" held/*.txt >"$name.ktok" || bad "knlp encode $name"
	cmp -s "$name.ltok" "$name.ktok" && ok || bad "$name: llama.cpp and knlp tokenize held-out text differently"
done <<'EOF2'
qwen2-f32 qwen2 f32 qwen3 f32,q4_k --tied --kv-heads 2
qwen2-bf16 qwen2 bf16 qwen3 f32,q8_0 --tied --kv-heads 2 --seed 3
llama-bf16 llama bf16 llama3 f32,q8_0,q4_k --kv-heads 1 --rope-scaling llama3
EOF2
# A plan and its summary.
"$KNLP" export --checkpoint qwen2-f32 --format gguf --type q4_k --upgrade q8_0 --roles ffn_down,attn_v --pct 50 \
	--plan magnitude --out mag.gguf >mag.log 2>&1 || bad "magnitude plan: $(cat mag.log)"
$PYTHON - <<'PY' && ok || bad "magnitude plan summary: $(head -c 600 mag.gguf.plan.json)"
import json
p = json.load(open("mag.gguf.plan.json"))
assert p["architecture"] == "qwen2" and len(p["upgraded"]) == 2, p["upgraded"]
PY
# The Fisher of the folder (through the model's gradient taps), and a plan it drives: the
# upgraded tensors are the role's top layers by mean empirical Fisher; llama.cpp reads the file.
"$KNLP" fim score --checkpoint qwen2-f32 --data data_qwen3 --split train --chunks 4 --seq 32 --out fim >fim.log 2>&1 ||
	bad "fim score: $(tail -3 fim.log)"
grep -q "memory: peak resident" fim.log && ok || bad "fim score does not state its memory"
"$KNLP" export --checkpoint qwen2-f32 --format gguf --type q4_k --upgrade q8_0 --roles ffn_down,attn_v --pct 50 \
	--plan fim --fisher fim/fisher.safetensors --out fimplan.gguf >fp.log 2>&1 || bad "fim plan: $(cat fp.log)"
$PYTHON - <<'PY' && ok || bad "fim plan does not follow the Fisher: $(head -c 800 fimplan.gguf.plan.json)"
import json
p = json.load(open("fimplan.gguf.plan.json"))
f = json.load(open("fim/fim.json"))
mean = {t["name"]: t["empirical"]["mean"] for t in f["tensors"]}
hf = {"ffn_down": "mlp.down_proj", "attn_v": "self_attn.v_proj"}
up = sorted(p["upgraded"])
want = []
for role, part in hf.items():
    best = max(range(2), key=lambda l: mean[f"model.layers.{l}.{part}.weight"])
    want.append(f"blk.{best}.{role}.weight")
assert up == sorted(want), (up, want)
PY
"$KNLP" eval --gguf fimplan.gguf --data small_qwen3 --ctx 32 >fk.log 2>/dev/null || bad "eval fim plan"
$PYTHON "$TOP/scripts/ref/llama_eval.py" "$LLIB" fimplan.gguf small_qwen3/val.bin 32 4 >fl.log 2>&1 || bad "llama.cpp fim plan"
$PYTHON - <<'PY' && ok || bad "fim plan: knlp $(tail -1 fk.log) vs llama.cpp $(tail -1 fl.log)"
import json
k, l = (json.loads(open(f).read().strip().splitlines()[-1]) for f in ("fk.log", "fl.log"))
assert abs(k["val_loss"] - l["val_loss"]) <= 1e-3 * l["val_loss"], (k, l)
PY
# knlp quantize: the plan's file and the perplexity it leaves, against the float folder.
"$KNLP" quantize --checkpoint qwen2-f32 --data small_qwen3 --ctx 32 --base q4_k --upgrade q8_0 --roles ffn_down \
	--pct 50 --plan fim --fisher fim/fisher.safetensors --out quant >q.log 2>&1 || bad "quantize: $(cat q.log)"
$PYTHON - <<'PY' && ok || bad "quantize.json: $(head -c 600 quant/quantize.json)"
import json
q = json.load(open("quant/quantize.json"))
k = json.loads(open("qwen2-f32.hf.log").read().strip().splitlines()[-1])
assert abs(q["float_val_loss"] - k["val_loss"]) < 1e-6, (q["float_val_loss"], k["val_loss"])
assert q["val_tokens"] == 70 and len(q["upgraded"]) == 1 and q["architecture"] == "qwen2", q
PY
# fim-error (Fisher-weighted base-type error) and imatrix (activation-weighted): the plans
# run and say where their scores came from.
"$KNLP" export --checkpoint qwen2-f32 --format gguf --type q4_k --upgrade q8_0 --roles ffn_down,attn_v --pct 50 \
	--plan fim-error --fisher fim/fisher.safetensors --out fe.gguf >fe.log 2>&1 || bad "fim-error plan: $(cat fe.log)"
"$KNLP" export --checkpoint qwen2-f32 --format gguf --type q4_k --upgrade q8_0 --roles ffn_down,attn_v,token_embd --pct 50 \
	--plan imatrix --calib-data data_qwen3 --calib-windows 4 --calib-seq 32 --out im.gguf >im.log 2>&1 ||
	bad "imatrix plan: $(cat im.log)"
$PYTHON - <<'PY' && ok || bad "plan summaries: $(head -c 400 fe.gguf.plan.json) $(head -c 400 im.gguf.plan.json)"
import json
fe, im = (json.load(open(f)) for f in ("fe.gguf.plan.json", "im.gguf.plan.json"))
assert len(fe["upgraded"]) == 2 and fe["score_source"].endswith("fisher.safetensors"), fe["score_source"]
assert len(im["upgraded"]) == 3 and "4 windows x 32 tokens" in im["score_source"], im["score_source"]
PY
expect_fail "plan squisher needs Adam's second moment; a Hugging Face folder has no optimizer state" \
	"$KNLP" export --checkpoint qwen2-f32 --format gguf --type q4_k --plan squisher --pct 10 --out sq.gguf
[ ! -e sq.gguf ] && ok || bad "a refused export left a file"
finish

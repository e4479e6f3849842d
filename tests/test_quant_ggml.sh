#!/bin/bash
# GGML quantizers and GGUF export against ggml itself (datasets/ggml/libggml-base.so, from
# the npm package @node-llama-cpp/linux-x64 via scripts/deps.sh): every block type byte for
# byte on ten input distributions; GGUF files of trained models parsed by ggml's reader with
# every tensor equal to ggml's quantization of the checkpoint; plans, the GPT-2 tokenizer
# metadata, knlp's own reader, bad input.
. "$(dirname "$0")/lib.sh"
LIB=$TOP/datasets/ggml/libggml-base.so
if [ ! -s "$LIB" ]; then
	bad "$LIB missing (scripts/deps.sh fetches it)"
	finish
	exit 1
fi
cd "$T"
$PYTHON "$TOP/scripts/ref/ggml_oracle.py" "$KNLP" "$LIB" oracle >oracle.log 2>&1 && ok || bad "quantizers vs ggml: $(cat oracle.log)"

# Two tiny trained models: a byte-level one with 256-wide rows (k-quants apply) and no
# biases, and a GPT-2 BPE one (the tokenizer metadata).
$PYTHON - <<'PY'
import json, os
import numpy as np
r = np.random.default_rng(1)
for d, vocab, tok in (("byte", 256, "byte"), ("bpe", 50257, "gpt2")):
    os.makedirs(d, exist_ok=True)
    for split, n in (("train", 40000), ("val", 4000)):
        r.integers(0, vocab, n).astype(np.uint16).tofile(f"{d}/{split}.bin")
    json.dump({"tokenizer": tok, "vocab_size": vocab, "eot_token": 50256 if tok == "gpt2" else -1},
              open(f"{d}/meta.json", "w"))
PY
common="--set DEVICE_CPU=y --set GPT2_SIZE_CUSTOM=y --set GPT2_N_LAYER=2 --set GPT2_N_HEAD=4 --set GPT2_N_EMBD=256 --set GPT2_BLOCK_SIZE=32
	--set BATCH_SIZE=2 --set MAX_ITERS=3 --set WARMUP_ITERS=1 --set EVAL_INTERVAL=100 --set EVAL_SAMPLES=1
	--set SAMPLE_AT_EVAL=n --set NUM_THREADS=2 --set FIM_ATTENTION_AT_EVAL=n"
printf 'CONFIG_DEVICE_CPU=y\n' >g.config
KNLP_PEAK_FLOPS=1e9 "$KNLP" train --config g.config $common --set DATA_DIR="\"$T/byte\"" --set GPT2_BIAS=n \
	--set GPT2_VOCAB_SIZE=256 --out rb >rb.log 2>&1 || bad "train byte: $(tail -3 rb.log)"
KNLP_PEAK_FLOPS=1e9 "$KNLP" train --config g.config $common --set DATA_DIR="\"$T/bpe\"" --set GPT2_N_LAYER=1 \
	--out rp >rp.log 2>&1 || bad "train bpe: $(tail -3 rp.log)"
CK=rb/checkpoints/iter_00000003

# llama.cpp's mixes on llama.cpp's gpt2 architecture (attn_qkv follows attn_v's rule; the
# position table stays f32): the same types and bytes as llama.cpp's own quantizer.
LLAMA_LIB=$TOP/datasets/llama/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
"$KNLP" export --checkpoint $CK --format gguf --type f32 --out mix.f32.gguf >/dev/null 2>&1 || bad "export f32"
for mix in q3_k_m q4_k_m; do
	"$KNLP" export --checkpoint $CK --format gguf --type $mix --out mix.$mix.gguf >/dev/null 2>&1 || bad "export $mix"
	$PYTHON "$TOP/scripts/ref/llama_quantize.py" "$LLAMA_LIB" mix.f32.gguf mix.ref.gguf $mix mix.$mix.gguf \
		>mix.cmp 2>mix.err && ok || bad "gpt2 $mix differs from llama.cpp's: $(head -c 600 mix.cmp) $(tail -2 mix.err)"
done

# Every base type, read back by ggml: bytes equal ggml's own quantization.
for t in f32 f16 q8_0 q4_0 q3_k q4_k q5_k q6_k; do
	"$KNLP" export --checkpoint rb --format gguf --type $t --out b_$t.gguf >x.log 2>&1 || { bad "export $t: $(cat x.log)"; continue; }
	$PYTHON "$TOP/scripts/ref/gguf_oracle.py" "$LIB" b_$t.gguf $CK gpt2.block_count=2 gpt2.embedding_length=256 \
		gpt2.feed_forward_length=1024 gpt2.context_length=32 gpt2.attention.head_count=4 tokenizer.ggml.model=none \
		>o.log 2>&1 && ok || bad "gguf $t vs ggml: $(cat o.log)"
done

# knlp's reader: the same dequantized values as ggml's dequantization of the file's blocks.
"$KNLP" gguf show b_q3_k.gguf --tensor blk.1.ffn_down.weight --dump mine.f32 >show.log 2>&1 || bad "gguf show: $(cat show.log)"
grep -qE "blk\.1\.ffn_down\.weight +q3_k +\[1024 x 256\] 112640 bytes" show.log && ok || bad "gguf show table: $(head -30 show.log)"
$PYTHON - "$LIB" <<'PY' && ok || bad "knlp's dequantization of a GGUF tensor differs from ggml's"
import ctypes, sys, numpy as np, subprocess
g = ctypes.CDLL(sys.argv[1])
lines = open("show.log").read().splitlines()
data_at = int(lines[0].split("data at byte ")[1])
row = [l for l in lines if "blk.1.ffn_down.weight" in l][0]
off = int(row.split(" at ")[-1])
raw = open("b_q3_k.gguf", "rb").read()[data_at + off:data_at + off + 112640]
blocks = np.frombuffer(raw, np.uint8).copy()
want = np.zeros(256 * 1024, np.float32)
g.dequantize_row_q3_K(blocks.ctypes.data_as(ctypes.c_void_p), want.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(want.size))
mine = np.fromfile("mine.f32", np.float32)
assert np.array_equal(mine.view(np.uint32), want.view(np.uint32))
PY

# Plans: magnitude and squisher upgrade the ffn_down with the largest mean |w| / mean v.
"$KNLP" export --checkpoint rb --format gguf --type q3_k --upgrade q6_k --roles ffn_down --pct 15 --plan magnitude \
	--out m.gguf >m.log 2>&1 || bad "export magnitude: $(cat m.log)"
"$KNLP" export --checkpoint rb --format gguf --type q3_k --upgrade q6_k --roles ffn_down,attn_qkv --pct 50 \
	--plan squisher --out s.gguf >s.log 2>&1 || bad "export squisher: $(cat s.log)"
$PYTHON - $CK <<'PY' && ok || bad "plans: $(cat m.log s.log)"
import json, struct, sys
import numpy as np
def st(path):
    raw = open(path, "rb").read(); n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n])
    return {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], np.float32)
            for k, v in h.items() if k != "__metadata__" and v["dtype"] == "F32"}
w, o = st(sys.argv[1] + "/model.safetensors"), st(sys.argv[1] + "/optimizer.safetensors")
names = [f"transformer.h.{i}.mlp.c_proj.weight" for i in range(2)]
m = json.load(open("m.gguf.plan.json"))
assert m["upgraded"] == [max(names, key=lambda n: np.abs(w[n]).mean())], m["upgraded"]
s = json.load(open("s.gguf.plan.json"))
want = [max(names, key=lambda n: o["exp_avg_sq." + n].mean()),
        max([f"transformer.h.{i}.attn.c_attn.weight" for i in range(2)], key=lambda n: o["exp_avg_sq." + n].mean())]
assert sorted(s["upgraded"]) == sorted(want), (s["upgraded"], want)
types = {t["name"]: t["type"] for t in s["tensors"]}
assert all(types[n] == "q6_k" for n in want) and types["transformer.h.0.mlp.c_fc.weight"] == "q3_k"
assert s["bytes"] < s["f32_bytes"] / 5 and m["plan"] == "magnitude" and s["plan"] == "squisher"
PY
$PYTHON "$TOP/scripts/ref/gguf_oracle.py" "$LIB" s.gguf $CK >o.log 2>&1 && ok || bad "mixed-type gguf vs ggml: $(cat o.log)"

# The GPT-2 BPE model: tokenizer metadata (tokens, types, merges) and the 50257-row table;
# n_embd 256 rows take the k-quant.
"$KNLP" export --checkpoint rp --format gguf --type q4_k --out p.gguf >p.log 2>&1 || bad "export bpe: $(cat p.log)"
$PYTHON "$TOP/scripts/ref/gguf_oracle.py" "$LIB" p.gguf rp/checkpoints/iter_00000003 tokenizer.ggml.model=gpt2 \
	tokenizer.ggml.pre=gpt-2 'tokenizer.ggml.tokens=array[50257]' 'tokenizer.ggml.tokens[0]=!' \
	'tokenizer.ggml.token_type=array[50257]' 'tokenizer.ggml.merges=array[50000]' 'tokenizer.ggml.merges[0]=Ġ t' \
	tokenizer.ggml.eos_token_id=50256 gpt2.block_count=1 >o.log 2>&1 && ok || bad "bpe gguf vs ggml: $(cat o.log)"

# The model a GGUF file leaves: f32 evaluates close to the checkpoint; quantize writes the plan's
# file and the perplexities of the dequantized and the float model.
"$KNLP" eval --checkpoint rb >e1.log 2>/dev/null && "$KNLP" eval --gguf b_f32.gguf >e2.log 2>/dev/null \
	|| bad "eval: $(cat e1.log e2.log)"
"$KNLP" quantize --checkpoint rb --base q3_k --upgrade q6_k --pct 50 --plan magnitude --out qz >q.log 2>&1 \
	|| bad "quantize: $(cat q.log)"
"$KNLP" eval --gguf qz/model.gguf >e3.log 2>/dev/null || bad "eval q3_k: $(cat e3.log)"
$PYTHON - <<'PY' && ok || bad "gguf evaluation: $(cat e1.log e2.log e3.log qz/quantize.json)"
import json, math
e1, e2, e3 = (json.loads(open(f).read().strip().splitlines()[-1]) for f in ("e1.log", "e2.log", "e3.log"))
q = json.load(open("qz/quantize.json"))
assert e1["tokens"] == e2["tokens"] == q["val_tokens"] > 3000
# The GGUF evaluates as llama.cpp does (tanh GELU through ggml's fp16 table, tests/test_llama.sh),
# the checkpoint with knlp's erf GELU: close, not equal.
assert 0 < abs(e1["val_loss"] - e2["val_loss"]) < 2e-3, (e1, e2)
assert abs(q["float_val_loss"] - e2["val_loss"]) < 1e-6  # the f32 file as llama.cpp runs it
assert abs(q["val_loss"] - e3["val_loss"]) < 1e-6 and q["val_loss"] != q["float_val_loss"]
assert abs(q["val_perplexity"] - math.exp(q["val_loss"])) < 1e-6 * q["val_perplexity"]
assert len(q["upgraded"]) == 1 and q["upgraded"][0].endswith("mlp.c_proj.weight")
plan = json.load(open("qz/model.gguf.plan.json"))
assert q["bits_per_weight"] == plan["bits_per_weight"] and 3.4 < q["bits_per_weight"] < 4.5
PY
expect_fail "eval needs --checkpoint RUN_DIR (or --gguf FILE)" "$KNLP" eval

# CONFIG_QUANT_GGUF: the run ends with RUN/model.gguf by its plan; bad settings fail first.
KNLP_PEAK_FLOPS=1e9 "$KNLP" train --config g.config $common --set DATA_DIR="\"$T/byte\"" --set GPT2_VOCAB_SIZE=256 \
	--set QUANT_GGUF=y --set QUANT_BASE_Q4_K=y --set QUANT_PCT=50 --set QUANT_PLAN_SQUISHER=y --out rq >rq.log 2>&1 \
	|| bad "train with QUANT_GGUF: $(tail -3 rq.log)"
grep -q "gguf: .*rq/model.gguf" rq.log && ok || bad "no gguf line: $(tail -3 rq.log)"
$PYTHON "$TOP/scripts/ref/gguf_oracle.py" "$LIB" rq/model.gguf rq/checkpoints/iter_00000003 >o.log 2>&1 && ok \
	|| bad "trainer's gguf vs ggml: $(cat o.log)"
$PYTHON -c "
import json; p = json.load(open('rq/model.gguf.plan.json'))
assert p['plan'] == 'squisher' and p['base'] == 'q4_k' and len(p['upgraded']) == 1, p['upgraded']" && ok || bad "trainer's plan"
expect_fail "CONFIG_QUANT_UPGRADE: unknown block type 'q9'" "$KNLP" train --config g.config $common \
	--set DATA_DIR="\"$T/byte\"" --set QUANT_GGUF=y --set QUANT_UPGRADE=q9 --out rz
expect_fail "unknown role 'ffn_sideways'" "$KNLP" train --config g.config $common --set DATA_DIR="\"$T/byte\"" \
	--set QUANT_GGUF=y --set QUANT_ROLES=ffn_sideways --out rz
[ ! -e rz/checkpoints ] && ok || bad "a refused run wrote checkpoints"

# Bad input: one line naming the problem, non-zero exit, nothing left as if complete.
expect_fail "unknown block type 'q2_k'" "$KNLP" export --checkpoint rb --format gguf --type q2_k --out z.gguf
expect_fail "unknown plan 'best'" "$KNLP" export --checkpoint rb --format gguf --plan best --pct 10 --out z.gguf
expect_fail "train.bin: " "$KNLP" export --checkpoint rb --format gguf --plan fim --pct 10 --calib-windows 1000000 --out z.gguf
expect_fail "nope.safetensors" "$KNLP" export --checkpoint rb --format gguf --plan fim-error --pct 10 --fisher nope.safetensors --out z.gguf
[ ! -e z.gguf ] && ok || bad "a failed export left z.gguf"
cp -r rb rb2 && rm rb2/checkpoints/iter_00000003/optimizer.safetensors
expect_fail "no optimizer state in this checkpoint" "$KNLP" export --checkpoint rb2 --format gguf --plan squisher --pct 10 --out z.gguf
expect_fail "/nonexistent-dir/" "$KNLP" export --checkpoint rb --format gguf --out /nonexistent-dir/z.gguf
head -c 1000 b_q8_0.gguf >trunc.gguf
expect_fail "truncated GGUF file" "$KNLP" gguf show trunc.gguf
expect_fail "not a GGUF file (wrong magic)" "$KNLP" gguf show rb.log
finish

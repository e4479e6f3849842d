#!/bin/sh
# The seed's experiment on any local Hugging Face Llama-family folder (Qwen2, Llama): base
# q3_k with a few tensors upgraded to q6_k, chosen by the Fisher (empirical diagonal on the
# training split: its mean, and fim-error), by llama.cpp's importance matrix (imatrix), by
# weight magnitude and at random (3 seeds); the same budget for every
# plan (the same count of tensors of the same shapes, so equal bytes), next to plain q3_k
# and q4_k. Perplexity over the validation split, the float model's in the same windows.
# usage: scripts/hf_quant_study.sh MODEL_DIR TOKEN_DIR OUTDIR [PCT] [ROLES] [CTX]
#   TOKEN_DIR: `knlp prepare --tokenizer MODEL_DIR --out TOKEN_DIR` (train.bin for the
#   Fisher, val.bin for the perplexity).
set -eu
model=${1:?usage: hf_quant_study.sh MODEL_DIR TOKEN_DIR OUTDIR [PCT] [ROLES] [CTX]}
data=${2:?TOKEN_DIR}
out=${3:?OUTDIR}
pct=${4:-25}
roles=${5:-ffn_down,attn_v}
ctx=${6:-512}
top=$(cd "$(dirname "$0")/.." && pwd)
K=${KNLP:-$top/build/knlp}
CHUNKS=${CHUNKS:-64}
mkdir -p "$out"
[ -s "$out/fim/fisher.safetensors" ] ||
	"$K" fim score --checkpoint "$model" --data "$data" --split train --kind empirical --chunks "$CHUNKS" \
		--seq "$ctx" --out "$out/fim"
q() { # name args...
	name=$1
	shift
	[ -s "$out/q_$name/quantize.json" ] ||
		"$K" quantize --checkpoint "$model" --data "$data" --ctx "$ctx" --out "$out/q_$name" "$@"
}
q q4_k --base q4_k --pct 0
q q3_k --base q3_k --pct 0
q fim --base q3_k --upgrade q6_k --roles "$roles" --pct "$pct" --plan fim --fisher "$out/fim/fisher.safetensors"
q fim-error --base q3_k --upgrade q6_k --roles "$roles" --pct "$pct" --plan fim-error --fisher "$out/fim/fisher.safetensors"
q imatrix --base q3_k --upgrade q6_k --roles "$roles" --pct "$pct" --plan imatrix --calib-windows "$CHUNKS" --calib-seq "$ctx"
q magnitude --base q3_k --upgrade q6_k --roles "$roles" --pct "$pct" --plan magnitude
for s in 1 2 3; do
	q "random$s" --base q3_k --upgrade q6_k --roles "$roles" --pct "$pct" --plan random --seed "$s"
done
/usr/bin/python3 - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
rows = {os.path.basename(os.path.dirname(f))[2:]: json.load(open(f)) for f in glob.glob(out + "/q_*/quantize.json")}
order = ["q4_k", "q3_k", "fim", "fim-error", "imatrix", "magnitude"] + sorted(k for k in rows if k.startswith("random"))
ref = next(iter(rows.values()))
print(f"float: perplexity {ref['float_val_perplexity']:.4f} over {ref['val_tokens']} tokens (windows of {ref['ctx']})")
print(f"{'plan':<11} {'upgraded':>8} {'bytes':>12} {'bits/weight':>11} {'perplexity':>11} {'vs float':>9}")
lines = []
for k in order:
    if k not in rows:
        continue
    r = rows[k]
    lines.append(f"{k:<11} {len(r['upgraded']):>8} {r['tensor_bytes']:>12} {r['bits_per_weight']:>11.3f} "
                 f"{r['val_perplexity']:>11.4f} {r['perplexity_change_pct']:>+8.2f}%")
print("\n".join(lines))
rnd = [rows[k]["val_perplexity"] for k in rows if k.startswith("random")]
if rnd and "fim" in rows:
    print(f"fim vs the mean of {len(rnd)} random plans: {100 * (rows['fim']['val_perplexity'] / (sum(rnd) / len(rnd)) - 1):+.2f}% perplexity")
json.dump(rows, open(os.path.join(out, "study.json"), "w"), indent=1)
PY

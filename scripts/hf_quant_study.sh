#!/bin/sh
# The seed's experiment on any local Hugging Face Llama-family folder (Qwen2, Llama):
# llama.cpp's Q3_K_M mix with a few tensors (ffn_down by default) upgraded to q6_k, chosen by
# the Fisher (the original's recipe fim-q3_k_m: the mean empirical diagonal on the training
# split; and fim-error), by llama.cpp's importance matrix (imatrix), by weight magnitude and
# at random (3 seeds); the same count of tensors of the same shapes for every plan (bytes
# differ only by the mix's own type of each chosen layer), next to plain Q3_K_M and Q4_K_M.
# Perplexity over the validation split, the float model's in the same windows.
# usage: scripts/hf_quant_study.sh MODEL_DIR TOKEN_DIR OUTDIR [PCT] [ROLES] [CTX]
#   TOKEN_DIR: `knlp prepare --tokenizer MODEL_DIR --out TOKEN_DIR` (train.bin for the
#   Fisher, val.bin for the perplexity).
set -eu
model=${1:?usage: hf_quant_study.sh MODEL_DIR TOKEN_DIR OUTDIR [PCT] [ROLES] [CTX]}
data=${2:?TOKEN_DIR}
out=${3:?OUTDIR}
pct=${4:-15}
roles=${5:-ffn_down}
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
fisher="$out/fim/fisher.safetensors"
q q4_k_m --base q4_k_m --pct 0
q q3_k_m --base q3_k_m --pct 0
q fim-q3_k_m --plan fim-q3_k_m --upgrade q6_k --roles "$roles" --pct "$pct" --fisher "$fisher"
q fim-error --base q3_k_m --upgrade q6_k --roles "$roles" --pct "$pct" --plan fim-error --fisher "$fisher"
q imatrix --base q3_k_m --upgrade q6_k --roles "$roles" --pct "$pct" --plan imatrix --calib-windows "$CHUNKS" \
	--calib-seq "$ctx"
q magnitude --base q3_k_m --upgrade q6_k --roles "$roles" --pct "$pct" --plan magnitude
for s in 1 2 3; do
	q "random$s" --base q3_k_m --upgrade q6_k --roles "$roles" --pct "$pct" --plan random --seed "$s"
done
/usr/bin/python3 - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
rows = {os.path.basename(os.path.dirname(f))[2:]: json.load(open(f)) for f in glob.glob(out + "/q_*/quantize.json")}
order = ["q4_k_m", "q3_k_m", "fim-q3_k_m", "fim-error", "imatrix", "magnitude"] + sorted(k for k in rows if k.startswith("random"))
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
f = rows.get("fim-q3_k_m")
if f and "q3_k_m" in rows:
    b = rows["q3_k_m"]
    print(f"fim-q3_k_m vs plain q3_k_m: {100 * (f['val_perplexity'] / b['val_perplexity'] - 1):+.2f}% perplexity at "
          f"{100 * (f['tensor_bytes'] / b['tensor_bytes'] - 1):+.2f}% size (the original: -1.26% at +1.8% on Qwen2.5-1.5B)")
if rnd and f:
    print(f"fim-q3_k_m vs the mean of {len(rnd)} random plans: {100 * (f['val_perplexity'] / (sum(rnd) / len(rnd)) - 1):+.2f}% perplexity")
json.dump(rows, open(os.path.join(out, "study.json"), "w"), indent=1)
PY

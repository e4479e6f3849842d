#!/bin/sh
# The plan comparison of docs/quantization.md at CPU scale: a 256-wide byte-level GPT-2 on
# the default corpus (k-quants need rows of 256), then base q3_k with 15% of the ffn_down
# layers upgraded to q6_k by each plan (random over 5 seeds), next to uniform types.
# Perplexity over the first 1M tokens of the validation split.
# usage: scripts/quant_study.sh OUTDIR [ITERS]
set -eu
out=${1:?usage: quant_study.sh OUTDIR [ITERS]}
iters=${2:-1500}
top=$(cd "$(dirname "$0")/.." && pwd)
K="$top/build/knlp"
mkdir -p "$out/val"
src="$top/datasets/linux-doc-byte"
[ -s "$src/val.bin" ] || { echo "quant_study: $src missing (make prepare)"; exit 1; }
head -c 2000000 "$src/val.bin" >"$out/val/val.bin"
cp "$src/meta.json" "$out/val/meta.json"
if [ ! -f "$out/run/training_metrics.json" ] || ! grep -q '"status": "complete"' "$out/run/training_metrics.json"; then
	KCONFIG_CONFIG="$out/study.config" /usr/bin/python3 "$top/scripts/kconfig.py" defconfig gpt2-tiny-cpu >/dev/null
	"$K" train --config "$out/study.config" --set GPT2_SIZE_CUSTOM=y --set GPT2_N_LAYER=4 --set GPT2_N_EMBD=256 --set GPT2_N_HEAD=4 --set MAX_ITERS="$iters" \
		--set SAMPLE_AT_EVAL=n --out "$out/run"
fi
q() { # name args...
	name=$1
	shift
	"$K" quantize --checkpoint "$out/run" --data "$out/val" --out "$out/q_$name" "$@"
}
[ -s "$out/q_q8_0/quantize.json" ] || q q8_0 --base q8_0 --pct 0
[ -s "$out/q_q6_k/quantize.json" ] || q q6_k --base q6_k --pct 0
[ -s "$out/q_q4_k/quantize.json" ] || q q4_k --base q4_k --pct 0
[ -s "$out/q_q3_k/quantize.json" ] || q q3_k --base q3_k --pct 0
# The issue's budget: 15% of ffn_down. fim, fim-error and imatrix calibrate on 64 windows of
# the training split (not the validation text they are judged on).
for p in magnitude squisher fim fim-error imatrix; do
	[ -s "$out/q_$p/quantize.json" ] || q "$p" --base q3_k --upgrade q6_k --roles ffn_down --pct 15 --plan $p
done
for s in 1 2 3 4 5; do
	[ -s "$out/q_random$s/quantize.json" ] || q "random$s" --base q3_k --upgrade q6_k --roles ffn_down --pct 15 --plan random --seed $s
done
# More room to choose: one layer of four in each of the four weight roles.
all=attn_qkv,attn_output,ffn_up,ffn_down
for p in magnitude squisher fim fim-error imatrix; do
	[ -s "$out/q_all-$p/quantize.json" ] || q "all-$p" --base q3_k --upgrade q6_k --roles $all --pct 25 --plan $p
done
for s in 1 2 3 4 5; do
	[ -s "$out/q_all-random$s/quantize.json" ] || q "all-random$s" --base q3_k --upgrade q6_k --roles $all --pct 25 --plan random --seed $s
done
/usr/bin/python3 - "$out" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
rows = {os.path.basename(os.path.dirname(f))[2:]: json.load(open(f)) for f in glob.glob(out + "/q_*/quantize.json")}
print("| plan | bytes | bits/weight | val ppl | vs float | upgraded |")
print("|---|---:|---:|---:|---:|---|")
def short(u):
    for a, b in [("transformer.h.", "h"), (".mlp.c_proj.weight", ".ffn_down"), (".mlp.c_fc.weight", ".ffn_up"),
                 (".attn.c_attn.weight", ".attn_qkv"), (".attn.c_proj.weight", ".attn_output")]:
        u = u.replace(a, b)
    return u
plans = ["magnitude", "squisher", "fim", "fim-error", "imatrix"]
for prefix in ["", "all-"]:
    names = (["q8_0", "q6_k", "q4_k", "q3_k"] if not prefix else []) + [prefix + p for p in plans] + \
        [f"{prefix}random{s}" for s in range(1, 6)]
    for name in names:
        r = rows.get(name)
        if r:
            up = ", ".join(short(u) for u in r["upgraded"])
            print(f"| {name} | {r['tensor_bytes']:,} | {r['bits_per_weight']:.3f} | {r['val_perplexity']:.4f} | "
                  f"{r['perplexity_change_pct']:+.2f}% | {up} |")
    rand = [rows[f"{prefix}random{s}"]["val_perplexity"] for s in range(1, 6) if f"{prefix}random{s}" in rows]
    if len(rand) > 1:
        print(f"\n{prefix}random: {statistics.mean(rand):.4f} +/- {statistics.stdev(rand):.4f} (5 seeds); float "
              f"{rows['q3_k']['float_val_perplexity']:.4f}\n")
PY

#!/bin/sh
# The measurement of docs/fim.md: does Adam's exp_avg_sq track the diagonal Fisher?
# Three runs of the quickstart model (gpt2-tiny-cpu: 4 layers, width 128, byte-level, the
# Linux kernel Documentation): AdamW with the clip at 1.0, AdamW without a clip, AdamWSPAM
# (periodic reset at step 1000) with the clip. Every 250 steps a checkpoint is kept; for each
# one `knlp fim compare` measures v against the empirical and the true Fisher on 64 held-out
# windows. scripts/fim_report.py turns the results into the tables and the figure.
# usage: scripts/fim_study.sh OUTDIR [ITERS]
set -eu
out=${1:?usage: fim_study.sh OUTDIR [ITERS]}
iters=${2:-1500}
top=$(cd "$(dirname "$0")/.." && pwd)
K="$top/build/knlp"
mkdir -p "$out"
KCONFIG_CONFIG="$out/study.config" /usr/bin/python3 "$top/scripts/kconfig.py" defconfig gpt2-tiny-cpu >/dev/null
train() { # name settings...
	name=$1
	shift
	if [ ! -f "$out/$name/training_metrics.json" ] || ! grep -q '"status": "complete"' "$out/$name/training_metrics.json"; then
		"$K" train --config "$out/study.config" --set MAX_ITERS="$iters" --set SAMPLE_AT_EVAL=n \
			--set KEEP_CHECKPOINTS=100 --set FIM_ATTENTION_AT_EVAL=n "$@" --out "$out/$name"
	fi
}
train adamw
train adamw-noclip --set GRAD_CLIP=0
train adamwspam --set OPTIMIZER_ADAMWSPAM=y
for run in adamw adamw-noclip adamwspam; do
	for ck in "$out/$run"/checkpoints/iter_*; do
		it=$(basename "$ck")
		[ -s "$out/$run/compare_$it.json" ] && continue
		"$K" fim compare --checkpoint "$ck" --data "$top/datasets/linux-doc-byte" --chunks 64 --kind both \
			--out "$out/$run/compare_$it.json" >/dev/null
	done
done
/usr/bin/python3 "$top/scripts/fim_report.py" "$out"

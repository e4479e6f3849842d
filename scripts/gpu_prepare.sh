#!/bin/sh
# Prepare .gpu/ for scripts/gpu_check.sh on a GPU machine that cannot reach a package
# archive: knlp's build dependencies other than libtorch (Debian packages, unpacked), a
# slice of each default corpus (byte and GPT-2 BPE; run `make prepare` for both first) and
# the two run configurations (124M bf16 on CUDA; the CPU-sized pruned model on CUDA).
# Carry `.gpu` and `datasets/gpt2` to the machine. .gpu/ is local: list it in
# .git/info/exclude.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
PY=/usr/bin/python3
G=.gpu
mkdir -p $G/debs $G/data/byte $G/data/gpt2 $G/tokenizers/gpt2
# GPT-2's tokenizer.json (make deps) for the random Llama-family folders of the hfllama stage.
[ -s datasets/tokenizers/gpt2/tokenizer.json ] && cp datasets/tokenizers/gpt2/tokenizer.json $G/tokenizers/gpt2/
(cd $G/debs && apt-get download libfmt-dev libfmt9 nlohmann-json3-dev libcli11-dev libgtest-dev zlib1g-dev \
	libmetis-dev libmetis5 python3-kconfiglib >/dev/null)
rm -rf $G/root
for f in $G/debs/*.deb; do dpkg -x "$f" $G/root; done
rm -rf $G/root/usr/share/doc $G/root/usr/share/man

for d in byte gpt2; do
	src=datasets/linux-doc-$d
	[ -s $src/train.bin ] || { echo "gpu_prepare: $src missing (make prepare)"; exit 1; }
	head -c 8000000 $src/train.bin >$G/data/$d/train.bin
	head -c 1000000 $src/val.bin >$G/data/$d/val.bin
	$PY - $src $G/data/$d <<'EOF'
import json, os, sys
src, dst = sys.argv[1:3]
m = json.load(open(os.path.join(src, "meta.json")))
for k in ("train", "val"):
    m[k + "_tokens"] = os.path.getsize(os.path.join(dst, k + ".bin")) // 2
    m.pop(k + "_sha256", None)
m["note"] = "the first 8 MB (train) and 1 MB (val) of " + src
json.dump(m, open(os.path.join(dst, "meta.json"), "w"), indent=2)
EOF
done

mk() { # preset name extra-lines...
	preset=$1 name=$2
	shift 2
	KCONFIG_CONFIG=$G/$name.config $PY scripts/kconfig.py defconfig "$preset" >/dev/null
	sed -i '/^CONFIG_DEVICE_/d;/^# CONFIG_DEVICE_/d' $G/$name.config
	printf '%s\n' "$@" >>$G/$name.config
	KCONFIG_CONFIG=$G/$name.config $PY scripts/kconfig.py olddefconfig >/dev/null
}
mk gpt2-vanilla-iters c124 CONFIG_DEVICE_CUDA=y 'CONFIG_DATA_DIR=".gpu/data/gpt2"' CONFIG_MAX_ITERS=30 \
	CONFIG_GRAD_ACCUM=1 CONFIG_WARMUP_ITERS=10 CONFIG_EVAL_INTERVAL=1000 CONFIG_EVAL_SAMPLES=2 \
	CONFIG_CHECKPOINT_INTERVAL=1000 CONFIG_LOG_INTERVAL=5 CONFIG_AMP_BF16=y
# 124M like for like with eager PyTorch (no dropout, no samples), and the same through the
# data-parallel path with NCCL (launched with one process: the backend on one GPU).
mk gpt2-vanilla-iters c124-nd CONFIG_DEVICE_CUDA=y 'CONFIG_DATA_DIR=".gpu/data/gpt2"' CONFIG_MAX_ITERS=30 \
	CONFIG_GRAD_ACCUM=1 CONFIG_WARMUP_ITERS=10 CONFIG_EVAL_INTERVAL=1000 CONFIG_EVAL_SAMPLES=2 \
	CONFIG_CHECKPOINT_INTERVAL=1000 CONFIG_LOG_INTERVAL=5 CONFIG_AMP_BF16=y 'CONFIG_GPT2_DROPOUT="0.0"' \
	'# CONFIG_SAMPLE_AT_EVAL is not set'
mk gpt2-vanilla-iters c124-nccl CONFIG_DEVICE_CUDA=y 'CONFIG_DATA_DIR=".gpu/data/gpt2"' CONFIG_MAX_ITERS=30 \
	CONFIG_GRAD_ACCUM=1 CONFIG_WARMUP_ITERS=10 CONFIG_EVAL_INTERVAL=1000 CONFIG_EVAL_SAMPLES=2 \
	CONFIG_CHECKPOINT_INTERVAL=1000 CONFIG_LOG_INTERVAL=5 CONFIG_AMP_BF16=y 'CONFIG_GPT2_DROPOUT="0.0"' \
	'# CONFIG_SAMPLE_AT_EVAL is not set' CONFIG_DDP=y CONFIG_DDP_BACKEND_NCCL=y
mk gpt2-cpu-prune-bitter7 tiny-prune CONFIG_DEVICE_CUDA=y 'CONFIG_DATA_DIR=".gpu/data/byte"' CONFIG_MAX_ITERS=400 \
	CONFIG_EVAL_INTERVAL=100 CONFIG_CHECKPOINT_INTERVAL=20 CONFIG_LOG_INTERVAL=20
grep -q '^/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
du -sh $G
echo "gpu_prepare: carry .gpu and datasets/gpt2; run: bash scripts/gpu_check.sh \$OUT"

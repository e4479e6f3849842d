#!/bin/bash
# bf16 beyond GPT-2 training (KNLP_CPU_PRECISION=bf16-force runs it on any CPU, emulated
# where not native): LeNet-5 and GraphSAGE train under bf16 autocast, record it in run.json
# and end close to the same runs in fp32 (auto keeps LeNet-5 in fp32, its faster precision); `knlp eval` of a GPT-2 checkpoint in bf16 is
# within 0.02 nats of fp32 and says so; `knlp sample` decodes in bf16 with every attention
# variant, its cache holding bf16 keys and values (measured bytes = analytic).
. "$(dirname "$0")/lib.sh"
cd "$T"
field() { $PYTHON -c "import json,sys; print(json.load(open(sys.argv[1]))[-1][sys.argv[2]])" "$1/run.json" "$2"; }
# fp32_and_bf16 X: train X.config into X32 (fp32) and X16 (bf16 forced); both record it.
fp32_and_bf16() {
	"$KNLP" train --config $1.config --out ${1}32 >${1}32.log 2>&1 || bad "$1 fp32: $(tail -3 ${1}32.log)"
	KNLP_CPU_PRECISION=bf16-force "$KNLP" train --config $1.config --out ${1}16 >${1}16.log 2>&1 ||
		bad "$1 bf16: $(tail -3 ${1}16.log)"
	[ "$(field ${1}16 precision)" = bf16 ] && [ "$(field ${1}32 precision)" = fp32 ] && ok || bad "$1: precision not recorded"
}

# LeNet-5 on 600 synthetic bar images, 3 epochs.
bar_idx idx 600 200
cat >l.config <<EOC
CONFIG_DEVICE_CPU=y
CONFIG_NUM_THREADS=2
CONFIG_MODEL_LENET5=y
CONFIG_IMAGE_DATASET_MNIST=y
CONFIG_IMAGE_DATA_DIR="$T/idx"
CONFIG_EPOCHS=3
CONFIG_BATCH_SIZE=32
CONFIG_LEARNING_RATE="3e-3"
CONFIG_LOG_INTERVAL=5
CONFIG_SEED=4
EOC
fp32_and_bf16 l
$PYTHON - <<'PY' && ok || bad "lenet bf16 does not track fp32"
import json
a, b = (json.load(open(r + "/training_metrics.json")) for r in ("l32", "l16"))
ta, tb = a["test_accuracies"], b["test_accuracies"]
print("lenet test accuracy fp32", ta[-1], "bf16", tb[-1])
assert ta[-1] > 0.9 and tb[-1] > 0.9, (ta, tb)  # both learn the bars
assert abs(ta[-1] - tb[-1]) <= 0.03, (ta, tb)
assert a["train_losses"] != b["train_losses"]  # bf16 did run
PY
# CONFIG_CPU_PRECISION_AUTO trains LeNet-5 in fp32, which is faster for it than bf16 even
# on a CPU with native bf16, and says why; an explicit bf16 choice still gets bf16.
KNLP_CPU_PRECISION=auto "$KNLP" train --config l.config --set EPOCHS=1 --out la >la.log 2>&1 || bad "lenet auto: $(tail -3 la.log)"
[ "$(field la precision)" = fp32 ] && ok || bad "lenet auto: precision $(field la precision)"
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
	field la precision_reason | grep -q "fp32: LeNet-5 trains faster in fp32 than in bf16" &&
		grep -q "^precision: fp32 (LeNet-5 trains faster" la.log && ok || bad "lenet auto reason: $(field la precision_reason)"
	KNLP_CPU_PRECISION=bf16 "$KNLP" train --config l.config --set EPOCHS=1 --out lb >lb.log 2>&1 || bad "lenet bf16: $(tail -3 lb.log)"
	[ "$(field lb precision)" = bf16 ] && ok || bad "lenet explicit bf16: precision $(field lb precision)"
fi

# GraphSAGE on a synthetic graph, 3 epochs.
cat >g.config <<EOC
CONFIG_MODEL_GRAPHSAGE=y
CONFIG_NUM_THREADS=2
CONFIG_OPTIMIZER_ADAM=y
CONFIG_LEARNING_RATE="3e-3"
CONFIG_GNN_SYNTH_NODES=6000
CONFIG_GNN_EPOCHS=3
CONFIG_GNN_PAGES_PER_BATCH=8
CONFIG_GNN_HIDDEN=32
CONFIG_LOG_INTERVAL=5
EOC
fp32_and_bf16 g
# auto keeps GraphSAGE in fp32 too (its small products make bf16 slower), and says why.
KNLP_CPU_PRECISION=auto "$KNLP" train --config g.config --set GNN_EPOCHS=1 --out ga >ga.log 2>&1 || bad "gnn auto: $(tail -3 ga.log)"
[ "$(field ga precision)" = fp32 ] && ok || bad "gnn auto: precision $(field ga precision)"
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
	field ga precision_reason | grep -q "fp32: GraphSAGE trains faster in fp32 than in bf16" && ok ||
		bad "gnn auto reason: $(field ga precision_reason)"
fi
$PYTHON - <<'PY' && ok || bad "gnn bf16 does not track fp32"
import json
a, b = (json.load(open(r + "/training_metrics.json")) for r in ("g32", "g16"))
la, lb = a["train_losses"], b["train_losses"]
pa, pb = a["val_pr_aucs"][-1], b["val_pr_aucs"][-1]
print("gnn train loss fp32", la, "bf16", lb, "validation PR-AUC", pa, pb)
assert la[-1] < la[0] and lb[-1] < lb[0], (la, lb)  # both learn
assert all(abs(x - y) < 0.03 * abs(x) for x, y in zip(la, lb)), (la, lb)
assert abs(pa - pb) < 0.05, (pa, pb)
assert la != lb
PY

# GPT-2: eval and cached sampling in bf16, every attention variant.
mkdir -p corpus
for f in process/submitting-patches process/coding-style; do
	zcat "/usr/share/doc/linux-doc-6.1/Documentation/$f.rst.gz" >"corpus/$(basename $f).txt"
done
"$KNLP" prepare --corpus corpus --tokenizer byte --out data >/dev/null 2>&1 || bad "prepare"
printf 'CONFIG_DEVICE_CPU=y\n' >p.config
common="--set GPT2_SIZE_CUSTOM=y --set GPT2_N_LAYER=2 --set GPT2_N_HEAD=2 --set GPT2_N_EMBD=64 --set GPT2_BLOCK_SIZE=128
	--set GPT2_VOCAB_SIZE=256 --set DATA_DIR=\"$T/data\" --set BATCH_SIZE=4 --set WARMUP_ITERS=5 --set LEARNING_RATE=3e-3
	--set EVAL_SAMPLES=2 --set SAMPLE_AT_EVAL=n --set NUM_THREADS=2 --set FIM_ATTENTION_AT_EVAL=n --set MAX_ITERS=30
	--set EVAL_INTERVAL=30 --set SEED=5 --set GPT2_MLA_D_LATENT=32 --set GPT2_KVSPLICE_DIM=32"
for v in VANILLA MLA KVSPLICE RA; do
	KNLP_PEAK_FLOPS=1e9 "$KNLP" train --config p.config $common --set GPT2_ATTN_$v=y --set GPT2_RA_LAYERS=1 --out $v >$v.log 2>&1 ||
		{ bad "$v train: $(tail -2 $v.log)"; continue; }
	"$KNLP" eval --checkpoint $v >e32.json 2>/dev/null || bad "$v eval fp32"
	KNLP_CPU_PRECISION=bf16-force "$KNLP" eval --checkpoint $v >e16.json 2>/dev/null || bad "$v eval bf16"
	$PYTHON - "$v" <<'PY' && ok || bad "$v: bf16 eval differs from fp32: $(tail -1 e32.json) $(tail -1 e16.json)"
import json, sys
a, b = (json.loads(open(f).read().strip().splitlines()[-1]) for f in ("e32.json", "e16.json"))
assert a["precision"] == "fp32" and b["precision"] == "bf16", (a, b)
assert a["tokens"] == b["tokens"]
assert abs(a["val_loss"] - b["val_loss"]) < 0.02 and a["val_loss"] != b["val_loss"], (sys.argv[1], a, b)
PY
	KNLP_CPU_PRECISION=bf16-force "$KNLP" sample --checkpoint $v --prompt "The patch" --tokens 150 >s.txt 2>s.err ||
		bad "$v sample bf16: $(tail -2 s.err)"
	grep -q "attention, bf16; KV cache measured [0-9]* bytes" s.err && ! grep -q MISMATCH s.err && ok ||
		bad "$v: bf16 sampling: $(tail -1 s.err)"
done
finish

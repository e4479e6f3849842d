#!/bin/bash
# The image trainer end to end: LeNet-5 learns a synthetic IDX dataset; exact resume after
# a kill and after a time budget stopped it mid-epoch; pruning reaches its target; the
# original's CNN metrics schema; bad input (wrong magic, counts that disagree, missing
# folder, truncated CIFAR, class mismatch) fails before anything is written as complete.
. "$(dirname "$0")/lib.sh"
cd "$T"

bar_idx idx 640 200
cat >l.config <<EOC
CONFIG_DEVICE_CPU=y
CONFIG_MODEL_LENET5=y
CONFIG_IMAGE_DATASET_MNIST=y
CONFIG_IMAGE_DATA_DIR="$T/idx"
CONFIG_EPOCHS=3
CONFIG_BATCH_SIZE=64
CONFIG_LEARNING_RATE="3e-3"
CONFIG_LOG_INTERVAL=5
CONFIG_SEED=4
EOC
"$KNLP" train --config l.config --out a >a.log 2>&1 || bad "train: $(tail -3 a.log)"
$PYTHON - a/training_metrics.json <<'PY' && ok || bad "metrics schema / learning: $(cat a/training_metrics.json | head -40)"
import json, sys
j = json.load(open(sys.argv[1]))
for k in ["epochs", "train_losses", "test_losses", "test_accuracies", "sparsities", "learning_rates", "epoch_times",
          "best_accuracy", "final_accuracy", "final_sparsity", "total_time"]:
    assert k in j, k
assert j["epochs"] == [1, 2, 3] and j["status"] == "complete" and j["parameters"] == 61750
assert j["final_accuracy"] >= 0.9, j["test_accuracies"]
assert j["train_losses"][-1] < j["train_losses"][0]
PY
grep -q '"type":"eval"' a/metrics.jsonl && ok || bad "no eval records"

same() { $PYTHON - "$1" "$2" <<'PY'
import json, struct, sys
def tensors(run):
    ck = run + "/checkpoints/" + open(run + "/checkpoints/FINAL").read().strip()
    out = {}
    for f in ("model", "optimizer"):
        raw = open(f"{ck}/{f}.safetensors", "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n])
        for k, v in h.items():
            if k != "__metadata__" and not k.startswith("rng."):
                b, e = v["data_offsets"]; out[k] = raw[8 + n + b:8 + n + e]
    return out
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
assert a.keys() == b.keys(), set(a) ^ set(b)
bad = [k for k in a if a[k] != b[k]]
assert not bad, bad[:5]
ja, jb = (json.load(open(r + "/training_metrics.json")) for r in sys.argv[1:3])
assert ja["test_accuracies"] == jb["test_accuracies"] and ja["train_losses"] == jb["train_losses"]
PY
}
# Killed in the middle of epoch 2: resume from the epoch-1 checkpoint, bit-identical result.
killed_run k env KNLP_FAULT_KILL_AT='after_step#15' "$KNLP" train --config l.config --out k
"$KNLP" train --resume k >>k.log 2>&1 || bad "resume after kill: $(tail -3 k.log)"
same a k && ok || bad "resume after SIGKILL differs from the uninterrupted run"
# metrics.jsonl of the resumed run: no record past the checkpoint counted twice.
[ "$(grep -c '"type":"eval"' k/metrics.jsonl)" = 3 ] && [ "$(grep -c '"type":"train"' k/metrics.jsonl)" = "$(grep -c '"type":"train"' a/metrics.jsonl)" ] \
	&& ok || bad "metrics.jsonl after resume: $(grep -c . k/metrics.jsonl) vs $(grep -c . a/metrics.jsonl) lines"
# A time budget stops mid-epoch (a mid-epoch checkpoint); resuming continues exactly.
# The budget runs out at step 14 (the hook stands in for a slow machine; a real 1000 s
# budget is never reached).
KNLP_FAULT_TIME_UP_AT='after_step#14' "$KNLP" train --config l.config --set MAX_TIME=1000 --out t >t.log 2>&1 || bad "time budget run: $(tail -3 t.log)"
grep -q '"status": "stopped_time_budget"' t/training_metrics.json && ok || bad "time budget status"
"$KNLP" train --resume t --set MAX_TIME=0 >>t.log 2>&1 || bad "resume after time budget: $(tail -3 t.log)"
same a t && ok || bad "resume after a mid-epoch stop differs"

# Channels-last layout: learns like the default layout (to rounding), and a kill + resume
# reproduces the uninterrupted channels-last run bit for bit.
"$KNLP" train --config l.config --set IMAGE_CHANNELS_LAST=y --out c >c.log 2>&1 || bad "channels-last run: $(tail -3 c.log)"
grep -q "layout: channels-last" c.log && $PYTHON - a/training_metrics.json c/training_metrics.json <<'PY' && ok || bad "channels-last learning: $(grep -A4 train_losses c/training_metrics.json)"
import json, sys
a, c = (json.load(open(f)) for f in sys.argv[1:3])
assert c["final_accuracy"] >= 0.9, c["test_accuracies"]
assert abs(a["train_losses"][0] - c["train_losses"][0]) < 1e-2 * a["train_losses"][0], (a["train_losses"], c["train_losses"])
PY
killed_run ck env KNLP_FAULT_KILL_AT='after_step#15' "$KNLP" train --config l.config --set IMAGE_CHANNELS_LAST=y --out ck
"$KNLP" train --resume ck >>ck.log 2>&1 || bad "channels-last resume: $(tail -3 ck.log)"
same c ck && ok || bad "channels-last resume differs from the uninterrupted run"

# A non-finite loss at step 3: stops by default, naming it; with NONFINITE_SKIP the step is
# dropped and counted, and a kill + resume reproduces the uninterrupted skipping run.
expect_fail "non-finite loss (nan) at epoch 0, step 2" env KNLP_FAULT_NAN_AT=loss#3 "$KNLP" train --config l.config --out nan0
KNLP_FAULT_NAN_AT=loss#3 "$KNLP" train --config l.config --set NONFINITE_SKIP=y --out ns >ns.log 2>&1 || bad "skip run: $(tail -3 ns.log)"
grep -q '"skipped_steps": 1' ns/training_metrics.json && grep -q '"type":"skipped_step"' ns/metrics.jsonl && ok || bad "skip counted"
killed_run nk env KNLP_FAULT_NAN_AT=loss#3 KNLP_FAULT_KILL_AT='after_step#15' "$KNLP" train --config l.config --set NONFINITE_SKIP=y --out nk
"$KNLP" train --resume nk >>nk.log 2>&1 || bad "resume skip run: $(tail -3 nk.log)"
same ns nk && grep -q '"skipped_steps": 1' nk/training_metrics.json && ok || bad "skip run resumed differs"

# Pruning: magnitude to 70%, ramp end at epoch 2 of 3.
"$KNLP" train --config l.config --set PRUNING_MAGNITUDE=y --set PRUNING_TARGET_SPARSITY=0.7 --set PRUNING_WARMUP=5 \
	--set PRUNING_FREQUENCY=5 --set PRUNING_RAMP_END_EPOCH=2 --out p >p.log 2>&1 || bad "pruned run: $(tail -3 p.log)"
$PYTHON -c "
import json; j = json.load(open('p/training_metrics.json'))
assert abs(j['final_sparsity'] - 0.7) < 0.002, j['final_sparsity']
assert j['pruning']['ramp_end'] == 20, j['pruning']
assert j['final_accuracy'] > 0.5" && ok || bad "pruning: $(grep -A3 sparsities p/training_metrics.json)"
"$KNLP" train --config l.config --set OPTIMIZER_ADAMWPRUNE=y --set PRUNING_TARGET_SPARSITY=0.5 --set EPOCHS=2 \
	--out s >s.log 2>&1 && grep -q '"variant": "bitter7"' s/training_metrics.json && ok || bad "AdamWPrune: $(tail -3 s.log)"

# ResNet-18 on oneDNN's blocked layout with Winograd (the default where this build has
# oneDNN's headers): it learns, the log and run.json name the engine, a kill + resume
# reproduces the uninterrupted run bit for bit, and libtorch's ops (IMAGE_ONEDNN=n) give the
# same first loss (step 1, before any update: one forward pass of the same weights) to
# rounding. Where oneDNN has bf16 kernels (native bf16), the same in bf16: its engine, exact
# resume, and a first loss within bf16 rounding of libtorch's bf16 autocast path.
bar_idx r18 192 64
cat >r.config <<EOC
CONFIG_DEVICE_CPU=y
CONFIG_MODEL_RESNET18=y
CONFIG_IMAGE_DATASET_MNIST=y
CONFIG_IMAGE_DATA_DIR="$T/r18"
CONFIG_EPOCHS=2
CONFIG_BATCH_SIZE=32
CONFIG_LEARNING_RATE="1e-3"
CONFIG_LOG_INTERVAL=1
CONFIG_SEED=5
EOC
"$KNLP" train --config r.config --out r >r.log 2>&1 || bad "resnet18 run: $(tail -3 r.log)"
if grep -q "engine: oneDNN primitives" r.log; then
	grep -q '"engine": "onednn-blocked' r/run.json && ok || bad "run.json engine: $(grep engine r/run.json)"
	killed_run rk env KNLP_FAULT_KILL_AT='after_step#8' "$KNLP" train --config r.config --out rk
	"$KNLP" train --resume rk >>rk.log 2>&1 || bad "resnet18 resume: $(tail -3 rk.log)"
	same r rk && ok || bad "resnet18 (oneDNN blocked) resume differs from the uninterrupted run"
	# first_losses A B TOL: the step-1 losses of two runs agree to TOL (relative)
	first_losses() {
		$PYTHON - "$1/metrics.jsonl" "$2/metrics.jsonl" "$3" <<'PY' && ok || bad "$1 vs $2 first losses: $(head -1 "$1/metrics.jsonl") $(head -1 "$2/metrics.jsonl")"
import json, sys
first = [next(json.loads(l)["loss"] for l in open(f) if '"type":"train"' in l) for f in sys.argv[1:3]]
assert abs(first[0] - first[1]) < float(sys.argv[3]) * first[1], first
PY
	}
	"$KNLP" train --config r.config --set EPOCHS=1 --set IMAGE_ONEDNN=n --out rl >rl.log 2>&1 ||
		bad "libtorch ops: $(tail -3 rl.log)"
	first_losses r rl 1e-4
	if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
		KNLP_CPU_PRECISION=bf16 "$KNLP" train --config r.config --out rb >rb.log 2>&1 || bad "bf16 run: $(tail -3 rb.log)"
		grep -q "engine: oneDNN primitives on its blocked layout, bf16 activations" rb.log &&
			grep -q '"engine": "onednn-blocked-bf16"' rb/run.json && grep -q '"precision": "bf16"' rb/run.json &&
			ok || bad "bf16 engine: $(grep engine rb.log rb/run.json)"
		killed_run rbk env KNLP_CPU_PRECISION=bf16 KNLP_FAULT_KILL_AT='after_step#8' "$KNLP" train --config r.config --out rbk
		KNLP_CPU_PRECISION=bf16 "$KNLP" train --resume rbk >>rbk.log 2>&1 || bad "bf16 resume: $(tail -3 rbk.log)"
		same rb rbk && ok || bad "resnet18 (oneDNN blocked, bf16) resume differs from the uninterrupted run"
		KNLP_CPU_PRECISION=bf16 "$KNLP" train --config r.config --set EPOCHS=1 --set IMAGE_ONEDNN=n --out rbl >rbl.log 2>&1 ||
			bad "bf16 libtorch ops: $(tail -3 rbl.log)"
		# measured 2.33244 vs 2.33194 at this seed (2e-4); each product's bf16 output is
		# rounded to 2^-9 relative, differently by each engine
		first_losses rb rbl 5e-3
	fi
else
	grep -q "engine: libtorch's ops; CONFIG_IMAGE_ONEDNN needs" r.log && ok || bad "no engine line: $(head -5 r.log)"
fi
$PYTHON -c "
import json; j = json.load(open('r/training_metrics.json'))
assert j['parameters'] == 11173962 and j['train_losses'][-1] < j['train_losses'][0], j['train_losses']" && ok || bad "resnet18 learning: $(grep -A3 train_losses r/training_metrics.json)"

# A folder of Netpbm images (binary PGM for training, ASCII for the test split), class
# folders c0..c9: LeNet-5 learns it like the IDX files.
$PYTHON - <<'PY'
import os, random
r = random.Random(5)
for split, n, ascii in (("train", 400, False), ("test", 100, True)):
    for i in range(n):
        k = r.randrange(10)
        px = [r.randrange(60) for _ in range(28 * 28)]
        for x in range(4, 24):
            px[(2 * k + 4) * 28 + x] = 200 + r.randrange(55)
        d = f"fold/{split}/c{k}"
        os.makedirs(d, exist_ok=True)
        if ascii:
            open(f"{d}/{i}.pgm", "w").write("P2\n# test image\n28 28\n255\n" + " ".join(map(str, px)) + "\n")
        else:
            open(f"{d}/{i}.pgm", "wb").write(b"P5 28 28 255\n" + bytes(px))
PY
"$KNLP" train --config l.config --set IMAGE_DATASET_FOLDER=y --set "IMAGE_DATA_DIR=\"$T/fold\"" --out fo >fo.log 2>&1 || bad "folder run: $(tail -3 fo.log)"
$PYTHON -c "
import json; j = json.load(open('fo/training_metrics.json'))
assert j['dataset'] == 'folder' and j['final_accuracy'] >= 0.9, j['test_accuracies']" && grep -q "400 train, 100 test images" fo.log \
	&& ok || bad "folder dataset: $(tail -3 fo.log)"
head -c 300 fold/train/c3/$(ls fold/train/c3 | head -1) >trunc.pgm && mv trunc.pgm fold/train/c3/$(ls fold/train/c3 | head -1)
expect_fail "pixels need 784 bytes, the file has" "$KNLP" train --config l.config --set IMAGE_DATASET_FOLDER=y \
	--set "IMAGE_DATA_DIR=\"$T/fold\"" --out fo2
test ! -e fo2 && ok || bad "run folder left after a bad image"

# AdamWAdv gets the original's CNN recipe: per-epoch cosine to 1e-6 (3e-3, then
# 1e-6 + (3e-3 - 1e-6)(1 + cos(pi/3))/2 = 2.25025e-3, then 7.5075e-4) and clip 1.0.
"$KNLP" train --config l.config --set OPTIMIZER_ADAMWADV=y --out adv >adv.log 2>&1 || bad "adamwadv run: $(tail -3 adv.log)"
grep -q "adamwadv: the original's CNN recipe" adv.log && $PYTHON -c "
import json; lr = json.load(open('adv/training_metrics.json'))['learning_rates']
assert all(abs(a - b) < 1e-12 for a, b in zip(lr, [3e-3, 2.25025e-3, 7.5075e-4])) and len(lr) == 3, lr" && ok || bad "adamwadv recipe: $(grep -A4 learning_rates adv/training_metrics.json)"

# Bad input.
mkdir -p bad && cp idx/* bad/
$PYTHON -c "
import gzip; d = bytearray(gzip.open('bad/t10k-images-idx3-ubyte.gz').read()); d[3] = 0x99
gzip.open('bad/t10k-images-idx3-ubyte.gz', 'wb').write(bytes(d))"
expect_fail "t10k-images-idx3-ubyte.gz: wrong magic 2201 (IDX images have 2051)" \
	"$KNLP" train --config l.config --set "IMAGE_DATA_DIR=\"$T/bad\"" --out b1
test ! -e b1 && ok || bad "run folder left after a data error"
cp idx/* bad/ && cp idx/train-labels-idx1-ubyte.gz bad/t10k-labels-idx1-ubyte.gz
expect_fail "t10k-labels-idx1-ubyte.gz: 640 labels but" "$KNLP" train --config l.config --set "IMAGE_DATA_DIR=\"$T/bad\"" --out b2
expect_fail "install the Debian package dataset-fashion-mnist" "$KNLP" train --config l.config \
	--set IMAGE_DATASET_FASHION_MNIST=y --set "IMAGE_DATA_DIR=\"$T/nowhere\"" --out b3
mkdir -p cif && head -c 5000 /dev/zero >cif/test_batch.bin && for i in 1 2 3 4 5; do head -c 3073 /dev/zero >cif/data_batch_$i.bin; done
expect_fail "test_batch.bin: 5000 bytes is not a whole number of 3073-byte CIFAR-10 records" "$KNLP" train \
	--config l.config --set MODEL_RESNET18=y --set IMAGE_DATASET_CIFAR10=y --set "IMAGE_DATA_DIR=\"$T/cif\"" --out b4
expect_fail "the dataset has 10 classes but CONFIG_IMAGE_NUM_CLASSES=5" "$KNLP" train --config l.config \
	--set IMAGE_NUM_CLASSES=5 --out b5
expect_fail "a checkpoint of an image model" "$KNLP" sample --checkpoint a

# An image matrix: ids carry the model, summaries rank by test accuracy, the HTML report draws.
"$KNLP" matrix --config l.config --set EPOCHS=1 --set OPTIMIZER_MODE_MULTIPLE=y --set OPTIMIZER_ENABLE_SGD=y \
	--set OPTIMIZER_ENABLE_ADAMW=y --set MATRIX_SEEDS=2 --set 'MATRIX_BASELINE="lenet5_sgd_none"' --out mx --yes >mx.log 2>&1 \
	|| bad "image matrix: $(tail -3 mx.log)"
grep -q "lenet5_adamw_none .* n=2 .*% +/- .*diff [-+][0-9.]* \[" mx/summary_report.txt && ok || bad "image summary: $(cat mx/summary_report.txt)"
grep -q "Top configurations by test accuracy" mx/summary_report.txt && grep -q "higher is better" mx/summary_report.txt && ok ||
	bad "image ranking"
$PYTHON "$TOP/scripts/matrix_report.py" mx >/dev/null 2>&1 && grep -q "test accuracy" mx/report.html && ls mx/graphs/final_quality.png >/dev/null \
	&& ls mx/graphs/train_loss.png >/dev/null && [ ! -e mx/graphs/quality_vs_sparsity.png ] \
	&& ok || bad "image matrix report"
finish

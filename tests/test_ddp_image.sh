#!/bin/bash
# Data-parallel image training on Gloo (LeNet-5): 2 processes equal 1 process with
# accumulation 2 (training losses, weights and optimizer state to 1e-6, also with magnitude
# pruning and its masks), including a last global batch that leaves rank 1 an empty
# micro-batch; one launched process equals the
# plain run bit for bit; exact resume of a 2-process run cut mid-epoch; a killed rank is
# named and its checkpoint resumes on one process; a different global batch is refused.
. "$(dirname "$0")/lib.sh"
cd "$T"

# 600 images, global batch 64: 9 full steps and one of 24 images (rank 1 gets none).
bar_idx idx 600 200
cat >l.config <<EOC
CONFIG_DEVICE_CPU=y
CONFIG_NUM_THREADS=1
CONFIG_MODEL_LENET5=y
CONFIG_IMAGE_DATASET_MNIST=y
CONFIG_IMAGE_DATA_DIR="$T/idx"
CONFIG_EPOCHS=2
CONFIG_BATCH_SIZE=32
CONFIG_LEARNING_RATE="3e-3"
CONFIG_LOG_INTERVAL=1
CONFIG_SEED=4
CONFIG_DDP_TIMEOUT=20
EOC
"$KNLP" train --config l.config --set GRAD_ACCUM=2 --out one >one.log 2>&1 || bad "1 process: $(tail -3 one.log)"
"$KNLP" launch --nproc 2 -- train --config l.config --set DDP=y --out two >two.log 2>&1 || bad "2 processes: $(tail -5 two.log)"
grep -q "data parallel: 2 processes (gloo), global batch 32 x 1 x 2 = 64 images" two.log && ok ||
	bad "no data-parallel banner: $(head -5 two.log)"
[ "$(grep -c '^epoch ' two.log)" = 2 ] && ok || bad "rank 1 printed too: $(grep -c '^epoch ' two.log) epoch lines"

cat >cmp.py <<'PY'
# cmp.py A B TOL [all]: training losses, logged step losses, weights and optimizer state of
# two runs agree to TOL; "all" also compares BatchNorm statistics and test metrics.
import json, struct, sys
import numpy as np
def tensors(run):
    ck = run + "/checkpoints/" + open(run + "/checkpoints/FINAL").read().strip()
    out = {}
    for f in ("model", "optimizer"):
        b = open(f"{ck}/{f}.safetensors", "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        for k, v in json.loads(b[8:8 + n]).items():
            if k == "__metadata__" or k.startswith("rng."):
                continue
            s, e = v["data_offsets"]
            dt = {"I64": np.int64, "BOOL": np.uint8, "U8": np.uint8, "F64": np.float64}.get(v["dtype"], np.float32)
            out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype=dt).astype(np.float64)
    return out
a, b, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
full = len(sys.argv) > 4
ma, mb = (json.load(open(r + "/training_metrics.json")) for r in (a, b))
keys = ["train_losses"] + (["test_losses", "test_accuracies"] if full else [])
for k in keys:
    x, y = np.array(ma[k]), np.array(mb[k])
    assert x.shape == y.shape and np.abs(x - y).max() <= tol, (k, x, y)
la = {json.loads(l)["step"]: json.loads(l)["loss"] for l in open(a + "/metrics.jsonl") if '"train"' in l}
lb = {json.loads(l)["step"]: json.loads(l)["loss"] for l in open(b + "/metrics.jsonl") if '"train"' in l}
assert len(la) >= 10 and set(la) == set(lb) and max(abs(la[i] - lb[i]) for i in la) <= tol, (la, lb)
ta, tb = tensors(a), tensors(b)
assert ta.keys() == tb.keys(), set(ta) ^ set(tb)
d = max(float(np.abs(ta[k] - tb[k]).max()) for k in ta if full or not k.startswith("buffer."))
assert d <= tol, d
print("max difference", d)
PY
$PYTHON cmp.py one two 1e-6 >cmp.log 2>&1 && ok || bad "2 processes differ from 1 x accumulation 2: $(tail -3 cmp.log)"
$PYTHON - <<'PY' && ok || bad "ddp record: $(grep -A12 '"ddp"' two/training_metrics.json)"
import json
m = json.load(open("two/training_metrics.json"))
d = m["ddp"]
assert d["world_size"] == 2 and d["backend"] == "gloo" and d["global_batch"] == 64 and d["syncs"] == 20, d
assert d["replica_weight_checksum_spread"] == 0 and d["allreduce_bytes"] > 0, d
assert m["global_batch"] == 64 and m["status"] == "complete" and m["final_accuracy"] > 0.5, m
PY

# Pruning masks are computed identically on every rank: a pruned 2-process run equals the
# pruned 1-process run with accumulation 2 (weights, optimizer state and masks).
P="--set PRUNING_MAGNITUDE=y --set PRUNING_TARGET_SPARSITY=0.5 --set PRUNING_WARMUP=2 --set PRUNING_FREQUENCY=2 --set PRUNING_RAMP_END=12"
"$KNLP" train --config l.config $P --set GRAD_ACCUM=2 --out onep >onep.log 2>&1 || bad "pruned 1 process: $(tail -3 onep.log)"
"$KNLP" launch --nproc 2 -- train --config l.config $P --set DDP=y --out twop >twop.log 2>&1 || bad "pruned 2 processes: $(tail -3 twop.log)"
$PYTHON cmp.py onep twop 1e-6 >cmpp.log 2>&1 && grep -q '"final_sparsity": 0.5' twop/training_metrics.json && ok ||
	bad "pruned 2-process run differs: $(tail -3 cmpp.log)"

# One launched process goes through the process group and equals the plain run exactly.
"$KNLP" train --config l.config --out plain >plain.log 2>&1 || bad "plain: $(tail -3 plain.log)"
RANK=0 WORLD_SIZE=1 "$KNLP" train --config l.config --set DDP=y --out w1 >w1.log 2>&1 || bad "world 1: $(tail -3 w1.log)"
grep -q "data parallel: 1 processes (gloo)" w1.log && $PYTHON cmp.py plain w1 0 all >cmp1.log 2>&1 && ok ||
	bad "world 1 differs from the plain run: $(tail -3 cmp1.log)"

# A 2-process run cut by its time budget mid-epoch (step 4) and resumed equals "two" exactly.
KNLP_FAULT_TIME_UP_AT="after_step#4" "$KNLP" launch --nproc 2 -- train --config l.config --set DDP=y \
	--set MAX_TIME=100000 --out cut >cut.log 2>&1 || bad "cut run: $(tail -3 cut.log)"
grep -q '"status": "stopped_time_budget"' cut/training_metrics.json && ok || bad "cut status"
"$KNLP" launch --nproc 2 -- train --resume cut --set MAX_TIME=100000 >res.log 2>&1 || bad "resume: $(tail -3 res.log)"
grep -q "resumed" res.log && $PYTHON cmp.py two cut 0 all >cmp2.log 2>&1 && ok ||
	bad "resumed 2-process run differs: $(tail -n 3 cmp2.log res.log)"

# Rank 1 killed in epoch 2: rank 0 stops naming it; the epoch-1 checkpoint resumes on one
# process with the same global batch (accumulation 2) and matches "one".
KNLP_FAULT_RANK=1 KNLP_FAULT_KILL_AT="after_step#13" "$KNLP" launch --nproc 2 --grace 60 -- train --config l.config \
	--set DDP=y --out killed >killed.log 2>&1 && bad "a killed rank went unnoticed"
grep -q "rank 1 of 2 is gone" killed.log && ok || bad "no clear error for the killed rank: $(tail -5 killed.log)"
[ "$(cat killed/checkpoints/LATEST)" = "iter_00000010" ] && ok || bad "latest checkpoint: $(cat killed/checkpoints/LATEST)"
expect_fail "the checkpoint's steps take 64 images (BATCH_SIZE x GRAD_ACCUM x processes) but this run's take 32" \
	"$KNLP" train --resume killed
"$KNLP" train --resume killed --set GRAD_ACCUM=2 --force >kres.log 2>&1 && $PYTHON cmp.py one killed 1e-6 >cmp3.log 2>&1 && ok ||
	bad "resume on 1 process after the kill: $(tail -n 3 kres.log cmp3.log)"
finish

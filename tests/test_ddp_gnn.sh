#!/bin/bash
# Data-parallel GraphSAGE on Gloo: one launched process equals the plain run bit for bit;
# 2 processes visit every sampler batch once per epoch (each rank its share, page reads
# from its own page file), keep identical replicas, learn, and resume a mid-epoch cut
# exactly; the FIM sampler is refused with more than one process.
. "$(dirname "$0")/lib.sh"
cd "$T"

cat >g.config <<EOC
CONFIG_MODEL_GRAPHSAGE=y
CONFIG_NUM_THREADS=1
CONFIG_OPTIMIZER_ADAM=y
CONFIG_LEARNING_RATE="3e-3"
CONFIG_WEIGHT_DECAY="5e-7"
CONFIG_GNN_SYNTH_NODES=6000
CONFIG_GNN_EPOCHS=3
CONFIG_GNN_PAGES_PER_BATCH=8
CONFIG_GNN_HIDDEN=32
CONFIG_LOG_INTERVAL=1
CONFIG_DDP_TIMEOUT=20
EOC
"$KNLP" train --config g.config --out plain >plain.log 2>&1 || bad "plain: $(tail -3 plain.log)"
RANK=0 WORLD_SIZE=1 "$KNLP" train --config g.config --set DDP=y --out w1 >w1.log 2>&1 || bad "world 1: $(tail -3 w1.log)"
grep -q "data parallel: 1 processes (gloo)" w1.log &&
	cmp plain/checkpoints/$(cat plain/checkpoints/FINAL)/model.safetensors w1/checkpoints/$(cat w1/checkpoints/FINAL)/model.safetensors &&
	$PYTHON - <<'PY' && ok || bad "world 1 differs from the plain run"
import json
a, b = json.load(open("plain/training_metrics.json")), json.load(open("w1/training_metrics.json"))
for k in ("train_losses", "val_pr_aucs", "final_iteration", "test"):
    assert a[k] == b[k], (k, a[k], b[k])
assert a["gnn"]["read_amplification"] == b["gnn"]["read_amplification"]
PY

"$KNLP" launch --nproc 2 -- train --config g.config --set DDP=y --out two >two.log 2>&1 || bad "2 processes: $(tail -5 two.log)"
grep -q "data parallel: 2 processes (gloo), global batch 2 sampler batches per step" two.log && ok || bad "banner: $(head -4 two.log)"
$PYTHON - <<'PY' && ok || bad "2-process GNN run"
import json, os
a, b = json.load(open("plain/training_metrics.json")), json.load(open("two/training_metrics.json"))
d = b["ddp"]
assert d["world_size"] == 2 and d["replica_weight_checksum_spread"] == 0 and d["syncs"] == b["final_iteration"], d
ra, rb = a["gnn"]["read_amplification"], b["gnn"]["read_amplification"]
# Every batch once per epoch, counted on rank 0 from both ranks: the same batches as the plain run.
for k in ("batches", "pages_touched", "loaded_nodes", "supervised_nodes"):
    assert ra[k] == rb[k], (k, ra[k], rb[k])
assert b["final_iteration"] * 2 >= ra["batches"] > (b["final_iteration"] - 3) * 2, (b["final_iteration"], ra["batches"])
assert b["gnn"]["io"]["bytes_read"] > 0 and b["status"] == "complete"
assert b["train_losses"][-1] < b["train_losses"][0] and b["test"]["roc_auc"] > 0.55, (b["train_losses"], b["test"])
assert not [f for f in os.listdir("two") if f.startswith("features")], os.listdir("two")
PY

# A 2-process run cut mid-epoch and resumed equals the uninterrupted 2-process run.
KNLP_FAULT_TIME_UP_AT="after_step#5" "$KNLP" launch --nproc 2 -- train --config g.config --set DDP=y \
	--set MAX_TIME=100000 --out cut >cut.log 2>&1 || bad "cut run: $(tail -3 cut.log)"
"$KNLP" launch --nproc 2 -- train --resume cut --set MAX_TIME=100000 >res.log 2>&1 || bad "resume: $(tail -3 res.log)"
grep -q resumed res.log && cmp two/checkpoints/$(cat two/checkpoints/FINAL)/model.safetensors \
	cut/checkpoints/$(cat cut/checkpoints/FINAL)/model.safetensors && $PYTHON - <<'PY' && ok || bad "resumed 2-process GNN run differs"
import json
a, b = json.load(open("two/training_metrics.json")), json.load(open("cut/training_metrics.json"))
for k in ("train_losses", "val_pr_aucs", "final_iteration", "test"):
    assert a[k] == b[k], (k, a[k], b[k])
PY

expect_fail "the fim sampler steers its batches with each batch's gradients" "$KNLP" launch --nproc 2 -- train \
	--config g.config --set DDP=y --set GNN_SAMPLER_FIM=y --out f
finish

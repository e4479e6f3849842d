#!/bin/bash
# GNN from the command line: numpy interop both ways, bad .npz input, training with page-store
# reads and its metrics, exact resume (mid-epoch, FIM sampler), gnn layout / ra, the matrix.
. "$(dirname "$0")/lib.sh"
cd "$T"

# numpy writes a compressed archive with float64 features, int32 edges and boolean masks.
$PYTHON - <<'PY' || bad "numpy graph"
import numpy as np
r = np.random.default_rng(0)
n = 3000
x = r.normal(size=(n, 17))
y = np.where(r.random(n) < 0.6, 2, 0); y[r.random(n) < 0.05] = 1
e = r.integers(0, n, size=(4000, 2)).astype(np.int32)
lab = np.flatnonzero(y <= 1); r.shuffle(lab)
m = lambda ids: np.isin(np.arange(n), ids)
np.savez_compressed("np.npz", x=x, y=y, edge_index=e, train_mask=m(lab[:700]), valid_mask=m(lab[700:900]),
                    test_mask=m(lab[900:]))
np.savez("nokey.npz", x=x.astype(np.float32), edge_index=e, train_mask=lab[:10], valid_mask=lab[10:20], test_mask=lab[20:30])
np.savez("badlab.npz", x=x.astype(np.float32), y=y, edge_index=e, train_mask=np.arange(30), valid_mask=lab[10:20], test_mask=lab[20:30])
np.savez("badedge.npz", x=x.astype(np.float32), y=y, edge_index=e.T.copy(), train_mask=lab[:10], valid_mask=lab[10:20], test_mask=lab[20:30])
PY
cat >g.config <<EOC
CONFIG_MODEL_GRAPHSAGE=y
CONFIG_OPTIMIZER_ADAM=y
CONFIG_LEARNING_RATE="3e-3"
CONFIG_WEIGHT_DECAY="5e-7"
CONFIG_GNN_SYNTH_NODES=6000
CONFIG_GNN_EPOCHS=4
CONFIG_GNN_PAGES_PER_BATCH=8
CONFIG_GNN_HIDDEN=32
CONFIG_LOG_INTERVAL=5
EOC
"$KNLP" train --config g.config --out np --set GNN_DATA_NPZ=y --set GNN_DATA_PATH="$T/np.npz" --set GNN_EPOCHS=1 \
	--set GNN_LAYOUT_BFS=y >np.log 2>&1 && grep -q "3000 nodes, 4000 edges" np.log && ok || bad "numpy-written npz: $(tail -3 np.log)"
expect_fail "nokey.npz: missing key 'y'" "$KNLP" train --config g.config --out e1 --set GNN_DATA_NPZ=y --set GNN_DATA_PATH="$T/nokey.npz"
expect_fail "badlab.npz: key 'train_mask': node" "$KNLP" train --config g.config --out e2 --set GNN_DATA_NPZ=y --set GNN_DATA_PATH="$T/badlab.npz"
expect_fail "badedge.npz: key 'edge_index' must have shape (E, 2), has shape (2, 4000)" "$KNLP" train --config g.config --out e3 --set GNN_DATA_NPZ=y --set GNN_DATA_PATH="$T/badedge.npz"
expect_fail "missing.npz: graph not found (CONFIG_GNN_DATA_PATH" "$KNLP" train --config g.config --out e4 --set GNN_DATA_NPZ=y --set GNN_DATA_PATH="$T/missing.npz"
expect_fail "CONFIG_GNN_FANOUT: 'x' is not a positive integer" "$KNLP" train --config g.config --out e5 --set GNN_FANOUT="10 x"
[ ! -e e1/checkpoints ] && ok || bad "a rejected graph left checkpoints"

# knlp writes, numpy reads.
"$KNLP" gnn synth --nodes 5000 --seed 2 --out s.npz >synth.log 2>&1 || bad "gnn synth: $(cat synth.log)"
$PYTHON - <<'PY' && ok || bad "numpy reads gnn synth output"
import numpy as np
d = np.load("s.npz")
assert d["x"].shape == (5000, 17) and d["x"].dtype == np.float32
assert d["edge_index"].shape[1] == 2 and d["edge_index"].max() < 5000
y = d["y"]
for k in ("train_mask", "valid_mask", "test_mask"):
    assert set(np.unique(y[d[k]])) <= {0, 1}, k
PY

# Training: page batches read from disk, metrics, loss going down, the layout file.
"$KNLP" train --config g.config --out full >full.log 2>&1 || bad "train: $(tail -3 full.log)"
$PYTHON - <<'PY' && ok || bad "training metrics"
import json, numpy as np, os
m = json.load(open("full/training_metrics.json"))
assert m["status"] == "complete" and m["model"] == "graphsage" and m["parameters"] == 2*17*32 + 32 + 2*32*2 + 2
assert len(m["train_losses"]) == 4 and m["train_losses"][-1] < m["train_losses"][0], m["train_losses"]
g = m["gnn"]
assert g["layout"] == "metis" and g["sampler"] == "page"
ra, io = g["read_amplification"], g["io"]
assert ra["ra_fetch"] > 1 and ra["ra_signal"] > ra["ra_fetch"], ra
assert abs(ra["ra_fetch"] - ra["pages_touched"] * 4096 / (ra["loaded_nodes"] * 68)) < 1e-9
assert io["measured"] and io["bytes_read"] == io["pages_read"] * 4096 and io["pages_read"] >= ra["pages_touched"], io
for k in ("f1", "pr_auc", "roc_auc", "precision_at_0.5pct", "recall_at_1pct", "threshold"):
    assert 0 <= m["test"][k] <= 1, k
assert m["test"]["roc_auc"] > 0.55, m["test"]
l = np.load("full/layout.npz")
assert (l["order"][l["pos"]] == np.arange(6000)).all()
assert not os.path.exists("full/features.bin")
PY

# Exact resume: stopped mid-epoch (step 7 of 4 x ~9) and resumed equals the uninterrupted run.
KNLP_FAULT_TIME_UP_AT="after_step#7" "$KNLP" train --config g.config --out cut --set MAX_TIME=100000 >cut.log 2>&1 || bad "cut run: $(tail -3 cut.log)"
grep -q stopped_time_budget cut/training_metrics.json && ok || bad "the cut run is not marked stopped"
# The premise: the cut fell inside an epoch (the checkpoint holds a part-done epoch).
$PYTHON -c "import json; s = json.load(open('cut/checkpoints/' + open('cut/checkpoints/LATEST').read().strip() + '/state.json')); assert s['in_epoch'] > 0, s['in_epoch']" &&
	ok || bad "premise: the cut run did not stop inside an epoch"
"$KNLP" train --resume cut --set MAX_TIME=100000 >res.log 2>&1 && grep -q "resumed" res.log || bad "resume: $(tail -3 res.log)"
"$KNLP" train --config g.config --out whole --set MAX_TIME=100000 >whole.log 2>&1 || bad "whole run"
$PYTHON - <<'PY' && ok || bad "resumed run differs from the uninterrupted one"
import json
a, b = json.load(open("cut/training_metrics.json")), json.load(open("whole/training_metrics.json"))
for k in ("train_losses", "val_pr_aucs", "val_f1s", "final_iteration", "test"):
    assert a[k] == b[k], (k, a[k], b[k])
assert a["gnn"]["read_amplification"] == b["gnn"]["read_amplification"]
PY
cmp cut/checkpoints/$(cat cut/checkpoints/FINAL)/model.safetensors whole/checkpoints/$(cat whole/checkpoints/FINAL)/model.safetensors && ok || bad "resumed weights differ"
# The FIM sampler carries its importance scores through a resume.
KNLP_FAULT_TIME_UP_AT="after_step#11" "$KNLP" train --config g.config --out fcut --set GNN_SAMPLER_FIM=y --set MAX_TIME=100000 >f1.log 2>&1 &&
	grep -q stopped_time_budget fcut/training_metrics.json && ok || bad "premise: the fim run was not cut: $(tail -2 f1.log)"
"$KNLP" train --resume fcut --set MAX_TIME=100000 >f2.log 2>&1 &&
	"$KNLP" train --config g.config --out fwhole --set GNN_SAMPLER_FIM=y --set MAX_TIME=100000 >f3.log 2>&1 || bad "fim runs: $(tail -2 f1.log f2.log f3.log)"
cmp fcut/checkpoints/$(cat fcut/checkpoints/FINAL)/model.safetensors fwhole/checkpoints/$(cat fwhole/checkpoints/FINAL)/model.safetensors && ok || bad "fim resume differs"

# Layout files and the read-amplification table.
"$KNLP" gnn layout --config g.config --method bfs --out l.npz >lay.log 2>&1 && grep -q "bfs layout" lay.log || bad "gnn layout: $(cat lay.log)"
"$KNLP" train --config g.config --out fromfile --set GNN_LAYOUT_FILE=y --set GNN_LAYOUT_PATH="$T/l.npz" --set GNN_EPOCHS=1 >ff.log 2>&1 || bad "layout from file: $(tail -2 ff.log)"
expect_fail "l.npz: key 'pos' must have shape (7000,) for this graph" "$KNLP" train --config g.config --out e6 --set GNN_SYNTH_NODES=7000 --set GNN_LAYOUT_FILE=y --set GNN_LAYOUT_PATH="$T/l.npz"
expect_fail "CONFIG_GNN_LAYOUT_PATH is empty" "$KNLP" train --config g.config --out e7 --set GNN_LAYOUT_FILE=y
"$KNLP" gnn ra --config g.config --layouts "random bfs" --samplers "neighbor page" --store-dir "$T" --json ra.json >ra.log 2>&1 || bad "gnn ra: $(tail -2 ra.log)"
$PYTHON - <<'PY' && ok || bad "gnn ra table"
import json
r = json.load(open("ra.json"))["rows"]
assert [(x["layout"], x["sampler"]) for x in r] == [("random", "neighbor"), ("random", "page"), ("bfs", "neighbor"), ("bfs", "page")]
d = {(x["layout"], x["sampler"]): x for x in r}
# Page batches over a BFS layout touch fewer pages per loaded node than over a random one.
assert d[("bfs", "page")]["ra_fetch"] < d[("random", "page")]["ra_fetch"], d
assert all(x["bytes_per_batch"] > 0 for x in r)
PY
# The layouts x samplers matrix: 5 x 3 x 3 seeds planned; a small one runs and summarises.
"$KNLP" matrix --config "$TOP/defconfigs/gnn-layouts-samplers" --dry-run >plan.log 2>&1 || bad "matrix dry run: $(tail -2 plan.log)"
[ "$(grep -c 'gnn-.*-.*_adam_none_s' plan.log)" -eq 45 ] && grep -q gnn-rcm-fim_adam_none_s1339 plan.log && ok || bad "matrix plan: $(head -5 plan.log)"
expect_fail "CONFIG_GNN_MATRIX_LAYOUTS: unknown layout 'hilbert'" "$KNLP" matrix --config g.config --set GNN_MATRIX_LAYOUTS="bfs hilbert" --dry-run
mkdir mx && (cd mx && "$KNLP" matrix --config ../g.config --set GNN_EPOCHS=1 --set GNN_MATRIX_LAYOUTS="random bfs" --yes >../mx.log 2>&1) || bad "gnn matrix: $(tail -3 mx.log)"
grep -q "4 of 4\|2 of 2" mx.log && grep -q "Family figures" mx/test_matrix_results_*/summary_report.txt && grep -q "ra_fetch" mx/test_matrix_results_*/summary_report.txt && ok || bad "gnn matrix summary: $(tail -3 mx.log)"
finish

#!/bin/bash
# Data-parallel training on Gloo: 2 processes x accumulation 2 equal 1 process x accumulation 4
# (losses and weights to 1e-6; also in bf16), exact resume of a 2-process run, a killed rank stops the
# other with an error naming it and leaves a checkpoint that resumes on 1 process, bad
# launches, hardware statistics; one launched process equals the plain run bit for bit.
. "$(dirname "$0")/lib.sh"
cd "$T"

cycle_data data || { bad "prepare"; finish; exit 1; }
cat >a.config <<EOC
CONFIG_DEVICE_CPU=y
CONFIG_NUM_THREADS=1
CONFIG_DATA_DIR="$T/data"
CONFIG_GPT2_SIZE_CUSTOM=y
CONFIG_GPT2_N_LAYER=2
CONFIG_GPT2_N_HEAD=2
CONFIG_GPT2_N_EMBD=64
CONFIG_GPT2_BLOCK_SIZE=32
CONFIG_GPT2_DROPOUT="0.0"
CONFIG_BATCH_SIZE=4
CONFIG_GRAD_ACCUM=4
CONFIG_MAX_ITERS=8
CONFIG_WARMUP_ITERS=2
CONFIG_LEARNING_RATE="3e-3"
CONFIG_EVAL_INTERVAL=4
CONFIG_EVAL_SAMPLES=4
CONFIG_CHECKPOINT_INTERVAL=2
CONFIG_KEEP_CHECKPOINTS=10
CONFIG_DDP_TIMEOUT=20
# CONFIG_SAMPLE_AT_EVAL is not set
EOC
export KNLP_PEAK_FLOPS=1e12
"$KNLP" train --config a.config --out one >one.log 2>&1 || bad "1 process: $(tail -3 one.log)"
"$KNLP" launch --nproc 2 -- train --config a.config --set DDP=y --set GRAD_ACCUM=2 --out two >two.log 2>&1 ||
	bad "2 processes: $(tail -5 two.log)"
grep -q "data parallel: 2 processes (gloo), global batch 4 x 2 x 2 = 16" two.log && ok || bad "no data-parallel banner: $(head -5 two.log)"
cat >cmp.py <<'PY'
import json, struct, sys
import numpy as np
def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype=np.float32)
    return out
def final(run):
    return tensors(f"{run}/checkpoints/{open(run + '/checkpoints/FINAL').read().strip()}/model.safetensors")
a, b, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
ma, mb = json.load(open(a + "/training_metrics.json")), json.load(open(b + "/training_metrics.json"))
for k in ("train_losses", "val_losses", "iterations"):
    x, y = np.array(ma["metrics"][k]), np.array(mb["metrics"][k])
    assert x.shape == y.shape and np.abs(x - y).max() <= tol, (k, x, y)
# Logged steps (a run cut by its time budget logs one more, at the cut).
la = {json.loads(l)["step"]: json.loads(l)["loss"] for l in open(a + "/metrics.jsonl") if '"train"' in l}
lb = {json.loads(l)["step"]: json.loads(l)["loss"] for l in open(b + "/metrics.jsonl") if '"train"' in l}
assert la and set(la) <= set(lb) and max(abs(la[i] - lb[i]) for i in la) <= tol, (la, lb)
ta, tb = final(a), final(b)
assert ta.keys() == tb.keys()
d = max(float(np.abs(ta[k] - tb[k]).max()) for k in ta)
assert d <= tol, d
print("max weight difference", d)
PY
$PYTHON cmp.py one two 1e-6 >cmp.log 2>&1 && ok || bad "2 x accum 2 differs from 1 x accum 4: $(tail -3 cmp.log)"
# The same in bf16 (forced: emulated on a CPU without it). The first step's loss is the
# same to the bit (each micro-batch's bf16 forward is the same wherever it runs); the float32
# gradient sums then differ in order by an ulp, and a weight one ulp apart can round an
# activation to a neighbouring bf16 value (2^-8 relative): later losses agree to 1e-3 and
# weights to 1e-2 (measured up to 4e-5 and 3e-4 after 4 steps).
KNLP_CPU_PRECISION=bf16-force "$KNLP" train --config a.config --set MAX_ITERS=4 --set LOG_INTERVAL=1 --out one16 >one16.log 2>&1 ||
	bad "1 process bf16: $(tail -3 one16.log)"
KNLP_CPU_PRECISION=bf16-force "$KNLP" launch --nproc 2 -- train --config a.config --set MAX_ITERS=4 --set LOG_INTERVAL=1 --set DDP=y \
	--set GRAD_ACCUM=2 --out two16 >two16.log 2>&1 || bad "2 processes bf16: $(tail -5 two16.log)"
$PYTHON - >cmp16.log 2>&1 <<'PY' && ok || bad "bf16: 2 x accum 2 differs from 1 x accum 4: $(tail -3 cmp16.log)"
import json, struct, sys
import numpy as np
assert all(json.load(open(r + "/run.json"))[-1]["precision"] == "bf16" for r in ("one16", "two16"))
la = [json.loads(l)["loss"] for l in open("one16/metrics.jsonl") if '"train"' in l]
lb = [json.loads(l)["loss"] for l in open("two16/metrics.jsonl") if '"train"' in l]
assert len(la) == len(lb) >= 3 and la[0] == lb[0], (la, lb)
assert max(abs(x - y) for x, y in zip(la, lb)) <= 1e-3, (la, lb)
src = open("cmp.py").read()
exec(src[src.index("def tensors"):src.index("a, b, tol")])
ta, tb = final("one16"), final("two16")
d = max(float(np.abs(ta[k] - tb[k]).max()) for k in ta)
print("bf16: losses", la, lb, "max weight difference", d)
assert d <= 1e-2, d
PY
# The other launchers start the same processes, so their runs equal knlp launch's bit for
# bit. torchrun (Debian's python3-torch ships it) serves the rendezvous store from its own
# agent at MASTER_PORT; the ranks connect to it as clients. Debian 12's torchrun 1.13 on
# Python 3.11 fails before starting workers unless given --redirects 1 --tee 1
# (docs/distributed.md). Slurm: SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID as srun sets them.
freeport() { $PYTHON -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
if command -v torchrun >/dev/null 2>&1; then
	np=--no-python; torchrun --help 2>/dev/null | grep -q -- --no-python || np=--no_python
	timeout 300 torchrun $np --redirects 1 --tee 1 --log_dir "$T/trlogs" --nproc_per_node=2 --master_addr=127.0.0.1 \
		--master_port="$(freeport)" "$KNLP" train --config a.config --set DDP=y --set GRAD_ACCUM=2 --out tr >tr.log 2>&1 ||
		bad "torchrun: $(grep -i error tr.log | head -3)"
	grep -q "data parallel: 2 processes (gloo)" tr.log && $PYTHON cmp.py two tr 0 >cmptr.log 2>&1 && ok ||
		bad "torchrun's run differs from knlp launch's: $(tail -3 cmptr.log)"
fi
sp=$(freeport)
for r in 0 1; do
	SLURM_PROCID=$r SLURM_NTASKS=2 SLURM_LOCALID=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$sp \
		timeout 300 "$KNLP" train --config a.config --set DDP=y --set GRAD_ACCUM=2 --out sl >sl$r.log 2>&1 &
done
wait
grep -q "data parallel: 2 processes (gloo)" sl0.log && $PYTHON cmp.py two sl 0 >cmpsl.log 2>&1 && ok ||
	bad "Slurm-launched run differs from knlp launch's: $(tail -3 sl0.log sl1.log cmpsl.log)"
# One launched process takes the whole data-parallel path (process group, buckets) and
# must equal the plain run exactly: weights bit for bit.
RANK=0 WORLD_SIZE=1 "$KNLP" train --config a.config --set DDP=y --out w1 >w1.log 2>&1 || bad "world 1: $(tail -3 w1.log)"
grep -q "data parallel: 1 processes (gloo)" w1.log && $PYTHON cmp.py one w1 0 >cmp1.log 2>&1 &&
	cmp one/checkpoints/iter_00000008/model.safetensors w1/checkpoints/iter_00000008/model.safetensors && ok ||
	bad "world 1 through the process group differs from the plain run: $(tail -3 cmp1.log) $(head -3 w1.log)"
$PYTHON - <<'PY' && ok || bad "ddp metrics, hardware statistics"
import json
m = json.load(open("two/training_metrics.json"))
d = m["ddp"]
assert d["world_size"] == 2 and d["backend"] == "gloo" and d["global_batch"] == 16 and d["syncs"] == 8, d
assert d["replica_weight_checksum_spread"] == 0, d
assert d["allreduce_bytes"] > 0 and d["comm_wait_seconds"] >= 0
h = json.load(open("two/hw_stats.json"))
s = h["samples"][0]
for k in ("timestamp", "memory_used", "memory_total", "utilization", "power", "temperature", "elapsed_seconds", "rss_mb", "cpu_percent"):
    assert k in s, k
assert m["hardware"]["rss_peak_mb"] > 10 and m["hardware"]["samples"] >= 2, m["hardware"]
PY
# Without overlap the result is the same.
"$KNLP" launch --nproc 2 -- train --config a.config --set DDP=y --set GRAD_ACCUM=2 --set DDP_OVERLAP=n --out two-noov >noov.log 2>&1 &&
	$PYTHON cmp.py two two-noov 1e-6 >/dev/null 2>&1 && ok || bad "DDP_OVERLAP=n differs: $(tail -3 noov.log)"

# Exact resume of a 2-process run: stopped at step 4 (time budget), resumed, equals "two".
KNLP_FAULT_TIME_UP_AT="after_step#4" "$KNLP" launch --nproc 2 -- train --config a.config --set DDP=y --set GRAD_ACCUM=2 \
	--set MAX_TIME=100000 --out cut >cut.log 2>&1 || bad "cut run: $(tail -3 cut.log)"
"$KNLP" launch --nproc 2 -- train --resume cut --set MAX_TIME=100000 >res.log 2>&1 || bad "resume: $(tail -3 res.log)"
grep -q "resumed" res.log && $PYTHON cmp.py two cut 1e-6 >cmp2.log 2>&1 && ok || bad "resumed 2-process run differs: $(tail -n 3 cmp2.log res.log)"

# A rank killed mid-run: the other stops with an error naming it, within the timeout; the
# checkpoint of step 2 resumes on one process with the same global batch.
start=$(date +%s)
KNLP_FAULT_RANK=1 KNLP_FAULT_KILL_AT="after_step#3" "$KNLP" launch --nproc 2 --grace 60 -- train --config a.config \
	--set DDP=y --set GRAD_ACCUM=2 --out killed >killed.log 2>&1 && bad "a killed rank went unnoticed"
took=$(( $(date +%s) - start ))
grep -q "rank 1 of 2 is gone" killed.log && grep -q "launch: rank 1 (pid [0-9]*) was killed by signal 9" killed.log && ok ||
	bad "no clear error for the killed rank: $(cat killed.log)"
[ "$took" -lt 50 ] && ok || bad "the surviving rank took $took s to stop"
[ "$(cat killed/checkpoints/LATEST)" = "iter_00000002" ] && ok || bad "latest checkpoint: $(cat killed/checkpoints/LATEST)"
"$KNLP" train --resume killed --set GRAD_ACCUM=4 --force >kres.log 2>&1 && $PYTHON cmp.py one killed 1e-6 >cmp3.log 2>&1 && ok ||
	bad "resume on 1 process after the kill: $(tail -n 3 kres.log cmp3.log)"

# The launcher killed with SIGKILL: both ranks stop (they watch their parent), the last
# complete checkpoint resumes. The premise is checked: the launcher was killed while its
# ranks were training (a checkpoint written, none final).
"$KNLP" launch --nproc 2 -- train --config a.config --set DDP=y --set GRAD_ACCUM=2 --set MAX_ITERS=100000 \
	--set CHECKPOINT_INTERVAL=1 --out orphan >orphan.log 2>&1 &
lpid=$!
for i in $(seq 1 600); do [ -e orphan/checkpoints/LATEST ] && break; sleep 0.1; done
ranks=$(pgrep -f -- "train --config a.config --set DDP=y --set GRAD_ACCUM=2 --set MAX_ITERS=100000" | grep -v "^$lpid$" | tr '\n' ' ')
kill -9 $lpid
wait $lpid 2>/dev/null
[ -e orphan/checkpoints/LATEST ] && [ ! -e orphan/checkpoints/FINAL ] && [ "$(echo $ranks | wc -w)" -eq 2 ] && ok ||
	bad "premise: the launcher was not killed while 2 ranks trained (ranks '$ranks', $(ls orphan/checkpoints 2>&1))"
alive=$ranks
for i in $(seq 1 60); do
	alive=$(for p in $ranks; do kill -0 $p 2>/dev/null && echo $p; done)
	[ -z "$alive" ] && break
	sleep 0.5
done
[ -z "$alive" ] && ok || { bad "ranks $alive still alive 30 s after their launcher was killed"; kill -9 $alive 2>/dev/null; }
"$KNLP" launch --nproc 2 -- train --resume orphan --set MAX_ITERS=$(( $(cat orphan/checkpoints/LATEST | sed 's/iter_0*//') + 2 )) \
	>ores.log 2>&1 && grep -q resumed ores.log && grep -q '"status": "complete"' orphan/training_metrics.json && ok ||
	bad "resume after the launcher was killed: $(tail -3 ores.log)"

# Bad launches: clear errors before training.
expect_fail "MASTER_ADDR is not set" env WORLD_SIZE=2 RANK=0 "$KNLP" train --config a.config --set DDP=y --out e1
expect_fail "MASTER_PORT is not set" env WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 "$KNLP" train --config a.config --set DDP=y --out e1
expect_fail "but CONFIG_DDP is not set" env WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 "$KNLP" train --config a.config --out e1
expect_fail "CONFIG_DDP_BACKEND_NCCL needs CUDA devices" env WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29999 \
	"$KNLP" train --config a.config --set DDP=y --set DDP_BACKEND_NCCL=y --out e1
expect_fail "RANK=3 is outside [0, WORLD_SIZE=2)" env WORLD_SIZE=2 RANK=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 "$KNLP" train --config a.config --set DDP=y --out e1
# Port in use: something already listens on it.
port=$($PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$PYTHON -c "import socket, time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0); s.bind(('127.0.0.1', $port)); s.listen(); time.sleep(30)" &
lp=$!
sleep 0.5
expect_fail "port in use" "$KNLP" launch --nproc 2 --port "$port" --grace 5 -- train --config a.config --set DDP=y --set DDP_TIMEOUT=5 --out e2
kill $lp 2>/dev/null
# Mismatched configurations across ranks are caught at the rendezvous.
port=$($PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
env WORLD_SIZE=2 RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$KNLP" train --config a.config --set DDP=y --set SEED=5 --out e3 >r1.log 2>&1 &
expect_fail "rank 1's configuration differs from rank 0's" env WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
	"$KNLP" train --config a.config --set DDP=y --out e3
wait
grep -q "configuration differs" r1.log && ok || bad "rank 1 did not report the mismatch: $(cat r1.log)"
finish

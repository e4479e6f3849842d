#!/bin/bash
# knlp's attention variants and true Fisher against independent eager PyTorch
# (scripts/ref/variants_eager.py, Debian's python3-torch), written from the original's
# formulas: MLA, KVSplice, and the SDPA output gate with reciprocal attention, each on
# weights the script draws itself (not libtorch's initialisation), must give knlp's
# evaluation loss to 1e-5 nats; the true Fisher's labels, drawn by inverse CDF from the
# model's softmax with the documented splitmix64 stream, and both Fisher diagonals must
# equal the reference element for element (1e-4 of each tensor's largest value).
#
# The reference's own numbers are checked in (tests/golden/reference.json, written by this
# script with --update), so a drift of the reference shows as well as one of knlp.
. "$(dirname "$0")/lib.sh"
UPDATE=${2:-}
GOLDEN=$TOP/tests/golden/reference.json
REF="$PYTHON $TOP/scripts/ref/variants_eager.py"
cd "$T"
mkdir -p d
$REF tokens d/train.bin 3000 1 && $REF tokens d/val.bin 601 2 || bad "tokens"
echo '{"tokenizer": "byte", "vocab_size": 256, "eot_token": -1}' >d/meta.json
printf 'CONFIG_DEVICE_CPU=y\n' >g.config
common=(--config g.config --set GPT2_SIZE_CUSTOM=y --set GPT2_N_LAYER=2 --set GPT2_N_HEAD=2 --set GPT2_N_EMBD=64
	--set GPT2_BLOCK_SIZE=16 --set GPT2_VOCAB_SIZE=256 --set GPT2_MLA_D_LATENT=32 --set GPT2_KVSPLICE_DIM=16
	--set GPT2_RA_LAYERS=1 --set GPT2_RA_HEADS=1 --set BATCH_SIZE=2 --set MAX_ITERS=1 --set WARMUP_ITERS=1
	--set EVAL_INTERVAL=100 --set EVAL_SAMPLES=1 --set SAMPLE_AT_EVAL=n --set FIM_ATTENTION_AT_EVAL=n
	--set NUM_THREADS=1 --set DATA_DIR="\"$T/d\"")
echo '{}' >got.json
for v in MLA KVSPLICE RA_GATE; do
	KNLP_PEAK_FLOPS=1e9 "$KNLP" train "${common[@]}" --set GPT2_ATTN_$v=y --out r_$v >r_$v.log 2>&1 ||
		{ bad "train $v: $(tail -2 r_$v.log)"; continue; }
	ck=r_$v/checkpoints/iter_00000001
	$REF weights $ck 11 || { bad "weights $v"; continue; }
	"$KNLP" eval --checkpoint r_$v --data d >k_$v.log 2>/dev/null || { bad "eval $v: $(cat k_$v.log)"; continue; }
	$REF forward $ck d/val.bin >e_$v.log || { bad "reference $v: $(cat e_$v.log)"; continue; }
	$PYTHON - $v <<'PY' && ok || bad "$v: knlp $(tail -1 k_$v.log) vs reference $(cat e_$v.log)"
import json, sys
v = sys.argv[1]
k = json.loads(open(f"k_{v}.log").read().strip().splitlines()[-1])
e = json.loads(open(f"e_{v}.log").read())
assert k["tokens"] == e["tokens"] == 600, (k["tokens"], e["tokens"])
assert abs(k["val_loss"] - e["val_loss"]) < 1e-5, (k["val_loss"], e["val_loss"])
g = json.load(open("got.json")); g[v] = e["val_loss"]; json.dump(g, open("got.json", "w"))
PY
done
# The true Fisher on the gated model with reciprocal attention: 8 windows of 16 tokens.
"$KNLP" fim score --checkpoint r_RA_GATE --data d --split val --chunks 8 --seq 16 --seed 7 --out f >f.log 2>&1 ||
	bad "fim score: $(tail -2 f.log)"
$REF fisher r_RA_GATE/checkpoints/iter_00000001 d/val.bin f/fisher.safetensors >fr.log 2>&1 && ok ||
	bad "fisher vs reference: $(tail -3 fr.log)"
$PYTHON - "$(cat fr.log)" <<'PY' || bad "fisher record"
import json, sys
r = json.loads(sys.argv[1]); g = json.load(open("got.json")); g["fisher_true_vs_empirical"] = r["true_vs_empirical"]
json.dump(g, open("got.json", "w"))
PY
if [ "$UPDATE" = --update ]; then
	$PYTHON -c "import json; json.dump(json.load(open('got.json')), open('$GOLDEN', 'w'), indent=1, sort_keys=True)"
	echo "wrote $GOLDEN"
fi
$PYTHON - "$GOLDEN" <<'PY' && ok || bad "the reference drifted from $GOLDEN: $(cat got.json)"
import json, sys
want, got = json.load(open(sys.argv[1])), json.load(open("got.json"))
assert sorted(want) == sorted(got), (sorted(want), sorted(got))
for k in want:
    assert abs(want[k] - got[k]) <= 1e-6 * max(1, abs(want[k])), (k, want[k], got[k])
PY
finish

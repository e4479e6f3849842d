#!/bin/bash
# knlp dashboard against two runs and a 2 x 2 matrix this test trains: the API (byte-offset
# reads of metrics.jsonl with a torn tail and a resume's cut, the matrix statistics checked
# against scipy's Welch interval), then every page in a real browser (Debian's headless
# Chromium driven over the DevTools protocol, tests/browser/cdp.py): table cells equal the
# values in the files, charts are drawn, a line appended to metrics.jsonl while the page is
# open appears on it, no sparsity plot for a matrix without pruning; the self-contained
# export shows the same from a file:// URL. KNLP_SCREENSHOTS=DIR keeps screenshots of each
# page (docs/img/dashboard_*.png come from here).
. "$(dirname "$0")/lib.sh"
cd "$T"
cycle_data data
tiny_gpt2 base.config "$T/data" "CONFIG_OUTPUT_DIR=\"$T/runs\""
# a: Fisher scoring and the comparison with Adam's v at its end, and a q8_0 GGUF export with
# its plan; b: magnitude pruning to 50% (research views of the run page).
"$KNLP" train --config base.config --set RUN_NAME=a --set FIM_SCORE=y --set FIM_COMPARE=y --set FIM_CHUNKS=4 >a.log 2>&1 ||
	bad "run a: $(tail -2 a.log)"
"$KNLP" export --checkpoint runs/a --format gguf --type q8_0 --out runs/a/model.gguf >export_a.log 2>&1 ||
	bad "gguf export: $(tail -2 export_a.log)"
"$KNLP" quantize --checkpoint runs/a --base q8_0 --out runs/a/quant/q8_0 >q1.log 2>&1 || bad "quantize: $(tail -2 q1.log)"
"$KNLP" quantize --checkpoint runs/a --base q4_0 --upgrade q8_0 --roles ffn_down --pct 50 --plan magnitude \
	--out runs/a/quant/q4_0 >q2.log 2>&1 || bad "quantize: $(tail -2 q2.log)"
"$KNLP" train --config base.config --set RUN_NAME=b --set SEED=7 --set LEARNING_RATE=\"1e-3\" --set PRUNING_MAGNITUDE=y \
	--set PRUNING_TARGET_SPARSITY=\"0.5\" --set PRUNING_WARMUP=5 --set PRUNING_FREQUENCY=2 --set PRUNING_RAMP_END=15 >b.log 2>&1 ||
	bad "run b: $(tail -2 b.log)"
"$KNLP" matrix --config base.config --set OPTIMIZER_MODE_MULTIPLE=y --set OPTIMIZER_ENABLE_SGD=y --set MATRIX_SEEDS=2 \
	--set 'MATRIX_BASELINE="gpt2_adamw_none"' -y --out tm >tm.log 2>&1 || bad "matrix: $(tail -3 tm.log)"

# A pruned matrix: magnitude and movement to 50%, one seed (the mask-overlap view).
"$KNLP" matrix --config base.config --set PRUNING_MODE_MULTIPLE=y --set PRUNING_ENABLE_NONE=n --set SPARSITY_ENABLE_70=n \
	--set SPARSITY_ENABLE_90=n --set PRUNING_WARMUP=5 --set PRUNING_FREQUENCY=2 --set PRUNING_RAMP_END=15 -y --out tp \
	>tp.log 2>&1 || bad "pruned matrix: $(tail -3 tp.log)"

# Bad input: one clear line each.
expect_fail "no_such_dir: no such folder" "$KNLP" dashboard --port 0 no_such_dir
expect_fail "no_such_dir: no such folder" "$KNLP" dashboard --export x.html no_such_dir

"$KNLP" dashboard --port 0 runs tm tp >dash.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; [ -n "${KEEP_T:-}" ] || rm -rf "$T"' EXIT
for _ in $(seq 50); do grep -q "^dashboard: http" dash.log && break; sleep 0.2; done
port=$(grep -o '127.0.0.1:[0-9]*' dash.log | cut -d: -f2)
[ -n "$port" ] && ok || bad "the server did not start: $(cat dash.log)"
expect_fail "cannot listen on 127.0.0.1:$port" "$KNLP" dashboard --port "$port" runs

"$KNLP" dashboard --export report.html runs tm tp >export.log 2>&1 && [ -s report.html ] && ok ||
	bad "export: $(tail -2 export.log)"

$PYTHON - "$port" "$TOP" "${KNLP_SCREENSHOTS:-}" >check.log 2>&1 <<'PY' && ok || bad "dashboard checks: $(tail -5 check.log)"
import json, os, statistics, sys, urllib.error, urllib.request
sys.path.insert(0, os.path.join(sys.argv[2], "tests", "browser"))
from cdp import Browser
from scipy import stats

port, shots = sys.argv[1], sys.argv[3]
base = f"http://127.0.0.1:{port}"
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def get(path):
    return json.loads(opener.open(base + path).read())
def status(path):
    try:
        opener.open(base + path)
        return 200
    except urllib.error.HTTPError as e:
        return e.code

# ---- the API
lst = get("/api/runs")
ids = sorted(r["id"] for r in lst["runs"])
plan = json.load(open("tm/plan.json"))["runs"]
assert "runs/a" in ids and "runs/b" in ids, ids
assert all(f"tm/{p['test_id']}" in ids for p in plan), (ids, plan)
m = [x for x in lst["matrices"] if x["id"] == "tm"]
assert m and m[0]["runs"] == 4 and m[0]["complete"] == 4, lst["matrices"]
ra = [r for r in lst["runs"] if r["id"] == "runs/a"][0]
tm_a = json.load(open("runs/a/training_metrics.json"))
assert ra["status"] == "complete" and ra["step"] == 20 and ra["best"] == tm_a["quality"]["best"], ra
assert status("/api/run?id=nope") == 404 and status("/api/matrix?id=nope") == 404
assert status("/api/run?id=runs/a&since=abc") == 400

# byte offsets over a copy of run a: a torn tail waits for its end; a cut restarts
jl = "runs/a/metrics.jsonl"
orig = open(jl).read()
lines = orig.splitlines(keepends=True)
d = get("/api/run?id=runs/a&since=0")
assert len(d["records"]) == len(lines) and d["offset"] == len(orig.encode()), (len(d["records"]), len(lines))
full = '{"type":"train","step":99,"loss":0.5}\n'
with open(jl, "a") as f:
    f.write(full + '{"type":"train","st')
d2 = get(f"/api/run?id=runs/a&since={d['offset']}")
assert [r["step"] for r in d2["records"]] == [99] and d2["offset"] == d["offset"] + len(full), d2["offset"]
with open(jl, "a") as f:
    f.write('ep":100,"loss":0.25}\n')
d3 = get(f"/api/run?id=runs/a&since={d2['offset']}")
assert [r["step"] for r in d3["records"]] == [100], d3["records"]
open(jl, "w").write("".join(lines[:3]))
d4 = get(f"/api/run?id=runs/a&since={d3['offset']}")
assert d4["reset"] and len(d4["records"]) == 3, d4
open(jl, "w").write(orig)

# the matrix statistics against scipy's Welch interval
mt = get("/api/matrix?id=tm")
res = json.load(open("tm/all_results.json"))
q = {}
for e in res:
    q.setdefault(e["config_id"], []).append(e["quality"])
assert mt["baseline"] == "gpt2_adamw_none" and len(mt["rows"]) == 2, mt
for row in mt["rows"]:
    v = q[row["config_id"]]
    assert row["n"] == 2 and abs(row["mean"] - statistics.mean(v)) < 1e-12 and abs(row["sd"] - statistics.stdev(v)) < 1e-12, row
    if row["config_id"] != "gpt2_adamw_none":
        a, b = v, q["gpt2_adamw_none"]
        va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        h = stats.t.ppf(0.975, df) * (va + vb) ** 0.5
        diff = statistics.mean(a) - statistics.mean(b)
        assert abs(row["diff"] - diff) < 1e-12 and abs(row["lo"] - (diff - h)) < 1e-9 and abs(row["hi"] - (diff + h)) < 1e-9, (row, diff, h)
assert mt["pruned"] is False
# curves: the training loss per step averaged over the seeds of a configuration
losses = {}
for e in res:
    for line in open(os.path.join("tm", e["test_id"], "metrics.jsonl")):
        r = json.loads(line)
        if r["type"] == "train":
            losses.setdefault(e["config_id"], {}).setdefault(r["step"], []).append(r["loss"])
for cid, by_step in losses.items():
    c = mt["train_curves"][cid]
    assert c["steps"] == sorted(by_step) and all(abs(m - statistics.mean(by_step[s])) < 1e-12 for s, m in zip(c["steps"], c["mean"])), cid

# mask overlap against an independent reading of the checkpoints' safetensors
def masks(run):
    ck = os.path.join(run, "checkpoints", open(os.path.join(run, "checkpoints", "FINAL")).read().strip())
    raw = open(os.path.join(ck, "optimizer.safetensors"), "rb").read()
    n = int.from_bytes(raw[:8], "little")
    head = json.loads(raw[8:8 + n])
    kept = []
    for name in sorted(k for k in head if k.startswith("mask.")):
        t = head[name]
        a, b = t["data_offsets"]
        assert t["dtype"] in ("BOOL", "U8"), t["dtype"]
        kept += [x != 0 for x in raw[8 + n + a:8 + n + b]]
    return kept
tp = {e["config_id"]: "tp/" + e["test_id"] for e in json.load(open("tp/all_results.json"))}
assert sorted(tp) == ["gpt2_adamw_magnitude_50", "gpt2_adamw_movement_50"], tp
ma, mb = masks(tp["gpt2_adamw_magnitude_50"]), masks(tp["gpt2_adamw_movement_50"])
both = sum(x and y for x, y in zip(ma, mb)); either = sum(x or y for x, y in zip(ma, mb))
mo = get("/api/masks?id=tp")["pairs"]
assert len(mo) == 1 and abs(mo[0]["jaccard"] - both / either) < 1e-12, (mo, both / either)
p, q = sum(ma) / len(ma), sum(mb) / len(mb)
assert abs(p - 0.5) < 0.02 and abs(mo[0]["independent"] - p * q / (p + q - p * q)) < 1e-12, (p, mo)

# ---- the pages, in Chromium
B = Browser()
def shot(name):
    if shots:
        B.screenshot(os.path.join(shots, f"dashboard_{name}.png"))
def value(sel):
    return B.eval(f'(document.querySelector({json.dumps(sel)}) || {{dataset: {{}}}}).dataset.value')

B.open(base + "/#/")
B.wait('document.querySelectorAll("#runs tbody tr").length >= 6')
assert float(value('tr[data-run="runs/a"] td[data-col=best]')) == tm_a["quality"]["best"]
assert B.eval('document.querySelector("tr[data-matrix=tm]") !== null')
shot("runs")

B.open(base + "/#/run/runs%2Fa")
B.wait('document.querySelectorAll("canvas").length >= 5')
recs = [json.loads(l) for l in open(jl)]
last = [r for r in recs if r["type"] == "train"][-1]
B.wait('document.querySelector("tr[data-k=loss] td") !== null')
assert float(value("tr[data-k=loss] td")) == last["loss"], (value("tr[data-k=loss] td"), last)
assert float(value("tr[data-k=best] td")) == tm_a["quality"]["best"]
assert B.eval('document.querySelectorAll(".sample").length') == 3
assert "CONFIG_GPT2_N_EMBD=64" in B.eval('document.querySelector("#config").textContent')
# research views: attention Fisher (eval records), Fisher vs v (fim/compare.json), the plan
cmp = json.load(open("runs/a/fim/compare.json"))
B.wait('document.querySelector("[data-section=fisher] table") !== null')
assert float(value('[data-fisher=empirical] td[data-col=spearman]')) == cmp["fisher"]["empirical"]["global"]["raw"]["spearman"]
assert B.eval('document.querySelectorAll("[data-section=attention] canvas").length') == 3
plan = json.load(open("runs/a/model.gguf.plan.json"))
sec = B.eval('[...document.querySelectorAll("section[data-section^=quant]")].map(e => e.querySelector("h2").textContent + "|" + e.dataset.section).join(";")')
key = [x.split("|")[1] for x in sec.split(";") if x.startswith("Quantization plan model.gguf.plan.json")][0]
assert B.eval(f'document.querySelectorAll("[data-section={key}] tr[data-tensor]").length') == len(plan["tensors"]), sec
assert float(B.eval(f'document.querySelector("[data-section={key}] [data-bpw]").dataset.bpw')) == plan["bits_per_weight"]
assert B.eval('document.querySelector("[data-section=pruning]") === null'), "a sparsity view for a dense run"
for qd in ("q8_0", "q4_0"):
    qr = json.load(open(f"runs/a/quant/{qd}/quantize.json"))
    row = f'[data-section=quantize] tr[data-quantize="quant/{qd}/quantize.json"]'
    assert float(value(row + " td[data-col=ppl]")) == qr["val_perplexity"], qd
    assert float(value(row + " td[data-col=bpw]")) == qr["bits_per_weight"], qd
assert B.eval('document.querySelector("[data-section=quantize] canvas") !== null')
differs = B.eval('document.querySelector("#differs").textContent')
assert "CONFIG_GPT2_N_EMBD (" in differs and "-> 64)" in differs and "CONFIG_MAX_ITERS (2000 -> 20)" in differs, differs
shot("run")
# live: a step appended while the page is open, then a torn line that must not break it
with open(jl, "a") as f:
    f.write('{"type":"train","step":21,"loss":1.2345,"lr":0.0001,"grad_norm":1.0,"elapsed":99.0}\n{"type":"tr')
B.wait('document.querySelector("tr[data-k=loss] td").dataset.value === "1.2345"', 15)
assert B.eval('document.querySelector("tr[data-k=step] td").dataset.value') == "21"
assert not B.eval('document.querySelector("#live").textContent.startsWith("error")')
open(jl, "w").write(orig)

B.open(base + "/#/run/runs%2Fb")
B.wait('document.querySelector("[data-section=pruning] canvas") !== null')
shot("run_pruned")
B.open(base + "/#/compare/runs%2Fa,runs%2Fb")
B.wait('document.querySelectorAll("#legend tbody tr").length == 2 && document.querySelectorAll("canvas").length >= 2')
shot("compare")

B.open(base + "/#/matrix/tm")
B.wait('document.querySelectorAll("#rows tbody tr").length == 2')
for row in mt["rows"]:
    got = float(value(f'tr[data-config="{row["config_id"]}"] td[data-col=mean]'))
    assert got == row["mean"], (got, row)
assert B.eval('document.querySelector("[data-chart=sparsity]") === null'), "a sparsity plot without pruning"
assert B.eval('document.querySelector("[data-chart=means] canvas") !== null')
assert B.eval('document.querySelector("[data-chart=train_curves] canvas") !== null and document.querySelector("[data-chart=eval_curves] canvas") !== null'.replace(" and ", " && "))
assert B.eval('document.querySelectorAll("#mruns tbody tr").length') == 4
kv = [e["figures"]["kv_cache_values_per_token"] for e in res if e["config_id"] == "gpt2_sgd_none"]
assert float(value('#figures tr[data-config="gpt2_sgd_none"] td[data-col=kv_cache_values_per_token]')) == statistics.mean(kv)
shot("matrix")

B.open(base + "/#/matrix/tp")
B.wait('document.querySelector("[data-section=masks] td[data-col=jaccard]") !== null')
assert float(value("[data-section=masks] td[data-col=jaccard]")) == mo[0]["jaccard"]
assert B.eval('document.querySelector("[data-chart=sparsity] canvas") !== null'), "no sparsity plot for a pruned matrix"
shot("matrix_pruned")

# the self-contained export, from a file:// URL
B.open("file://" + os.path.abspath("report.html") + "#/run/runs%2Fa")
B.wait('document.querySelectorAll("canvas").length >= 5')
assert float(value("tr[data-k=loss] td")) == last["loss"]
assert B.eval('document.querySelector("#live").textContent.startsWith("report of")')
B.open("file://" + os.path.abspath("report.html") + "#/matrix/tp")
B.wait('document.querySelector("[data-section=masks] td[data-col=jaccard]") !== null')
B.close()
print("ok")
PY
kill $server 2>/dev/null
wait $server 2>/dev/null
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]

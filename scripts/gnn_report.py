#!/usr/bin/python3
"""Tables and the figure of docs/gnn.md from scripts/gnn_study.sh's folder.
usage: gnn_report.py OUTDIR [FIGURE]"""
import glob, json, os, statistics, sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

out = sys.argv[1]
fig_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(out, "gnn_study.png")
LAYOUTS = ["identity", "random", "bfs", "metis", "rcm"]
SAMPLERS = ["neighbor", "page", "fim"]


def ms(v, f="{:.4f}"):
    if not v:
        return "-"
    if len(v) == 1:
        return f.format(v[0])
    return (f + " ± " + f).format(statistics.mean(v), statistics.stdev(v))


scales = {}
lines = []
for pct in ("1", "10"):
    d = os.path.join(out, "pct" + pct)
    res = sorted(glob.glob(os.path.join(d, "test_matrix_results_*", "all_results.json")))
    if not res:
        continue
    cells = {}
    entries = [e for r in res for e in json.load(open(r))]  # every results folder of the scale
    for e in entries:
        if e.get("status") != "complete":
            continue
        f = e["figures"]  # the GNN family's figures (training_metrics.json "figures")
        c = cells.setdefault((f["layout"], f["sampler"]), {k: [] for k in
                             ("f1", "pr", "roc", "ra_f", "ra_s", "kib", "ms", "t")})
        c["f1"].append(f["test_f1"]); c["pr"].append(e["quality"]); c["roc"].append(f["test_roc_auc"])
        c["ra_f"].append(f["ra_fetch"]); c["ra_s"].append(f["ra_signal"])
        c["kib"].append(f["kib_per_batch"]); c["ms"].append(f["fetch_ms_per_batch"])
        c["t"].append(e["elapsed_time"])
    scales[pct] = cells
    ra = json.load(open(os.path.join(d, "ra.json"))) if os.path.exists(os.path.join(d, "ra.json")) else None
    lines.append(f"\n### {pct}% of DGraphFin ({ra['nodes'] if ra else '?'} nodes, {ra['edges'] if ra else '?'} edges)\n")
    lines.append("| layout | sampler | RA_fetch | RA_signal | KiB read / batch | test F1 | test PR-AUC | test ROC-AUC |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for l in LAYOUTS:
        for s in SAMPLERS:
            c = cells.get((l, s))
            if not c:
                continue
            lines.append(f"| {l} | {s} | {statistics.mean(c['ra_f']):.2f} | {statistics.mean(c['ra_s']):.2f} | "
                         f"{statistics.mean(c['kib']):.0f} | {ms(c['f1'])} | {ms(c['pr'])} | "
                         f"{ms(c['roc'], '{:.3f}')} |")
    if ra:
        lines.append("\nSampling only (`knlp gnn ra`, one epoch, no training):\n")
        lines.append("| layout | sampler | layout build s | RA_fetch | RA_signal | pages / batch | nodes / batch | KiB read / batch | reads / batch | fetch ms / batch | batches/s |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in ra["rows"]:
            lines.append(f"| {r['layout']} | {r['sampler']} | {r['layout_seconds']:.2f} | {r['ra_fetch']:.2f} | "
                         f"{r['ra_signal']:.2f} | {r['pages_per_batch']:.0f} | {r['loaded_per_batch']:.0f} | "
                         f"{r['bytes_per_batch'] / 1024:.0f} | {r['reads_per_batch']:.0f} | {r['fetch_ms_per_batch']:.2f} | "
                         f"{r['sampler_batches_per_second']:.0f} |")

report = "\n".join(lines) + "\n"
open(os.path.join(out, "report.md"), "w").write(report)
print(report)

if scales:
    fig, ax = plt.subplots(len(scales), 3, figsize=(15, 4 * len(scales)), squeeze=False)
    w = 0.27
    for row, (pct, cells) in enumerate(sorted(scales.items(), key=lambda kv: int(kv[0]))):
        for col, (key, title) in enumerate((("ra_s", "RA_signal (lower is better)"), ("kib", "KiB read per batch (measured)"),
                                            ("pr", "test PR-AUC (mean ± sd, 3 seeds)"))):
            a = ax[row][col]
            for k, s in enumerate(SAMPLERS):
                xs, ys, es = [], [], []
                for i, l in enumerate(LAYOUTS):
                    c = cells.get((l, s))
                    if c:
                        xs.append(i + (k - 1) * w); ys.append(statistics.mean(c[key]))
                        es.append(statistics.stdev(c[key]) if len(c[key]) > 1 else 0)
                a.bar(xs, ys, w, yerr=es if key == "pr" else None, label=s, capsize=2)
            a.set_xticks(range(len(LAYOUTS)), LAYOUTS)
            a.set_title(f"{pct}%: {title}")
            if key == "pr":
                a.axhline(0.0127, color="grey", ls=":", lw=1, label="random (DGraphFin)")
            a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(fig_path, dpi=90)
    print("figure:", fig_path)

#!/usr/bin/python3
"""Summarise a pruning study (scripts/prune_study.sh): per method mean +/- std of the final
validation perplexity and wall time over seeds, optimizer-state and pruning-buffer bytes,
bitter8's 1e-5 floor (fraction of v below it) and the rank correlation of bitter7/bitter8
scores with |w|. Writes OUT/summary.json, OUT/prune_study.png and OUT/report.html."""
import base64
import glob
import json
import math
import os
import subprocess
import sys

import numpy as np

OUT = sys.argv[1] if len(sys.argv) > 1 else "prune-study"
ORDER = ["dense", "magnitude", "movement", "bitter0", "bitter7", "bitter8"]
KNLP = os.environ.get("KNLP", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "knlp"))


def knlp(*args):
    """One JSON line from the knlp binary: its statistics and analyses are the ones the
    matrix summaries and the pruner use, so the report and the binary cannot disagree."""
    out = subprocess.run([KNLP, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def state_analysis(run):
    """v floor and rank correlations over the prunable weights of a run's final checkpoint
    (`knlp prune analyze`: bitter7 and bitter8 scored by knlp's own pruner)."""
    j = knlp("prune", "analyze", "--checkpoint", run, "--which", "final")
    j.pop("checkpoint", None)
    j.pop("spearman_sample", None)
    return j


def paired_interval(a, b):
    """`knlp stats interval --paired`: the t interval of mean(a - b) over paired seeds."""
    return knlp("stats", "interval", "--paired", "--a", ",".join(map(repr, a)), "--b", ",".join(map(repr, b)))


def main():
    runs = {}
    for path in sorted(glob.glob(os.path.join(OUT, "*-seed*/training_metrics.json"))):
        run = os.path.dirname(path)
        method = os.path.basename(run).split("-seed")[0]
        with open(path) as f:
            m = json.load(f)
        if m.get("status") != "complete":
            continue
        runs.setdefault(method, []).append((run, m))
    if not runs:
        sys.exit(f"{OUT}: no complete runs (run scripts/prune_study.sh first)")
    summary = {"methods": {}}
    for method in [m for m in ORDER if m in runs] + sorted(set(runs) - set(ORDER)):
        rs = runs[method]
        ppl = np.array([m["metrics"]["val_perplexities"][-1] for _, m in rs])  # the GPT-2 names
        loss = np.array([m["metrics"]["val_losses"][-1] for _, m in rs])
        wall = np.array([m["total_time"] for _, m in rs])
        m0 = rs[0][1]
        pr = m0.get("pruning", {})
        summary["methods"][method] = {
            "seeds": len(rs),
            "iterations": m0["progress"]["step"],
            "val_ppl_mean": float(ppl.mean()),
            "val_ppl_std": float(ppl.std(ddof=1)) if len(rs) > 1 else 0.0,
            "val_loss_mean": float(loss.mean()),
            "val_ppl_each": [float(x) for x in ppl],
            "wall_s_mean": float(wall.mean()),
            "wall_s_std": float(wall.std(ddof=1)) if len(rs) > 1 else 0.0,
            "final_sparsity": pr.get("final_sparsity", 0.0),
            "optimizer_state_bytes": m0.get("optimizer_state_bytes"),
            "mask_bytes": pr.get("mask_bytes", 0),
            "w0_bytes": pr.get("w0_bytes", 0),
            "score_bytes_peak": pr.get("score_bytes_peak", 0),
            "prunable_parameters": pr.get("prunable_parameters"),
            "curves": [{"iterations": m["metrics"]["iterations"], "val_losses": m["metrics"]["val_losses"]}
                       for _, m in rs],
        }
    # Paired by seed (same data order and initialisation) against magnitude pruning: the
    # per-seed differences cancel most of the seed-to-seed spread.
    if "magnitude" in summary["methods"]:
        base = {int(os.path.basename(r).split("-seed")[1]): m["metrics"]["val_perplexities"][-1]
                for r, m in runs["magnitude"]}
        for method, rs in runs.items():
            if method == "magnitude":
                continue
            pairs = [(m["metrics"]["val_perplexities"][-1], base[int(os.path.basename(r).split("-seed")[1])])
                     for r, m in rs if int(os.path.basename(r).split("-seed")[1]) in base]
            if len(pairs) >= 2:
                ci = paired_interval([p for p, _ in pairs], [b for _, b in pairs])
                summary["methods"][method]["paired_vs_magnitude"] = {
                    "diffs": [p - b for p, b in pairs], "mean": ci["diff"], "sd": ci["sd_diff"], "ci95": [ci["lo"], ci["hi"]],
                    "verdict": "better" if ci["hi"] < 0 else "worse" if ci["lo"] > 0 else "inconclusive"}
    for method in ("dense", "bitter8", "bitter7", "magnitude"):
        if method in runs:
            summary.setdefault("state_analysis", {})[method] = state_analysis(runs[method][0][0])
    with open(os.path.join(OUT, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(summary["methods"])
    for name in names:
        s = summary["methods"][name]
        its = s["curves"][0]["iterations"]
        mean = np.mean([c["val_losses"] for c in s["curves"]], axis=0)
        a.plot(its, mean, marker="o", ms=3, label=name)
    a.set_xlabel("iteration")
    a.set_ylabel("validation loss (mean over seeds)")
    a.set_title("Validation loss, 50% sparsity, equal iterations")
    a.legend()
    a.grid(alpha=0.3)
    means = [summary["methods"][n]["val_ppl_mean"] for n in names]
    stds = [summary["methods"][n]["val_ppl_std"] for n in names]
    b.bar(names, means, yerr=stds, capsize=4, color="#4c72b0")
    lo = min(means) - 3 * max(stds + [0.01])
    b.set_ylim(max(0, lo), max(means) + 3 * max(stds + [0.01]))
    b.set_ylabel("final validation perplexity (mean +/- std)")
    b.set_title("Final validation perplexity")
    for i, (mu, sd) in enumerate(zip(means, stds)):
        b.text(i, mu + sd, f"{mu:.3f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    png = os.path.join(OUT, "prune_study.png")
    fig.savefig(png, dpi=110)

    rows = "".join(
        f"<tr><td>{n}</td><td>{s['seeds']}</td><td>{s['iterations']}</td>"
        f"<td>{s['val_ppl_mean']:.3f} &plusmn; {s['val_ppl_std']:.3f}</td><td>{s['final_sparsity']*100:.2f}%</td>"
        f"<td>{s['wall_s_mean']:.1f} &plusmn; {s['wall_s_std']:.1f}</td>"
        f"<td>{s['optimizer_state_bytes']/2**20:.2f}</td><td>{(s['mask_bytes']+s['w0_bytes'])/2**20:.2f}</td>"
        f"<td>{s['score_bytes_peak']/2**20:.2f}</td>"
        + (f"<td>{s['paired_vs_magnitude']['mean']:+.3f} [{s['paired_vs_magnitude']['ci95'][0]:+.3f}, "
           f"{s['paired_vs_magnitude']['ci95'][1]:+.3f}] {s['paired_vs_magnitude']['verdict']}</td>"
           if 'paired_vs_magnitude' in s else "<td>-</td>") + "</tr>"
        for n, s in summary["methods"].items())
    sa = "".join(f"<tr><td>{k}</td>" + "".join(f"<td>{v:.4g}</td>" for v in d.values()) + "</tr>"
                 for k, d in summary.get("state_analysis", {}).items())
    sa_head = "".join(f"<th>{k}</th>" for k in next(iter(summary.get("state_analysis", {"": {}}).values()), {}))
    with open(png, "rb") as f:
        img = base64.b64encode(f.read()).decode()
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>knlp pruning study</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}}</style></head>
<body><h1>Pruning study: {OUT}</h1>
<p>CPU-sized byte GPT-2, default corpus, 50% target sparsity, equal iterations per method.</p>
<img src="data:image/png;base64,{img}" width="100%">
<h2>Results</h2><table><tr><th>method</th><th>seeds</th><th>iters</th><th>val ppl</th><th>sparsity</th>
<th>wall s</th><th>optimizer state MiB</th><th>masks + W0 MiB</th><th>score peak MiB</th><th>ppl - magnitude, paired (95% CI)</th></tr>{rows}</table>
<h2>Adam state at the final checkpoint (prunable weights still alive)</h2>
<table><tr><th>run</th>{sa_head}</tr>{sa}</table></body></html>"""
    with open(os.path.join(OUT, "report.html"), "w") as f:
        f.write(html)
    print(f"{'method':<10} {'val ppl (mean +/- std)':>24} {'sparsity':>9} {'wall s':>14}")
    for n, s in summary["methods"].items():
        print(f"{n:<10} {s['val_ppl_mean']:>14.3f} +/- {s['val_ppl_std']:<6.3f} {s['final_sparsity']*100:>8.2f}% "
              f"{s['wall_s_mean']:>7.1f} +/- {s['wall_s_std']:<5.1f}")
    for n, s in summary["methods"].items():
        p = s.get("paired_vs_magnitude")
        if p:
            print(f"{n} - magnitude (paired by seed): {p['mean']:+.3f} ppl, 95% CI [{p['ci95'][0]:+.3f}, "
                  f"{p['ci95'][1]:+.3f}]: {p['verdict']}")
    for k, d in summary.get("state_analysis", {}).items():
        print(f"state {k}: " + ", ".join(f"{a}={b:.4g}" for a, b in d.items()))
    print(f"wrote {OUT}/summary.json, {png}, {OUT}/report.html")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Plots and a self-contained HTML report of a test-matrix results folder.

    scripts/matrix_report.py RESULTS_DIR [--graphs-only]

Reads RESULTS_DIR/all_results.json (written by `knlp matrix` / `knlp matrix-summary`) and
each complete run's training_metrics.json; writes RESULTS_DIR/graphs/*.png and
RESULTS_DIR/report.html (images embedded, no network needed to open it)."""
import base64
import html
import json
import os
import sys
from collections import OrderedDict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def load(d):
    with open(os.path.join(d, "all_results.json")) as f:
        results = json.load(f)
    metrics = {}
    for e in results:
        p = os.path.join(d, e["test_id"], "training_metrics.json")
        if e.get("status") == "complete" and os.path.exists(p):
            with open(p) as f:
                metrics[e["test_id"]] = json.load(f)
    return results, metrics


def groups(results):
    g = OrderedDict()
    for e in results:
        if e.get("status") == "complete" and "final_val_perplexity" in e:
            g.setdefault(e["config_id"], []).append(e)
    return g


def save(fig, d, name):
    os.makedirs(os.path.join(d, "graphs"), exist_ok=True)
    path = os.path.join(d, "graphs", name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plots(d, results, metrics):
    out = []
    g = groups(results)
    if not g:
        return out
    names = list(g)
    # validation loss evolution per run
    fig, ax = plt.subplots(figsize=(10, 5))
    for rid, m in metrics.items():
        ax.plot(m["metrics"]["iterations"], m["metrics"]["val_losses"], marker=".", label=rid)
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation loss")
    ax.set_title("Validation loss per run")
    ax.grid(alpha=0.3)
    if len(metrics) <= 20:
        ax.legend(fontsize=7)
    out.append(("Validation loss evolution", save(fig, d, "val_loss_evolution.png")))
    # final quality bars with error bars
    mean = [np.mean([e["final_val_perplexity"] for e in g[n]]) for n in names]
    sd = [np.std([e["final_val_perplexity"] for e in g[n]], ddof=1) if len(g[n]) > 1 else 0 for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 5))
    ax.bar(range(len(names)), mean, yerr=sd, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("final validation perplexity (mean +/- sd)")
    lo = min(m - s for m, s in zip(mean, sd))
    hi = max(m + s for m, s in zip(mean, sd))
    ax.set_ylim(max(0, lo - 0.1 * (hi - lo + 1e-9)), hi + 0.1 * (hi - lo + 1e-9))
    ax.set_title("Final quality")
    out.append(("Final quality", save(fig, d, "final_quality.png")))
    # quality vs sparsity
    fig, ax = plt.subplots(figsize=(7, 5))
    for n in names:
        xs = [100 * e.get("final_sparsity", 0) for e in g[n]]
        ys = [e["final_val_perplexity"] for e in g[n]]
        ax.scatter(xs, ys, label=n, s=18)
    ax.set_xlabel("achieved sparsity (%)")
    ax.set_ylabel("final validation perplexity")
    ax.set_title("Quality vs sparsity")
    ax.grid(alpha=0.3)
    if len(names) <= 20:
        ax.legend(fontsize=7)
    out.append(("Quality vs sparsity", save(fig, d, "quality_vs_sparsity.png")))
    # sparsity progression
    fig, ax = plt.subplots(figsize=(10, 5))
    any_sp = False
    for rid, m in metrics.items():
        sp = m["metrics"].get("sparsities")
        if sp:
            any_sp = True
            ax.plot(m["metrics"]["iterations"][: len(sp)], [100 * s for s in sp], marker=".", label=rid)
    if any_sp:
        ax.set_xlabel("iteration")
        ax.set_ylabel("sparsity (%)")
        ax.set_title("Sparsity progression")
        ax.grid(alpha=0.3)
        if len(metrics) <= 20:
            ax.legend(fontsize=7)
        out.append(("Sparsity progression", save(fig, d, "sparsity_progression.png")))
    else:
        plt.close(fig)
    # training time and memory
    for key, label, fname, scale in (("elapsed_time", "training time (s)", "training_time.png", 1.0),
                                     (None, "optimizer state + masks (MiB)", "memory.png", 1 / 2**20)):
        vals = []
        for n in names:
            if key:
                vals.append(np.mean([e.get(key, 0) for e in g[n]]) * scale)
            else:
                vals.append(np.mean([e.get("optimizer_state_bytes", 0) + e.get("pruning_buffer_bytes", 0)
                                     for e in g[n]]) * scale)
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 5))
        ax.bar(range(len(names)), vals, color="#55a868")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(label)
        ax.set_title(label[0].upper() + label[1:])
        out.append((label[0].upper() + label[1:], save(fig, d, fname)))
    # memory vs quality
    fig, ax = plt.subplots(figsize=(7, 5))
    for n in names:
        xs = [(e.get("optimizer_state_bytes", 0) + e.get("pruning_buffer_bytes", 0)) / 2**20 for e in g[n]]
        ax.scatter(xs, [e["final_val_perplexity"] for e in g[n]], label=n, s=18)
    ax.set_xlabel("optimizer state + masks (MiB)")
    ax.set_ylabel("final validation perplexity")
    ax.set_title("Memory vs quality")
    ax.grid(alpha=0.3)
    if len(names) <= 20:
        ax.legend(fontsize=7)
    out.append(("Memory vs quality", save(fig, d, "memory_vs_quality.png")))
    return out


def table(rows, head):
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def report(d, results, metrics, images):
    runs = []
    for e in results:
        ok = e.get("status") == "complete" and "final_val_loss" in e
        runs.append([e["test_id"], e.get("status"), f"{e['final_val_loss']:.4f}" if ok else "-",
                     f"{e['final_val_perplexity']:.3f}" if ok else "-",
                     f"{100 * e.get('final_sparsity', 0):.1f}%" if ok else "-",
                     f"{e.get('elapsed_time', 0):.1f}" if ok else "-", e.get("error", "").strip()])
    g = groups(results)
    cfgs = []
    for n, es in g.items():
        p = [e["final_val_perplexity"] for e in es]
        cfgs.append([n, len(p), f"{np.mean(p):.3f}", f"{np.std(p, ddof=1):.3f}" if len(p) > 1 else "-",
                     f"{np.mean([e.get('elapsed_time', 0) for e in es]):.1f}"])
    summary = ""
    sp = os.path.join(d, "summary_report.txt")
    if os.path.exists(sp):
        with open(sp) as f:
            summary = f.read()
    config = ""
    cp = os.path.join(d, "config.txt")
    if os.path.exists(cp):
        with open(cp) as f:
            config = f.read()
    imgs = ""
    for title, path in images:
        with open(path, "rb") as f:
            b64 = base64.b64encode(f.read()).decode()
        imgs += f"<h3>{html.escape(title)}</h3><img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{b64}\">"
    per_run = ""
    for e in results:
        rc = os.path.join(d, e["test_id"], "matrix.config")
        if os.path.exists(rc):
            with open(rc) as f:
                text = "".join(l for l in f if l.startswith("CONFIG_"))
            per_run += f"<details><summary>{html.escape(e['test_id'])}</summary><pre>{html.escape(text)}</pre></details>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>knlp test matrix report</title>
<style>
body {{ font-family: sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: left; font-size: 13px; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; }}
pre {{ background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 12px; }}
</style></head><body>
<h1>knlp test matrix report</h1>
<p>{html.escape(os.path.abspath(d))}: {len(results)} runs, {sum(1 for e in results if e.get('status') == 'complete')} complete.</p>
<h2>Configurations</h2>
{table(cfgs, ["configuration", "seeds", "val ppl mean", "val ppl sd", "time s"])}
<h2>All runs</h2>
{table(runs, ["run", "status", "val loss", "val ppl", "sparsity", "time s", "error"])}
<h2>Plots</h2>
{imgs}
<h2>Summary report</h2><pre>{html.escape(summary)}</pre>
<h2>Configuration</h2><details><summary>config.txt</summary><pre>{html.escape(config)}</pre></details>
{per_run}
</body></html>
"""
    out = os.path.join(d, "report.html")
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(page)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        sys.exit(__doc__)
    d = args[0]
    if not os.path.exists(os.path.join(d, "all_results.json")):
        sys.exit(f"knlp: error: {d}: no all_results.json (not a results folder, or no run finished yet)")
    results, metrics = load(d)
    images = plots(d, results, metrics)
    print(f"wrote {len(images)} plots to {os.path.join(d, 'graphs')}")
    if "--graphs-only" not in sys.argv:
        print(f"wrote {report(d, results, metrics, images)}")


if __name__ == "__main__":
    main()

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


def quality(e):
    """Final validation perplexity (language models) or test accuracy in % (image models)."""
    return e["final_val_perplexity"] if "final_val_perplexity" in e else 100 * e["final_accuracy"]


def quality_name(results):
    return "final test accuracy (%)" if any("final_accuracy" in e for e in results) else "final validation perplexity"


def curve(m, key):
    """(x, y) of a run's validation loss or sparsity history, LM or image schema."""
    if "test_accuracies" in m:
        return m["epochs"][: len(m[key[1]])], m[key[1]]
    return m["metrics"]["iterations"][: len(m["metrics"].get(key[0], []))], m["metrics"].get(key[0], [])


def groups(results):
    g = OrderedDict()
    for e in results:
        if e.get("status") == "complete" and ("final_val_perplexity" in e or "final_accuracy" in e):
            g.setdefault(e["config_id"], []).append(e)
    return g


def save(fig, d, name):
    os.makedirs(os.path.join(d, "graphs"), exist_ok=True)
    path = os.path.join(d, "graphs", name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def mib(e):
    return (e.get("optimizer_state_bytes", 0) + e.get("pruning_buffer_bytes", 0)) / 2**20


def decorate(ax, xlabel, ylabel, title, n_series):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if n_series <= 20:
        ax.legend(fontsize=7)


def lines(series, xlabel, ylabel, title):
    """One line per (label, xs, ys); None when there is nothing to draw."""
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(10, 5))
    for label, xs, ys in series:
        ax.plot(xs, ys, marker=".", label=label)
    decorate(ax, xlabel, ylabel, title, len(series))
    return fig


def scatter(g, x_of, xlabel, title):
    fig, ax = plt.subplots(figsize=(7, 5))
    for n, es in g.items():
        ax.scatter([x_of(e) for e in es], [quality(e) for e in es], label=n, s=18)
    decorate(ax, xlabel, quality_name([e for es in g.values() for e in es]), title, len(g))
    return fig


def bars(names, vals, ylabel, title, sd=None, color="#55a868"):
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 5))
    ax.bar(range(len(names)), vals, yerr=sd, capsize=4 if sd else 0, color=color)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if sd:
        lo = min(m - s for m, s in zip(vals, sd))
        hi = max(m + s for m, s in zip(vals, sd))
        ax.set_ylim(max(0, lo - 0.1 * (hi - lo + 1e-9)), hi + 0.1 * (hi - lo + 1e-9))
    return fig


def plots(d, results, metrics):
    g = groups(results)
    if not g:
        return []
    names = list(g)
    ppl = {n: [quality(e) for e in g[n]] for n in names}
    img = any("test_accuracies" in m for m in metrics.values())
    xl = "epoch" if img else "iteration"
    figs = [
        ("Validation loss evolution", "val_loss_evolution.png",
         lines([(rid, *curve(m, ("val_losses", "test_losses"))) for rid, m in metrics.items()],
               xl, "test loss" if img else "validation loss", "Validation loss per run")),
        ("Final quality", "final_quality.png",
         bars(names, [np.mean(ppl[n]) for n in names], quality_name(results) + " (mean +/- sd)", "Final quality",
              sd=[np.std(ppl[n], ddof=1) if len(ppl[n]) > 1 else 0 for n in names], color="#4c72b0")),
        ("Quality vs sparsity", "quality_vs_sparsity.png",
         scatter(g, lambda e: 100 * e.get("final_sparsity", 0), "achieved sparsity (%)", "Quality vs sparsity")),
        ("Sparsity progression", "sparsity_progression.png",
         lines([(rid, curve(m, ("sparsities", "sparsities"))[0], [100 * s for s in curve(m, ("sparsities", "sparsities"))[1]])
                for rid, m in metrics.items() if curve(m, ("sparsities", "sparsities"))[1]],
               xl, "sparsity (%)", "Sparsity progression")),
        ("Training time (s)", "training_time.png",
         bars(names, [np.mean([e.get("elapsed_time", 0) for e in g[n]]) for n in names], "training time (s)",
              "Training time (s)")),
        ("Optimizer state + masks (MiB)", "memory.png",
         bars(names, [np.mean([mib(e) for e in g[n]]) for n in names], "optimizer state + masks (MiB)",
              "Optimizer state + masks (MiB)")),
        ("Memory vs quality", "memory_vs_quality.png",
         scatter(g, mib, "optimizer state + masks (MiB)", "Memory vs quality")),
    ]
    return [(title, save(fig, d, fname)) for title, fname, fig in figs if fig is not None]


def table(rows, head):
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def report(d, results, metrics, images):
    runs = []
    for e in results:
        ok = e.get("status") == "complete" and ("final_val_loss" in e or "final_accuracy" in e)
        loss = e.get("final_val_loss", e.get("final_test_loss"))
        runs.append([e["test_id"], e.get("status"), f"{loss:.4f}" if ok else "-",
                     f"{quality(e):.3f}" if ok else "-",
                     f"{100 * e.get('final_sparsity', 0):.1f}%" if ok else "-",
                     f"{e.get('elapsed_time', 0):.1f}" if ok else "-", e.get("error", "").strip()])
    g = groups(results)
    cfgs = []
    for n, es in g.items():
        p = [quality(e) for e in es]
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
    qn = "test acc %" if any("final_accuracy" in e for e in results) else "val ppl"
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
{table(cfgs, ["configuration", "seeds", qn + " mean", qn + " sd", "time s"])}
<h2>All runs</h2>
{table(runs, ["run", "status", "val/test loss", qn, "sparsity", "time s", "error"])}
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

#!/usr/bin/python3
"""Plots and a self-contained HTML report of a test-matrix results folder.

    scripts/matrix_report.py RESULTS_DIR [--graphs-only]

Reads RESULTS_DIR/all_results.json (written by `knlp matrix` / `knlp matrix summary`), each
complete run's training_metrics.json (the common envelope: quality block and history) and
metrics.jsonl (the loss of every logged step); writes RESULTS_DIR/graphs/*.png and
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
    metrics, steps = {}, {}
    for e in results:
        run = os.path.join(d, e["test_id"])
        p = os.path.join(run, "training_metrics.json")
        if e.get("status") == "complete" and os.path.exists(p):
            with open(p) as f:
                metrics[e["test_id"]] = json.load(f)
            steps[e["test_id"]] = train_records(os.path.join(run, "metrics.jsonl"))
    return results, metrics, steps


def train_records(path):
    """(step, loss) of every logged training step; a torn last line is skipped."""
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if r.get("type") == "train":
                    out.append((r["step"], r["loss"]))
    return out


def quality(e):
    """The run's figure in its quality block; accuracies in %."""
    return 100 * e["quality"] if e.get("quality_metric") == "accuracy" else e["quality"]


def quality_name(results):
    for e in results:
        if "quality_metric" in e:
            unit = " (%)" if e["quality_metric"] == "accuracy" else ""
            return f"final {e['quality_split']} {e['quality_metric']}{unit}"
    return "final quality"


def history(m, key):
    """(x, y) of a run's evaluations: step (or epoch) and the figure `key`."""
    h = [r for r in m.get("history", []) if r.get(key) is not None]
    x = "epoch" if any("epoch" in r for r in h) else "step"
    return [r[x] for r in h], [r[key] for r in h]


def groups(results):
    g = OrderedDict()
    for e in results:
        if e.get("status") == "complete" and "quality" in e:
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


def plots(d, results, metrics, steps):
    g = groups(results)
    if not g:
        return []
    names = list(g)
    q = {n: [quality(e) for e in g[n]] for n in names}
    epochs = any("epoch" in r for m in metrics.values() for r in m.get("history", []))
    xl = "epoch" if epochs else "step"
    pruned = any(e.get("final_sparsity", 0) > 0 for es in g.values() for e in es)
    qn = quality_name(results)
    figs = [
        ("Training loss per step", "train_loss.png",
         lines([(rid, [s for s, _ in st], [l for _, l in st]) for rid, st in steps.items() if st],
               "step", "training loss", "Training loss per logged step")),
        ("Held-out loss", "eval_loss.png",
         lines([(rid, *history(m, "eval_loss")) for rid, m in metrics.items() if history(m, "eval_loss")[1]],
               xl, "held-out loss", "Held-out loss at each evaluation")),
        ("Quality at each evaluation", "quality_evolution.png",
         lines([(rid, *history(m, "quality")) for rid, m in metrics.items() if history(m, "quality")[1]],
               xl, qn.replace("final ", ""), "Quality at each evaluation")),
        ("Final quality", "final_quality.png",
         bars(names, [np.mean(q[n]) for n in names], qn + " (mean +/- sd)", "Final quality",
              sd=[np.std(q[n], ddof=1) if len(q[n]) > 1 else 0 for n in names], color="#4c72b0")),
        ("Training time (s)", "training_time.png",
         bars(names, [np.mean([e.get("elapsed_time", 0) for e in g[n]]) for n in names], "training time (s)",
              "Training time (s)")),
        ("Optimizer state + masks (MiB)", "memory.png",
         bars(names, [np.mean([mib(e) for e in g[n]]) for n in names], "optimizer state + masks (MiB)",
              "Optimizer state + masks (MiB)")),
        ("Memory vs quality", "memory_vs_quality.png",
         scatter(g, mib, "optimizer state + masks (MiB)", "Memory vs quality")),
    ]
    if pruned:  # only where something was pruned
        figs += [
            ("Quality vs sparsity", "quality_vs_sparsity.png",
             scatter(g, lambda e: 100 * e.get("final_sparsity", 0), "achieved sparsity (%)", "Quality vs sparsity")),
            ("Sparsity progression", "sparsity_progression.png",
             lines([(rid, xs, [100 * s for s in ys]) for rid, m in metrics.items()
                    for xs, ys in [history(m, "sparsity")] if ys], xl, "sparsity (%)", "Sparsity progression")),
        ]
    return [(title, save(fig, d, fname)) for title, fname, fig in figs if fig is not None]


def table(rows, head):
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def report(d, results, metrics, images):
    runs = []
    for e in results:
        ok = e.get("status") == "complete" and "quality" in e
        loss = e.get("eval_loss")
        runs.append([e["test_id"], e.get("status"), f"{loss:.4f}" if ok and loss is not None else "-",
                     f"{quality(e):.4g}" if ok else "-",
                     f"{100 * e.get('final_sparsity', 0):.1f}%" if ok else "-",
                     f"{e.get('elapsed_time', 0):.1f}" if ok else "-", e.get("error", "").strip()])
    g = groups(results)
    cfgs = []
    for n, es in g.items():
        p = [quality(e) for e in es]
        cfgs.append([n, len(p), f"{np.mean(p):.4g}", f"{np.std(p, ddof=1):.3g}" if len(p) > 1 else "-",
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
    qn = quality_name(results).replace("final ", "")
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
{table(runs, ["run", "status", "held-out loss", qn, "sparsity", "time s", "error"])}
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
    results, metrics, steps = load(d)
    images = plots(d, results, metrics, steps)
    print(f"wrote {len(images)} plots to {os.path.join(d, 'graphs')}")
    if "--graphs-only" not in sys.argv:
        print(f"wrote {report(d, results, metrics, images)}")


if __name__ == "__main__":
    main()

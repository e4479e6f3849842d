#!/usr/bin/python3
"""The lenet5-fashion-compare table of docs/vision.md from finished matrix folders (one per shard or
one merged): final test accuracy mean +/- sd over seeds, sparsity reached, time per run,
optimizer state + mask memory, peak RSS, and the original's MNIST figure where the spec
gives one. Also draws accuracy against sparsity per optimizer and method.

    scripts/vision_compare_table.py [--plot FILE.png] RESULTS_DIR [RESULTS_DIR ...]
"""
import json
import os
import re
import sys
from collections import OrderedDict, defaultdict

import numpy as np

# The original's LeNet-5 results on MNIST (70% sparsity), from its README.
ORIGINAL_MNIST = {"lenet5_adamwprune_bitter0_state_70": 98.99, "lenet5_adamwprune_bitter7_state_70": 98.96}


def runs(dirs):
    out = OrderedDict()
    for d in dirs:
        # The matrix's own order (plan.json) when there is one, else by name.
        names = sorted(os.listdir(d))
        plan = os.path.join(d, "plan.json")
        if os.path.exists(plan):
            with open(plan) as f:
                names = [r["test_id"] for r in sorted(json.load(f)["runs"], key=lambda r: r["index"])]
        for name in names:
            p = os.path.join(d, name, "training_metrics.json")
            if not os.path.exists(p):
                continue
            with open(p) as f:
                m = json.load(f)
            if m.get("status") != "complete":
                continue
            cfg = re.sub(r"_s\d+$", "", name)
            out.setdefault(cfg, []).append(m)
    return out


def main():
    args = sys.argv[1:]
    plot = None
    if args[:1] == ["--plot"]:
        plot, args = args[1], args[2:]
    by = runs(args)
    order = by
    base = by.get("lenet5_adamw_none")
    base_acc = np.mean([100 * m["final_accuracy"] for m in base]) if base else None
    print("| configuration | seeds | test accuracy (%) | vs AdamW dense | sparsity | time per run (s) |"
          " optimizer state + masks (KiB) | peak RSS (MiB) | original, MNIST (%) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cfg, ms in order.items():
        acc = np.array([100 * m["final_accuracy"] for m in ms])
        sd = acc.std(ddof=1) if len(acc) > 1 else float("nan")
        sp = np.mean([m["final_sparsity"] for m in ms])
        t = np.mean([m["total_time"] for m in ms])
        mem = np.mean([m["optimizer_state_bytes"] + m["pruning"].get("mask_bytes", 0) for m in ms]) / 1024
        rss = np.mean([m["hardware"]["rss_peak_mb"] for m in ms]) if all("hardware" in m for m in ms) else float("nan")
        diff = f"{acc.mean() - base_acc:+.2f}" if base_acc is not None else ""
        orig = f"{ORIGINAL_MNIST[cfg]:.2f}" if cfg in ORIGINAL_MNIST else ""
        pm = f"{acc.mean():.2f} ± {sd:.2f}" if len(acc) > 1 else f"{acc.mean():.2f}"
        print(f"| {cfg.removeprefix('lenet5_')} | {len(acc)} | {pm} | {diff} | {100 * sp:.1f}% | {t:.0f} | {mem:.0f} |"
              f" {rss:.0f} | {orig} |")
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        def stats(ms):
            acc = np.array([100 * m["final_accuracy"] for m in ms])
            return acc.mean(), (acc.std(ddof=1) if len(acc) > 1 else 0.0)

        # One panel per pruning method, a line per optimizer (AdamWPrune: per variant), each
        # starting from that optimizer's dense run (AdamWPrune: from AdamW's).
        dense = {cfg.split("_")[1]: stats(ms) for cfg, ms in order.items() if cfg.endswith("_none")}
        panels = OrderedDict((k, defaultdict(list)) for k in ("magnitude", "movement", "state"))
        for cfg, ms in order.items():
            parts = cfg.split("_")
            if not parts[-1].isdigit():
                continue
            opt, method, x = parts[1], parts[-2], int(parts[-1])
            label = opt if method != "state" else f"{opt} {parts[2]}"
            panels[method][label].append((x, *stats(ms)))
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.5), sharey=True)
        for ax, (method, lines) in zip(axes, panels.items()):
            for label, pts in lines.items():
                d = dense.get(label.split()[0], dense.get("adamw"))
                pts = ([(0, *d)] if d else []) + sorted(pts)
                xs, ys, es = zip(*pts)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
            ax.set_title(f"{method} pruning")
            ax.set_xlabel("target sparsity (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0].set_ylabel("final test accuracy (%), mean ± sd over seeds")
        fig.suptitle("LeNet-5 on Fashion-MNIST, 10 epochs")
        fig.tight_layout()
        fig.savefig(plot, dpi=100)


if __name__ == "__main__":
    main()

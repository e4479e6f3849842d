#!/usr/bin/python3
"""Summarise the Fisher study (scripts/fim_study.sh): for every run and checkpoint, the
agreement of Adam's exp_avg_sq with the empirical and the true Fisher (global Spearman,
Pearson, top-10% overlap, ranking of tensors, layers within a role) and its scale.
Prints the Markdown tables of docs/fim.md and writes OUT/fim_study.png and OUT/summary.json."""
import glob
import json
import os
import re
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else "fim-study"
RUNS = [("adamw", "AdamW, clip 1.0"), ("adamw-noclip", "AdamW, no clip"), ("adamwspam", "AdamWSPAM, clip 1.0")]


def f3(x):
    return "n/a" if x is None else f"{x:.3f}"


rows = {}
for run, _ in RUNS:
    for path in sorted(glob.glob(f"{OUT}/{run}/compare_iter_*.json")):
        it = int(re.search(r"iter_(\d+)", path).group(1))
        rows.setdefault(run, []).append((it, json.load(open(path))))

summary = {}
print("| run | step | v age | Spearman (emp) | Spearman (true) | Pearson (emp) | top-10% (emp) | "
      "tensor ranking | ffn_down layers | v/F (bias-corr.) | noise-only |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for run, label in RUNS:
    for it, j in rows.get(run, []):
        e, t = j["fisher"]["empirical"], j["fisher"]["true"]
        ge, gt = e["global"]["raw"], t["global"]["raw"]
        down = e["layers_within_role"].get("ffn_down", {}).get("spearman")
        r = {"step": it, "v_age": j["v_age"], "spearman_emp": ge["spearman"], "spearman_true": gt["spearman"],
             "pearson_emp": ge["pearson"], "top10_emp": ge["top10%"], "top1_emp": ge["top1%"],
             "tensor_rank": e["tensor_means"]["spearman"], "ffn_down_layers": down,
             "scale_bc": e["global"]["scale"]["bias_corrected"], "noise_only": j["noise_only_scale"],
             "emp_vs_true": j.get("empirical_vs_true", {}).get("spearman")}
        summary.setdefault(run, []).append(r)
        print(f"| {label} | {it} | {j['v_age']} | {f3(ge['spearman'])} | {f3(gt['spearman'])} | "
              f"{f3(ge['pearson'])} | {f3(ge['top10%'])} | {f3(r['tensor_rank'])} | {f3(down)} | "
              f"{r['scale_bc']:.4f} | {r['noise_only']:.4f} |")
json.dump(summary, open(f"{OUT}/summary.json", "w"), indent=2)

# Per-role agreement at the last checkpoint of AdamW: where the element-wise agreement is weak.
if rows.get("adamw"):
    it, j = rows["adamw"][-1]
    by_role = {}
    for t in j["fisher"]["empirical"]["tensors"]:
        by_role.setdefault(t["role"], []).append(t["spearman"])
    print(f"\nAdamW at step {it}, per-tensor Spearman against the empirical Fisher, by role (min / mean / max):\n")
    print("| role | tensors | min | mean | max |")
    print("|---|---:|---:|---:|---:|")
    for role, v in sorted(by_role.items()):
        v = [x for x in v if x is not None]
        print(f"| {role} | {len(v)} | {min(v):.3f} | {sum(v) / len(v):.3f} | {max(v):.3f} |")

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for run, label in RUNS:
        s = summary.get(run, [])
        if not s:
            continue
        x = [r["step"] for r in s]
        ax[0].plot(x, [r["spearman_emp"] for r in s], "o-", label=label + " (empirical)")
        ax[0].plot(x, [r["spearman_true"] for r in s], "x--", label=label + " (true)")
        ax[1].plot(x, [r["scale_bc"] for r in s], "o-", label=label)
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("Spearman(v, F), all elements")
    ax[0].legend(fontsize=7)
    ax[0].grid(alpha=0.3)
    ax[1].axhline(summary[RUNS[0][0]][0]["noise_only"] if summary.get(RUNS[0][0]) else 0, color="gray", ls=":",
                  label="pure-noise expectation")
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("sum(v_hat) / sum(F_emp)")
    ax[1].set_yscale("log")
    ax[1].legend(fontsize=7)
    ax[1].grid(alpha=0.3)
    fig.suptitle("Adam's exp_avg_sq vs the diagonal Fisher (gpt2-tiny-cpu, 64 held-out windows of 128 bytes)")
    fig.tight_layout()
    fig.savefig(f"{OUT}/fim_study.png", dpi=110)
    print(f"\nwrote {OUT}/fim_study.png")
except ImportError:
    print("matplotlib missing: no figure")

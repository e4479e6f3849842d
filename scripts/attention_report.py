#!/usr/bin/python3
"""Summarise the attention study (scripts/attention_study.sh).

For each variant: final validation perplexity mean +/- std over seeds, the paired
difference to the study's baseline (same seeds) with a t confidence interval, quiet
step time and cached-decoding speed (knlp_bench attention), cache values per token,
parameters, cloze accuracy, and the attention Fisher trace per layer. Writes
OUT/summary.json, OUT/attention_study.png, OUT/attention_fisher.png, OUT/report.html."""
import base64
import glob
import html
import json
import math
import os
import re
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

OUT = sys.argv[1] if len(sys.argv) > 1 else "attn-study"
STUDIES = {
    "ra-sdpa": {"title": "(a) vanilla vs SDPA gate vs reciprocal attention", "order": ["vanilla", "gate", "ra"],
                "baseline": "vanilla"},
    "kvsplice": {"title": "(b) MLA vs KVSplice vs hybrids", "order": ["mla", "kvsplice", "hybrid-last", "hybrid-first"],
                 "baseline": "mla"},
}


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def evals(run):
    out = []
    try:
        with open(os.path.join(run, "metrics.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                if r.get("type") == "eval":
                    out.append((r["step"], r["val_loss"], r.get("elapsed", 0.0)))
    except OSError:
        pass
    return out


def variant_of(model):
    return model[len("gpt2-"):] if model.startswith("gpt2-") else "vanilla"


def mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


KNLP = os.environ.get("KNLP", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "knlp"))


def paired_ci(a, b, level=0.95):
    """Mean of a - b over paired seeds and its t interval, from `knlp stats interval --paired`
    (the statistics the matrix summaries use)."""
    if len(a) < 2:
        return (float(np.mean(np.array(a) - np.array(b))) if len(a) else None), None, None
    out = subprocess.run([KNLP, "stats", "interval", "--paired", "--confidence", repr(level),
                          "--a", ",".join(map(repr, a)), "--b", ",".join(map(repr, b))],
                         check=True, capture_output=True, text=True).stdout
    j = json.loads(out.strip().splitlines()[-1])
    return j["diff"], j["lo"], j["hi"]


def collect_runs(folder):
    runs = {}
    for r in load_json(os.path.join(folder, "all_results.json"), []) or []:
        if r.get("status") != "complete":
            continue
        v = variant_of(r["model"])
        path = os.path.join(folder, r["test_id"])
        runs.setdefault(v, []).append({
            "seed": r["seed"], "ppl": r["figures"]["val_perplexity"], "loss": r["quality"],
            "elapsed": r["elapsed_time"], "iterations": r["iterations"], "params": r["parameters"],
            "curve": evals(path), "cloze": (load_json(os.path.join(path, "cloze.json"), {}) or {}).get("acc"),
            "fisher": load_json(os.path.join(path, "fisher.json")), "path": path,
            "cache": (load_json(os.path.join(path, "training_metrics.json"), {}) or {}).get("kv_cache_values_per_token")})
    return runs


def collect_equal_time(folder):
    runs = {}
    for path in sorted(glob.glob(os.path.join(folder, "gpt2-*-s*"))):
        m = re.match(r"gpt2-(.+)-s(\d+)$", os.path.basename(path))
        tm = load_json(os.path.join(path, "training_metrics.json"))
        if not m or not tm or tm.get("status") != "complete":
            continue
        ev = evals(path)
        runs.setdefault(m.group(1), []).append({
            "seed": int(m.group(2)), "ppl": math.exp(min(ev[-1][1], 20)), "iterations": tm["progress"]["step"],
            "curve": ev, "cloze": (load_json(os.path.join(path, "cloze.json"), {}) or {}).get("acc")})
    return runs


def main():
    times = load_json(os.path.join(OUT, "step_times.json"), {}) or {}
    summary = {"studies": {}, "step_times": times}
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for row, (key, st) in enumerate(STUDIES.items()):
        runs = collect_runs(os.path.join(OUT, key))
        eq = collect_equal_time(os.path.join(OUT, "equal-time")) if key == "ra-sdpa" else {}
        base = {r["seed"]: r["ppl"] for r in runs.get(st["baseline"], [])}
        rows = []
        for v in st["order"]:
            rs = sorted(runs.get(v, []), key=lambda r: r["seed"])
            if not rs:
                continue
            m, s = mean_std([r["ppl"] for r in rs])
            pairs = [(r["ppl"], base[r["seed"]]) for r in rs if r["seed"] in base]
            d, lo, hi = paired_ci([p for p, _ in pairs], [b for _, b in pairs]) if v != st["baseline"] else (None, None, None)
            cm, cs = mean_std([r["cloze"] for r in rs])
            t = times.get(v, {})
            fisher = None
            fl = [r["fisher"] for r in rs if r["fisher"]]
            if fl:
                nl = len(fl[0]["layers"])
                fisher = [float(np.mean([f["layers"][i]["trace"] for f in fl])) for i in range(nl)]
            e = {"variant": v, "seeds": [r["seed"] for r in rs], "ppl_mean": m, "ppl_std": s,
                 "ppl_per_seed": [r["ppl"] for r in rs], "diff_vs_baseline": d, "diff_ci95": [lo, hi] if lo is not None else None,
                 "iterations": rs[0]["iterations"], "params": rs[0]["params"], "cache_values_per_token": rs[0]["cache"],
                 "step_ms_quiet": t.get("train_step_ms"), "decode_tokens_per_sec_quiet": t.get("decode_tokens_per_sec"),
                 "cloze_acc_mean": cm, "cloze_acc_std": cs, "fisher_trace_per_layer": fisher}
            if v in eq:
                er = sorted(eq[v], key=lambda r: r["seed"])
                em, es = mean_std([r["ppl"] for r in er])
                ep = [(r["ppl"], base[r["seed"]]) for r in er if r["seed"] in base]
                ed, elo, ehi = paired_ci([p for p, _ in ep], [b for _, b in ep])
                e["equal_time"] = {"iterations": er[0]["iterations"], "ppl_mean": em, "ppl_std": es,
                                   "ppl_per_seed": [r["ppl"] for r in er], "diff_vs_baseline": ed,
                                   "diff_ci95": [elo, ehi] if elo is not None else None,
                                   "cloze_acc_mean": mean_std([r["cloze"] for r in er])[0]}
            rows.append(e)
            # Curves: mean validation loss over seeds.
            its = [c[0] for c in rs[0]["curve"]]
            if its and all(len(r["curve"]) == len(its) for r in rs):
                mean = np.mean([[c[1] for c in r["curve"]] for r in rs], axis=0)
                axes[row][0].plot(its, mean, marker="o", ms=3, label=f"{v} ({m:.3f}\u00b1{s:.3f})")
        summary["studies"][key] = {"title": st["title"], "baseline": st["baseline"], "rows": rows}
        if key == "kvsplice":
            # The control the original never ran: same cache size, KVSplice first vs last.
            f = {r["seed"]: r["ppl"] for r in runs.get("hybrid-first", [])}
            l = {r["seed"]: r["ppl"] for r in runs.get("hybrid-last", [])}
            common = sorted(set(f) & set(l))
            if common:
                d, lo, hi = paired_ci([f[s] for s in common], [l[s] for s in common])
                summary["studies"][key]["first_minus_last"] = {"seeds": common, "diff": d,
                                                               "ci95": [lo, hi] if lo is not None else None}
        ax = axes[row][0]
        ax.set_title(st["title"] + ": validation loss (mean of seeds)")
        ax.set_xlabel("iteration")
        ax.set_ylabel("val loss")
        ax.set_ylim(top=min(ax.get_ylim()[1], 3.3))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax = axes[row][1]
        if key == "ra-sdpa":
            names = [r["variant"] for r in rows]
            x = np.arange(len(names))
            ax.bar(x - 0.2, [r["ppl_mean"] for r in rows], 0.4, yerr=[r["ppl_std"] for r in rows], capsize=4,
                   label="equal iterations")
            eqm = [r.get("equal_time", {}).get("ppl_mean") if r["variant"] != "vanilla" else r["ppl_mean"] for r in rows]
            eqs = [r.get("equal_time", {}).get("ppl_std") if r["variant"] != "vanilla" else r["ppl_std"] for r in rows]
            if all(v is not None for v in eqm):
                ax.bar(x + 0.2, eqm, 0.4, yerr=eqs, capsize=4, label="equal wall time")
            ax.set_xticks(x, names)
            lo = min([r["ppl_mean"] - 3 * r["ppl_std"] for r in rows] + [v - 3 * (s or 0) for v, s in zip(eqm, eqs) if v])
            ax.set_ylim(bottom=max(0, lo))
            ax.set_ylabel("final val perplexity")
            ax.set_title("(a) perplexity at equal iterations and equal wall time")
            ax.legend(fontsize=8)
        else:
            for r in rows:
                ax.errorbar(r["cache_values_per_token"] or 0, r["ppl_mean"], yerr=r["ppl_std"], fmt="o", capsize=4)
                ax.annotate(r["variant"], (r["cache_values_per_token"] or 0, r["ppl_mean"]), textcoords="offset points",
                            xytext=(6, 4), fontsize=8)
            ax.set_xlabel("cached values per token (all layers)")
            ax.set_ylabel("final val perplexity")
            ax.set_title("(b) perplexity vs KV-cache size")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    study_png = os.path.join(OUT, "attention_study.png")
    fig.savefig(study_png, dpi=110)
    plt.close(fig)

    # Fisher trace per layer, every variant.
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in STUDIES:
        for r in summary["studies"][key]["rows"]:
            if r["fisher_trace_per_layer"]:
                ax.plot(range(len(r["fisher_trace_per_layer"])), r["fisher_trace_per_layer"], marker="o", label=r["variant"])
    ax.set_xlabel("layer")
    ax.set_ylabel("attention Fisher trace (mean over heads, seeds)")
    ax.set_title("Attention Fisher trace per layer after training")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fisher_png = os.path.join(OUT, "attention_fisher.png")
    fig.savefig(fisher_png, dpi=110)
    plt.close(fig)

    with open(os.path.join(OUT, "summary.json.tmp"), "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(os.path.join(OUT, "summary.json.tmp"), os.path.join(OUT, "summary.json"))

    def fmt(x, spec=".3f"):
        return "-" if x is None else format(x, spec)

    parts = ["<!doctype html><meta charset='utf-8'><title>knlp attention study</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}</style>",
             "<h1>Attention variants at CPU scale</h1>"]
    for key, s in summary["studies"].items():
        parts.append(f"<h2>{html.escape(s['title'])}</h2><table><tr><th>variant</th><th>seeds</th><th>val ppl</th>"
                     f"<th>&Delta; vs {html.escape(s['baseline'])} (95% CI)</th><th>equal-time ppl (iters)</th>"
                     "<th>step ms</th><th>decode tok/s</th><th>cache values/token</th><th>params</th><th>cloze acc</th></tr>")
        for r in s["rows"]:
            ci = f"{fmt(r['diff_vs_baseline'], '+.3f')} [{fmt(r['diff_ci95'][0], '+.3f')}, {fmt(r['diff_ci95'][1], '+.3f')}]" \
                if r["diff_ci95"] else "-"
            et = r.get("equal_time")
            ets = f"{fmt(et['ppl_mean'])} &plusmn; {fmt(et['ppl_std'])} ({et['iterations']})" if et else "-"
            parts.append(f"<tr><td>{html.escape(r['variant'])}</td><td>{len(r['seeds'])}</td>"
                         f"<td>{fmt(r['ppl_mean'])} &plusmn; {fmt(r['ppl_std'])}</td><td>{ci}</td><td>{ets}</td>"
                         f"<td>{fmt(r['step_ms_quiet'], '.1f')}</td><td>{fmt(r['decode_tokens_per_sec_quiet'], '.0f')}</td>"
                         f"<td>{r['cache_values_per_token']}</td><td>{r['params']}</td>"
                         f"<td>{fmt(r['cloze_acc_mean'])}</td></tr>")
        parts.append("</table>")
        fl = s.get("first_minus_last")
        if fl and fl["ci95"]:
            parts.append(f"<p>hybrid-first &minus; hybrid-last, paired by seed: {fmt(fl['diff'], '+.3f')} "
                         f"[{fmt(fl['ci95'][0], '+.3f')}, {fmt(fl['ci95'][1], '+.3f')}] (95% t interval)</p>")
    for png in (study_png, fisher_png):
        with open(png, "rb") as f:
            parts.append(f"<p><img style='max-width:100%' src='data:image/png;base64,{base64.b64encode(f.read()).decode()}'></p>")
    with open(os.path.join(OUT, "report.html.tmp"), "w") as f:
        f.write("\n".join(parts))
    os.replace(os.path.join(OUT, "report.html.tmp"), os.path.join(OUT, "report.html"))
    for key, s in summary["studies"].items():
        print(s["title"])
        for r in s["rows"]:
            line = f"  {r['variant']:<13} ppl {fmt(r['ppl_mean'])} +/- {fmt(r['ppl_std'])}"
            if r["diff_ci95"]:
                line += f"  diff {fmt(r['diff_vs_baseline'], '+.3f')} [{fmt(r['diff_ci95'][0], '+.3f')}, {fmt(r['diff_ci95'][1], '+.3f')}]"
            if r.get("equal_time"):
                et = r["equal_time"]
                line += f"  equal time ({et['iterations']} it): {fmt(et['ppl_mean'])} +/- {fmt(et['ppl_std'])}"
            line += f"  cache {r['cache_values_per_token']}  cloze {fmt(r['cloze_acc_mean'])}"
            print(line)
        fl = s.get("first_minus_last")
        if fl:
            ci = f" [{fmt(fl['ci95'][0], '+.3f')}, {fmt(fl['ci95'][1], '+.3f')}]" if fl["ci95"] else ""
            print(f"  hybrid-first - hybrid-last (paired by seed): {fmt(fl['diff'], '+.3f')}{ci}")
    print(f"wrote {OUT}/summary.json, {OUT}/report.html, {study_png}, {fisher_png}")


if __name__ == "__main__":
    main()

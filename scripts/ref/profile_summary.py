"""Put two Chrome traces of training steps side by side, kernel by kernel.

usage: profile_summary.py NAME=TRACE.json[:STEPS] NAME=TRACE.json[:STEPS] [--top N]

Each trace is what `KNLP_PROFILE=FILE knlp train` (KNLP_PROFILE_STEPS, default 10:12, so 3
steps) or `KNLP_PROFILE=FILE scripts/ref/gpt2_eager.py ...` (3 steps) writes. GPU kernels
("cat": "kernel") are grouped into families by name (matrix products, attention, layer
norm, GELU, softmax and cross-entropy, optimizer, copies and casts, other element-wise
work); printed per step in milliseconds with the difference, then the largest kernels of
each trace. Without GPU kernels (a CPU trace) the operators ("cat": "cpu_op", top level
only) are compared instead.
"""
import collections
import json
import re
import sys

FAMILIES = [
    ("attention", r"flash|fmha|attention|attn"),
    ("matmul", r"gemm|cutlass|xmma|nvjet|cublas|sm90_|Kernel2|splitK|gemv"),
    ("layer norm", r"layer_norm|LayerNorm|layernorm"),
    ("gelu", r"gelu|Gelu"),
    ("softmax / cross-entropy", r"softmax|SoftMax|nll_loss|cross_entropy|log_softmax"),
    ("optimizer", r"multi_tensor|foreach|fused_adam|FusedAdam|adam"),
    ("embedding", r"embedding|Embedding|index_select|indexSelect|indexing_backward|index_put"),
    ("reduction", r"reduce_kernel|Reduce|norm_kernel"),
    ("copy / cast", r"copy|Copy|cast|memcpy|Memcpy|memset|Memset|fill"),
    ("dropout / random", r"dropout|fused_dropout|philox|random"),
    ("other element-wise", r"elementwise|vectorized|unrolled|pointwise"),
]


def family(name):
    for fam, pat in FAMILIES:
        if re.search(pat, name):
            return fam
    return "other"


def load(spec):
    name, rest = spec.split("=", 1)
    path, steps = (rest.rsplit(":", 1) + ["3"])[:2] if rest.count(":") else (rest, "3")
    with open(path) as f:
        tr = json.load(f)
    ev = tr["traceEvents"] if isinstance(tr, dict) else tr
    kernels = [e for e in ev if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    gpu = bool(kernels)
    if not gpu:  # CPU: top-level operators only (those not inside another operator of the same thread)
        ops = sorted((e for e in ev if e.get("ph") == "X" and e.get("cat", "cpu_op") == "cpu_op"), key=lambda e: (e["tid"], e["ts"]))
        kernels, end = [], {}
        for e in ops:
            if e["ts"] >= end.get(e["tid"], -1):
                kernels.append(e)
                end[e["tid"]] = e["ts"] + e["dur"]
    per = collections.Counter()
    fam = collections.Counter()
    count = collections.Counter()
    for e in kernels:
        per[e["name"]] += e["dur"]
        count[e["name"]] += 1
        fam[family(e["name"]) if gpu else e["name"].split("::")[-1]] += e["dur"]
    span = 0.0
    if kernels:
        span = max(e["ts"] + e["dur"] for e in kernels) - min(e["ts"] for e in kernels)
    return {"name": name, "steps": int(steps), "gpu": gpu, "per": per, "count": count, "fam": fam,
            "total": sum(per.values()), "span": span, "n": len(kernels)}


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    top = 12
    if "--top" in sys.argv:
        top = int(sys.argv[sys.argv.index("--top") + 1])
        args = [a for a in args if a != str(top)]
    if len(args) != 2:
        sys.exit(__doc__)
    a, b = load(args[0]), load(args[1])
    unit = "GPU kernels" if a["gpu"] else "top-level CPU operators"
    ms = lambda r, us: us / 1e3 / r["steps"]
    print(f"{unit}, ms per step ({a['name']}: {a['n']} events over {a['steps']} steps; "
          f"{b['name']}: {b['n']} over {b['steps']})")
    print(f"{'family':<26}{a['name']:>12}{b['name']:>12}{'difference':>12}")
    fams = sorted(set(a["fam"]) | set(b["fam"]), key=lambda f: -(a["fam"][f] + b["fam"][f]))
    for f in fams:
        x, y = ms(a, a["fam"][f]), ms(b, b["fam"][f])
        print(f"{f[:25]:<26}{x:12.3f}{y:12.3f}{x - y:+12.3f}")
    print(f"{'busy (sum of kernels)':<26}{ms(a, a['total']):12.3f}{ms(b, b['total']):12.3f}"
          f"{ms(a, a['total']) - ms(b, b['total']):+12.3f}")
    print(f"{'span (first to last)':<26}{ms(a, a['span']):12.3f}{ms(b, b['span']):12.3f}"
          f"{ms(a, a['span']) - ms(b, b['span']):+12.3f}")
    for r in (a, b):
        print(f"\nlargest in {r['name']} (ms per step, launches per step):")
        for k, us in r["per"].most_common(top):
            print(f"  {ms(r, us):8.3f} {r['count'][k] / r['steps']:6.1f}  {k[:110]}")


if __name__ == "__main__":
    main()

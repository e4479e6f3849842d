"""Plain eager PyTorch empirical-Fisher scorer: the baseline of `make bench`'s Fisher line.

What the original's scorer does, written as a PyTorch user would: per window (batch 1, eval
mode) forward, cross-entropy with the true labels, backward, accumulate p.grad ** 2 for
every parameter. Same model as knlp's (scripts/ref/gpt2_eager.py), same shapes, random
tokens, the same thread count. Prints one JSON line with tokens/s.
usage: fisher_eager.py L H C T V WINDOWS
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from gpt2_eager import GPT  # noqa: E402


def main():
    layers, heads, c, t, v, windows = map(int, sys.argv[1:7])
    torch.set_num_threads(int(os.environ.get("KNLP_BENCH_THREADS", "2")))
    torch.manual_seed(0)
    m = GPT(layers, heads, c, t, v)
    m.eval()
    x = torch.randint(0, v, (windows + 2, 1, t))
    y = torch.randint(0, v, (windows + 2, 1, t))
    acc = [torch.zeros_like(p) for p in m.parameters()]

    def window(i):
        m.zero_grad(set_to_none=True)
        m(x[i], y[i]).backward()
        for a, p in zip(acc, m.parameters()):
            if p.grad is not None:
                a.add_(p.grad * p.grad)

    for i in range(2):
        window(i)
    t0 = time.perf_counter()
    for i in range(windows):
        window(2 + i)
    dt = time.perf_counter() - t0
    print(json.dumps({"impl": "pytorch-eager", "kind": "empirical", "tokens_per_sec": windows * t / dt,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()

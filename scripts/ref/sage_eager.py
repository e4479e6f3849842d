#!/usr/bin/python3
"""Eager PyTorch GraphSAGE training steps (mean aggregation by index_add, root weight, Adam),
the reference knlp's GNN step is timed against: random batches of the given mean size. The
same work as knlp's layer: mean aggregation commutes with the linear map, so each layer
aggregates the narrower of its input and output (the second layer projects 128 -> 2 first).
usage: sage_eager.py NODES EDGES SUPERVISED [bf16]
bf16: the layers under torch.autocast("cpu", torch.bfloat16), neighbour sums in float32 (as knlp)."""
import json, os, sys, time
import torch

torch.set_num_threads(int(os.environ.get("KNLP_BENCH_THREADS", "2")))
torch.manual_seed(0)
n, e, s = (int(float(a)) for a in sys.argv[1:4])
bf16 = sys.argv[4:5] == ["bf16"]


class Sage(torch.nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.l = torch.nn.Linear(i, o)
        self.r = torch.nn.Linear(i, o, bias=False)

    def forward(self, x, src, dst, inv):
        first = self.l.out_features < self.l.in_features
        msg = x @ self.l.weight.t() if first else x
        agg = torch.zeros(x.shape[0], msg.shape[1]).index_add_(0, dst, msg[src].float()) * inv[:, None]
        left = agg + self.l.bias if first else self.l(agg)
        return left + self.r(x)


c1, c2 = Sage(17, 128), Sage(128, 2)
opt = torch.optim.Adam(list(c1.parameters()) + list(c2.parameters()), lr=3e-3, weight_decay=5e-7)
batches = []
for _ in range(40):
    x = torch.randn(n, 17)
    src, dst = torch.randint(0, n, (e,)), torch.randint(0, n, (e,))
    inv = 1 / torch.zeros(n).index_add_(0, dst, torch.ones(e)).clamp(min=1)
    batches.append((x, src, dst, inv, torch.randint(0, n, (s,)), torch.randint(0, 2, (s,))))


def step(b):
    x, src, dst, inv, sup, y = b
    opt.zero_grad()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        h = torch.relu(c1(x, src, dst, inv))
        out = torch.log_softmax(c2(h, src, dst, inv).float(), 1)
    torch.nn.functional.nll_loss(out[sup], y).backward()
    opt.step()


for b in batches[:3]:
    step(b)
t = time.perf_counter()
for b in batches:
    step(b)
print(json.dumps({"impl": "pytorch-eager" + ("-bf16" if bf16 else ""), "train_steps_per_sec": len(batches) / (time.perf_counter() - t)}))

"""Plain eager PyTorch image-model training step: the baseline `make bench` compares knlp's
image trainer step with. Same architectures as models/vision.cpp (LeNet-5 with batch norm,
ResNet-18 CIFAR variant), same step (forward, cross-entropy, backward, torch.optim.AdamW),
same batch, thread count and libtorch (Debian's python3-torch). Random inputs, so only the
model and optimizer are timed. Prints one JSON line.
usage: vision_eager.py lenet5|resnet18 BATCH STEPS [channels_last] [bf16]
bf16: the forward under torch.autocast("cpu", torch.bfloat16), as a PyTorch user would add it.
"""
import json
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 6, 5), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Basic(nn.Module):
    def __init__(self, i, o, s):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o)
        self.conv2, self.bn2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
        self.short = nn.Sequential()
        if s != 1 or i != o:
            self.short = nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.short(x))


class ResNet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)
        layers, i = [], 64
        for s, w in enumerate([64, 128, 256, 512]):
            for b in range(2):
                layers.append(Basic(i, w, 2 if s > 0 and b == 0 else 1))
                i = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def main():
    arch, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cl = "channels_last" in sys.argv[4:]
    bf16 = "bf16" in sys.argv[4:]
    torch.set_num_threads(int(os.environ.get("KNLP_BENCH_THREADS", "2")))
    torch.manual_seed(0)
    model = LeNet5() if arch == "lenet5" else ResNet18()
    ch = 1 if arch == "lenet5" else 3
    x = torch.randn(batch, ch, 32, 32)
    y = torch.randint(0, 10, (batch,))
    if cl:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if os.environ.get("KNLP_PROFILE"):  # chrome trace of 3 steps, like knlp_bench's KNLP_BENCH_PROFILE
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step()
        prof.export_chrome_trace(os.environ["KNLP_PROFILE"])
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    print(json.dumps({"impl": "eager" + ("-channels-last" if cl else "") + ("-bf16" if bf16 else ""), "images_per_sec": batch / dt,
                      "step_ms": dt * 1e3, "threads": torch.get_num_threads(),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()

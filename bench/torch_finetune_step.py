#!/usr/bin/env python3
"""One fine-tuning step of MAE's models_vit in PyTorch on the CPU, for bench/finetune_step.ts.

The model is scripts/make_finetune_golden.py's compact batched ViT (the way a PyTorch user writes
it; the golden test checks emae's classifier against the same math), global pool, float32;
cross-entropy with label smoothing 0.1; AdamW (0.9, 0.999) over MAE's layer-decay parameter
groups (weight decay 0.05, layer decay 0.75). Drop path 0 on both sides. Prints one JSON line.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from make_finetune_golden import ViT, param_groups_lrd  # noqa: E402

p = argparse.ArgumentParser()
for name in ("image", "patch", "channels", "embed-dim", "depth", "heads", "classes", "batch", "threads", "iters", "warmup"):
    p.add_argument(f"--{name}", type=int, required=True)
p.add_argument("--mlp-ratio", type=float, default=4.0)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
c = {"embedDim": a.embed_dim, "globalPool": True, "patchSize": a.patch, "channels": a.channels,
     "N": (a.image // a.patch) ** 2, "numHeads": a.heads, "mlpRatio": a.mlp_ratio, "depth": a.depth, "numClasses": a.classes}
model = ViT(c)
opt = torch.optim.AdamW(param_groups_lrd(model, 0.05, 0.75), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
for g in opt.param_groups:
    g["lr"] = 1e-3 * g["lr_scale"]
times = []
for i in range(a.warmup + a.iters):
    x = torch.randn(a.batch, a.channels, a.image, a.image)
    y = torch.randint(0, a.classes, (a.batch,))
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if i >= a.warmup:
        times.append((time.perf_counter() - t0) * 1000)
print(json.dumps({"ms": statistics.median(times), "torch": torch.__version__, "threads": torch.get_num_threads()}))

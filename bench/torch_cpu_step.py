#!/usr/bin/env python3
"""PyTorch CPU baseline: one full EMAE training step (forward, backward, AdamW) in float32.

The model is scripts/emae_torch.py: all B*K parts batched into one tensor, SDPA attention,
nn.Linear / nn.LayerNorm, AdamW with MAE's decay / no-decay groups (fused kernel by default,
the fastest CPU variant). Images and permutations are drawn outside the timed region.
Prints one JSON line; peak_rss_mb is the whole process (interpreter + torch included).

  .venv/bin/python bench/torch_cpu_step.py cpu-tiny --threads 2 --iters 3
  .venv/bin/python bench/torch_cpu_step.py '{"imageSize":32,...,"batchSize":8}' --parts 1
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import emae_torch  # noqa: E402

PRESETS = {
    "cpu-tiny": dict(imageSize=32, patchSize=4, channels=3, embedDim=192, depth=12, numHeads=3,
                     decoderEmbedDim=128, decoderDepth=4, decoderNumHeads=4, mlpRatio=4, maskRatio=0.75,
                     parts=4, batchSize=32),
    "cpu-small": dict(imageSize=64, patchSize=8, channels=3, embedDim=384, depth=12, numHeads=6,
                      decoderEmbedDim=256, decoderDepth=4, decoderNumHeads=8, mlpRatio=4, maskRatio=0.75,
                      parts=4, batchSize=16),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", default="cpu-tiny", help="preset name or a JSON config object")
    ap.add_argument("--parts", type=int, help="override parts (1 = plain MAE)")
    ap.add_argument("--batch", type=int, help="override batchSize")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--adamw", choices=("fused", "foreach", "default"), default="fused",
                    help="AdamW implementation (fused is the fastest on CPU; same math)")
    ap.add_argument("--bf16", action="store_true",
                    help="forward and loss under torch.autocast('cpu', dtype=torch.bfloat16) (oneDNN bf16 "
                         "matmuls, AMX where the CPU has it); what our cpuMatmul 'bf16' is compared with")
    args = ap.parse_args()

    if args.config in PRESETS:
        preset, cfg = args.config, dict(PRESETS[args.config])
    else:
        preset, cfg = "custom", json.loads(args.config)
    if args.parts is not None:
        cfg["parts"] = args.parts
    if args.batch is not None:
        cfg["batchSize"] = args.batch
    B = cfg.get("batchSize", 32)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = emae_torch.EMAE(cfg)
    c = model.cfg
    kw = {"fused": {"fused": True}, "foreach": {"foreach": True}, "default": {}}[args.adamw]
    opt = emae_torch.make_optimizer(model, lr=1.5e-4 * B / 256, weight_decay=0.05, **kw)

    # Fresh random data each step (not timed): what a real loader hands over.
    def batch():
        images = torch.randn(B, c["channels"], c["imageSize"], c["imageSize"])
        perm = torch.argsort(torch.rand(B, c["N"]), dim=1).to(torch.int32)
        return images, perm

    def step(images, perm):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            pred, masked = model(images, perm)
            loss, _, _ = emae_torch.emae_loss(pred, masked, images, c)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    times = []
    for i in range(args.warmup + args.iters):
        images, perm = batch()
        t0 = time.perf_counter()
        loss = step(images, perm)
        dt = time.perf_counter() - t0
        if not torch.isfinite(loss):
            raise SystemExit(f"non-finite loss at step {i}")
        if i >= args.warmup:
            times.append(dt * 1e3)

    print(json.dumps({
        "impl": "pytorch", "preset": preset, "parts": c["K"], "threads": torch.get_num_threads(), "batch": B,
        "ms_per_step_median": round(statistics.median(times), 3), "ms_per_step_min": round(min(times), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # Linux: KiB
        "adamw": args.adamw, "bf16": args.bf16,
    }))


if __name__ == "__main__":
    main()

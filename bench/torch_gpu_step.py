#!/usr/bin/env python3
"""PyTorch GPU baseline: one EMAE training step (forward, backward, fused AdamW) with bf16 autocast
and scaled-dot-product attention, on the same card as ours. The model is scripts/emae_torch.py
(all B*K parts batched, SDPA); the loss is computed in fp32 from the bf16-autocast predictions.
Also measures the card's bf16 matrix rate (8192^3 matmul) for model FLOPs utilization.
Prints one JSON line.

  python3 bench/torch_gpu_step.py --preset vit-base --parts 4 --batch 64
"""

import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import emae_torch  # noqa: E402

PRESETS = {
    "vit-base": dict(imageSize=224, patchSize=16, channels=3, embedDim=768, depth=12, numHeads=12,
                     decoderEmbedDim=512, decoderDepth=8, decoderNumHeads=16, mlpRatio=4, maskRatio=0.75),
    "vit-small": dict(imageSize=224, patchSize=16, channels=3, embedDim=384, depth=12, numHeads=6,
                      decoderEmbedDim=256, decoderDepth=4, decoderNumHeads=8, mlpRatio=4, maskRatio=0.75),
}


def bf16_matmul_rate(n=8192, iters=10):
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n ** 3 * iters / (start.elapsed_time(end) / 1e3)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="vit-base", choices=sorted(PRESETS))
    ap.add_argument("--parts", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = ap.parse_args()

    cfg = dict(PRESETS[args.preset], parts=args.parts, batchSize=args.batch)
    torch.manual_seed(0)
    model = emae_torch.EMAE(cfg).cuda()
    c = model.cfg
    opt = emae_torch.make_optimizer(model, lr=1.5e-4 * args.batch / 256, weight_decay=0.05, fused=True)
    fwd = torch.compile(model) if args.compile else model
    B = args.batch

    def step(images, perm):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred, masked = fwd(images, perm)
        loss, _, _ = emae_torch.emae_loss(pred.float(), masked.float(), images, c)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    images = torch.randn(B, c["channels"], c["imageSize"], c["imageSize"], device="cuda")
    perms = [torch.argsort(torch.rand(B, c["N"], device="cuda"), dim=1).to(torch.int32) for _ in range(4)]
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        loss = step(images, perms[i % 4])
        loss_value = loss.item()  # the same host sync our step has (reading the loss)
        end.record()
        torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(start.elapsed_time(end))
        if not torch.isfinite(torch.tensor(loss_value)):
            raise SystemExit(f"non-finite loss at step {i}")
    ms = statistics.median(times)
    print(json.dumps({
        "impl": "pytorch", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "preset": args.preset, "parts": c["K"], "batch": B, "compile": args.compile,
        "ms_per_step_median": round(ms, 3), "ms_per_step_min": round(min(times), 3),
        "images_per_s": round(B / (ms / 1e3), 1),
        "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1),
        "bf16_matmul_tflops": round(bf16_matmul_rate() / 1e12, 1),
    }))


if __name__ == "__main__":
    main()

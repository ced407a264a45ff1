"""The GEMM shapes of one training step, our kernels against cuBLAS (torch.matmul in bf16) on the
same card in the same run (issue 11). Runs on the device machine after gemm_check --shapes:
   python3 bench/gemm_shapes.py vit-base 4 64 > shapes
   .device/gemm_check --shapes shapes > ours
   python3 bench/gpu_gemm_vs_cublas.py shapes ours OUT.json   # prints a markdown table
cuBLAS side: bf16 operands in the step's layouts (transposed views, as autograd passes them),
bf16 output (what PyTorch's autocast produces), median of `reps` CUDA-event timings after warm-up,
fresh random operands per shape. Ours: gemm_check's SHAPE lines, ms_call (fp32 operands converted
to bf16 first, as the backend does today) and ms_kernel (bf16 operands already there).
The time-weighted totals multiply each shape by its count in the step."""
import json
import sys
import time

import torch

shapes_file, ours_file, out_json = sys.argv[1], sys.argv[2], sys.argv[3]
reps = int(sys.argv[4]) if len(sys.argv) > 4 else 20
dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True  # PyTorch's default


def median_ms(fn):
    for _ in range(3):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


ours = {}
for line in open(ours_file):
    f = line.split()
    if not f or f[0] != "SHAPE":
        continue
    M, N, K, layout, count, path, call, kernel = int(f[1]), int(f[2]), int(f[3]), f[4], int(f[5]), f[6], float(f[7]), float(f[8])
    ours.setdefault((M, N, K, layout), {})[path] = {"ms_call": call, "ms_kernel": kernel}

rows = []
gen = torch.Generator(device=dev).manual_seed(11)
for line in open(shapes_file):
    if not line.strip():
        continue
    M, N, K, ta, tb, count = map(int, line.split())
    layout = ("T" if ta else "N") + ("T" if tb else "N")
    A = torch.rand(K, M, device=dev, generator=gen, dtype=torch.bfloat16).t() if ta else torch.rand(M, K, device=dev, generator=gen, dtype=torch.bfloat16)
    B = torch.rand(N, K, device=dev, generator=gen, dtype=torch.bfloat16).t() if tb else torch.rand(K, N, device=dev, generator=gen, dtype=torch.bfloat16)
    A, B = A - 0.5, B - 0.5
    cublas = median_ms(lambda: torch.matmul(A, B))
    row = {"m": M, "n": N, "k": K, "layout": layout, "count": count, "cublas_ms": cublas}
    for path, t in ours.get((M, N, K, layout), {}).items():
        row[f"{path}_ms"] = t["ms_call"]
        row[f"{path}_kernel_ms"] = t["ms_kernel"]
    rows.append(row)
    del A, B

paths = sorted({k[:-3] for r in rows for k in r if k.endswith("_ms") and k != "cublas_ms" and not k.endswith("_kernel_ms")})
tot = lambda key: sum(r[key] * r["count"] for r in rows if key in r)
flop = sum(2.0 * r["m"] * r["n"] * r["k"] * r["count"] for r in rows)
summary = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "step_gflop": flop / 1e9, "cublas_total_ms": tot("cublas_ms"), "paths": {}}
for p in paths:
    summary["paths"][p] = {"total_ms": tot(f"{p}_ms"), "kernel_total_ms": tot(f"{p}_kernel_ms"),
                           "speed_vs_cublas_kernel": tot("cublas_ms") / max(tot(f"{p}_kernel_ms"), 1e-9),
                           "worst_shape_vs_cublas_kernel": min(r["cublas_ms"] / r[f"{p}_kernel_ms"] for r in rows if f"{p}_kernel_ms" in r)}
json.dump({"summary": summary, "shapes": rows}, open(out_json, "w"), indent=1)

head = "| M | N | K | layout | × | cuBLAS ms (TFLOP/s) |" + "".join(f" {p} kernel ms (× cuBLAS speed) | {p} with conversion ms |" for p in paths)
print(head)
print("|" + "---|" * (head.count("|") - 1))
for r in rows:
    tf = 2.0 * r["m"] * r["n"] * r["k"] / (r["cublas_ms"] * 1e-3) / 1e12
    cells = "".join(f" {r[f'{p}_kernel_ms']:.3f} ({r['cublas_ms'] / r[f'{p}_kernel_ms']:.2f}) | {r[f'{p}_ms']:.3f} |" if f"{p}_ms" in r else " – | – |" for p in paths)
    print(f"| {r['m']} | {r['n']} | {r['k']} | {r['layout']} | {r['count']} | {r['cublas_ms']:.3f} ({tf:.0f}) |{cells}")
print(f"\nstep GEMMs ({flop / 1e9:.0f} GFLOP), time-weighted: cuBLAS {summary['cublas_total_ms']:.1f} ms" +
      "".join(f"; {p} kernels {s['kernel_total_ms']:.1f} ms ({s['speed_vs_cublas_kernel']:.2f}× cuBLAS speed, worst shape {s['worst_shape_vs_cublas_kernel']:.2f}), with conversion {s['total_ms']:.1f} ms"
              for p, s in summary["paths"].items()))

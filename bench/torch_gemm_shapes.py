"""PyTorch side of bench/gemm_shapes.sh: the same shapes (stdin) through torch.matmul (forward,
dinp) and addmm_ (weight gradients, accumulating), best of `reps`, same output format.
   python torch_gemm_shapes.py [reps=10] [threads=2] [fp32|bf16]
bf16: fp32 tensors through torch.mm under torch.autocast('cpu', dtype=torch.bfloat16), as in an
autocast training step (casts included, bf16 products; weight gradients added to an fp32 C)."""
import contextlib
import sys
import time

import torch

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
reps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
bf16 = len(sys.argv) > 3 and sys.argv[3] == "bf16"
total_s = total_flop = 0.0
for line in sys.stdin:
    M, N, K, ta, tb, count = map(int, line.split())
    A = torch.rand(K, M).t() if ta else torch.rand(M, K)
    B = torch.rand(N, K).t() if tb else torch.rand(K, N)
    C = torch.zeros(M, N)
    if bf16:
        run = (lambda: C.add_(torch.mm(A, B))) if ta else (lambda: torch.mm(A, B))
    else:
        run = (lambda: C.addmm_(A, B)) if ta else (lambda: torch.matmul(A, B, out=C))
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        run()
        best = 1e30
        for _ in range(reps):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
    flop = 2.0 * M * N * K
    print(f"{M:6d} {N:5d} {K:5d} {ta}{tb} x{count:<2d} {best * 1e3:8.3f} ms {flop / best / 1e9:6.1f} GFLOP/s")
    total_s += best * count
    total_flop += flop * count
print(f"TOTAL {total_s * 1e3:.1f} ms {total_flop / 1e9:.1f} GFLOP {total_flop / total_s / 1e9:.1f} GFLOP/s torch={torch.__version__}{' bf16-autocast' if bf16 else ''}")

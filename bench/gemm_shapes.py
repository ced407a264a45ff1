"""The GEMM shapes of one EMAE training step: "M N K trans_a trans_b count" per line.
   python3 bench/gemm_shapes.py cpu-tiny|cpu-small|vit-base PARTS BATCH
Per linear layer (in → out features over `rows` tokens): forward out = inp·Wᵀ (NT), dinp = dout·W
(NN; not for the patch embedding), dW += doutᵀ·inp (TN, K = rows)."""
import sys

PRESETS = {  # image, patch, D, depth, heads, Dd, decoder depth, decoder heads (lib/presets.ts)
    "cpu-tiny": (32, 4, 192, 12, 3, 128, 4, 4),
    "cpu-small": (64, 8, 384, 12, 6, 256, 4, 8),
    "vit-base": (224, 16, 768, 12, 12, 512, 8, 16),
}

def shapes(image, patch, D, depth, heads, Dd, dec_depth, dec_heads, parts, batch, channels=3, mask_ratio=0.75):
    n = (image // patch) ** 2
    visible = int(n * (1 - mask_ratio))
    P = patch * patch * channels
    seqs = batch * parts
    rows, dec_rows = seqs * (1 + visible), seqs * (1 + n)
    out = []
    def linear(r, i, o, count, dinp=True):
        out.append((r, o, i, 0, 1, count))
        if dinp:
            out.append((r, i, o, 0, 0, count))
        out.append((o, i, r, 1, 0, count))
    linear(seqs * visible, P, D, 1, dinp=False)
    for r, d, blocks in ((rows, D, depth), (dec_rows, Dd, dec_depth)):
        linear(r, d, 3 * d, blocks); linear(r, d, d, blocks); linear(r, d, 4 * d, blocks); linear(r, 4 * d, d, blocks)
    linear(rows, D, Dd, 1); linear(dec_rows, Dd, P, 1)
    return out

if __name__ == "__main__":
    preset, parts, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for s in shapes(*PRESETS[preset], parts, batch):
        print(*s)

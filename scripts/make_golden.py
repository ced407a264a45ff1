#!/usr/bin/env python3
"""Golden fixtures for EMAE (DESIGN.md section 1) from a float64 PyTorch reference.

The reference below is deliberately literal: one image and one part at a time, explicit
token lists and loops over the pair set S, autograd for the gradients and
torch.optim.AdamW for the update. It is cross-checked against the batched model in
scripts/emae_torch.py (which the PyTorch benchmark runs).

Writes test/fixtures/golden-<name>.safetensors with
  images [B,C,H,W] F32, permutation [B,N] I32,
  param.<name> (all state-dict entries), grad.<name> (trainable ones), after.<name> (all,
  after one AdamW step), and __metadata__ {config, loss, recon, consistency, lr,
  weightDecay, beta1, beta2, eps}.

Usage: .venv/bin/python scripts/make_golden.py [outdir]
"""

import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import emae_torch  # noqa: E402

LR, WEIGHT_DECAY, BETAS, EPS = 1e-3, 0.05, (0.9, 0.95), 1e-8

BASE = dict(imageSize=8, patchSize=2, channels=3, embedDim=16, depth=2, numHeads=2, decoderEmbedDim=12,
            decoderDepth=1, decoderNumHeads=3, mlpRatio=4, maskRatio=0.75, parts=4, normPixLoss=True,
            consistencyWeight=1.0, consistencyDistance="mse", layerNormEps=1e-6, batchSize=2)

CONFIGS = {
    "k4-mse-normpix": dict(BASE),
    "k2-l1-gray": dict(imageSize=12, patchSize=3, channels=1, embedDim=24, depth=1, numHeads=3,
                       decoderEmbedDim=16, decoderDepth=2, decoderNumHeads=2, mlpRatio=2, maskRatio=0.5,
                       parts=2, normPixLoss=False, consistencyWeight=0.7, consistencyDistance="l1",
                       layerNormEps=1e-6, batchSize=3),
    "k1-mae": dict(imageSize=8, patchSize=2, channels=3, embedDim=16, depth=1, numHeads=4, decoderEmbedDim=8,
                   decoderDepth=1, decoderNumHeads=2, mlpRatio=4, maskRatio=0.75, parts=1, normPixLoss=True,
                   consistencyWeight=1.0, consistencyDistance="mse", layerNormEps=1e-6, batchSize=3),
    "k3of4-l1": dict(BASE, parts=3, consistencyDistance="l1", consistencyWeight=2.0, batchSize=3),
    # k2-l1-gray uses all K_total = 2 parts, so no patch is masked in two parts and its
    # consistency term is 0 by definition; this one exercises l1 with raw pixels.
    "k2of4-l1-raw": dict(imageSize=12, patchSize=3, channels=1, embedDim=24, depth=1, numHeads=3,
                         decoderEmbedDim=16, decoderDepth=1, decoderNumHeads=2, mlpRatio=2, maskRatio=0.75,
                         parts=2, normPixLoss=False, consistencyWeight=0.5, consistencyDistance="l1",
                         layerNormEps=1e-6, batchSize=2),
}

FROZEN = ("pos_embed", "decoder_pos_embed")


# --- parameters -------------------------------------------------------------------------------

def param_shapes(c):
    """State-dict names and shapes, spelled out from the spec (checked against the module)."""
    D, Dd, p, C, N = c["embedDim"], c["decoderEmbedDim"], c["patchSize"], c["channels"], c["N"]

    def block(prefix, d):
        h = int(d * c["mlpRatio"])
        return {f"{prefix}.norm1.weight": [d], f"{prefix}.norm1.bias": [d],
                f"{prefix}.attn.qkv.weight": [3 * d, d], f"{prefix}.attn.qkv.bias": [3 * d],
                f"{prefix}.attn.proj.weight": [d, d], f"{prefix}.attn.proj.bias": [d],
                f"{prefix}.norm2.weight": [d], f"{prefix}.norm2.bias": [d],
                f"{prefix}.mlp.fc1.weight": [h, d], f"{prefix}.mlp.fc1.bias": [h],
                f"{prefix}.mlp.fc2.weight": [d, h], f"{prefix}.mlp.fc2.bias": [d]}

    s = {"patch_embed.proj.weight": [D, C, p, p], "patch_embed.proj.bias": [D],
         "cls_token": [1, 1, D], "pos_embed": [1, N + 1, D]}
    for i in range(c["depth"]):
        s.update(block(f"blocks.{i}", D))
    s.update({"norm.weight": [D], "norm.bias": [D], "decoder_embed.weight": [Dd, D], "decoder_embed.bias": [Dd],
              "mask_token": [1, 1, Dd], "decoder_pos_embed": [1, N + 1, Dd]})
    for i in range(c["decoderDepth"]):
        s.update(block(f"decoder_blocks.{i}", Dd))
    s.update({"decoder_norm.weight": [Dd], "decoder_norm.bias": [Dd],
              "decoder_pred.weight": [c["P"], Dd], "decoder_pred.bias": [c["P"]]})
    return s


def random_params(c, g):
    """Non-trivial values (biases, LayerNorm affine, tokens all away from MAE's init),
    rounded to float32 because that is what is stored, then held in float64."""
    grid = c["imageSize"] // c["patchSize"]
    out = {}
    for name, shape in param_shapes(c).items():
        if name in FROZEN:
            v = emae_torch.sincos_pos_embed(shape[-1], grid)[None]
        elif name in ("cls_token", "mask_token"):
            v = torch.randn(shape, generator=g, dtype=torch.float64) * 0.02 * 10
        elif "norm" in name and name.endswith(".weight"):
            v = 1 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        elif len(shape) == 1:  # biases, LayerNorm biases
            v = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        else:
            v = torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(math.prod(shape[1:]))
        out[name] = v.float().double()
    return out


# --- per-part reference -----------------------------------------------------------------------

def layer_norm(x, P, prefix, eps):
    return F.layer_norm(x, x.shape[-1:], P[prefix + ".weight"], P[prefix + ".bias"], eps)


def block(x, P, prefix, heads, eps):
    T, D = x.shape
    dh = D // heads
    h = layer_norm(x, P, prefix + ".norm1", eps)
    qkv = F.linear(h, P[prefix + ".attn.qkv.weight"], P[prefix + ".attn.qkv.bias"]).reshape(T, 3, heads, dh)
    q, k, v = (qkv[:, i].transpose(0, 1) for i in range(3))  # [heads, T, dh]
    a = torch.softmax(q @ k.transpose(1, 2) * dh ** -0.5, dim=-1)
    o = (a @ v).transpose(0, 1).reshape(T, D)
    x = x + F.linear(o, P[prefix + ".attn.proj.weight"], P[prefix + ".attn.proj.bias"])
    h = layer_norm(x, P, prefix + ".norm2", eps)
    h = F.gelu(F.linear(h, P[prefix + ".mlp.fc1.weight"], P[prefix + ".mlp.fc1.bias"]))
    return x + F.linear(h, P[prefix + ".mlp.fc2.weight"], P[prefix + ".mlp.fc2.bias"])


def reference_predict(P, image, visible, c):
    """One image [C,H,W], one part (visible patch ids in order) -> prediction [N, P]."""
    eps, N = c["layerNormEps"], c["N"]
    emb = F.conv2d(image[None], P["patch_embed.proj.weight"], P["patch_embed.proj.bias"], stride=c["patchSize"])
    emb = emb[0].flatten(1).t()  # [N, D], patch n = row * grid + col
    pos, dpos = P["pos_embed"][0], P["decoder_pos_embed"][0]

    x = torch.stack([P["cls_token"][0, 0] + pos[0]] + [emb[n] + pos[1 + n] for n in visible])
    for i in range(c["depth"]):
        x = block(x, P, f"blocks.{i}", c["numHeads"], eps)
    x = layer_norm(x, P, "norm", eps)

    y = F.linear(x, P["decoder_embed.weight"], P["decoder_embed.bias"])
    slot = {n: 1 + t for t, n in enumerate(visible)}
    x = torch.stack([y[0]] + [y[slot[n]] if n in slot else P["mask_token"][0, 0] for n in range(N)]) + dpos
    for i in range(c["decoderDepth"]):
        x = block(x, P, f"decoder_blocks.{i}", c["decoderNumHeads"], eps)
    x = layer_norm(x, P, "decoder_norm", eps)
    return F.linear(x, P["decoder_pred.weight"], P["decoder_pred.bias"])[1:]


def reference_target(image, c):
    """Patch n = (row, col) in row-major order, flattened as (row-in-patch, col-in-patch, channel)."""
    p, grid = c["patchSize"], c["imageSize"] // c["patchSize"]
    t = torch.stack([image[:, r * p:(r + 1) * p, q * p:(q + 1) * p].permute(1, 2, 0).reshape(-1)
                     for r in range(grid) for q in range(grid)])
    if c["normPixLoss"]:
        t = (t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, keepdim=True) + 1e-6)
    return t


def visible_sets(perm_b, c):
    V = c["V"]
    return [perm_b[k * V:(k + 1) * V].tolist() for k in range(c["K"])]


def reference_losses(pred, images, perm, c):
    """pred[b][k] = [N,P] -> (loss, recon, consistency), looping over the sets in the spec."""
    dist = (lambda z: z.square()) if c["consistencyDistance"] == "mse" else (lambda z: z.abs())
    rec_terms, con_terms = [], []
    for b in range(images.shape[0]):
        t = reference_target(images[b], c)
        vis = [set(v) for v in visible_sets(perm[b], c)]
        for n in range(c["N"]):
            masked_in = [k for k in range(c["K"]) if n not in vis[k]]
            rec_terms += [(pred[b][k][n] - t[n]).square().mean() for k in masked_in]
            con_terms += [dist(pred[b][i][n] - pred[b][j][n].detach()).mean()
                          for i in masked_in for j in masked_in if i != j]
    recon = torch.stack(rec_terms).mean()
    consistency = torch.stack(con_terms).mean() if con_terms else torch.zeros((), dtype=torch.float64)
    return recon + c["consistencyWeight"] * consistency, recon, consistency


def reference_step(P0, images, perm, c):
    """Loss, grads and one AdamW step of the reference. Returns (losses, grads, after)."""
    P = {k: v.clone().requires_grad_(k not in FROZEN) for k, v in P0.items()}
    pred = [[reference_predict(P, images[b], vis, c) for vis in visible_sets(perm[b], c)]
            for b in range(images.shape[0])]
    losses = reference_losses(pred, images, perm, c)
    losses[0].backward()
    grads = {k: v.grad.clone() for k, v in P.items() if k not in FROZEN}

    # timm add_weight_decay: decay everything with ndim >= 2 that is not a bias (tokens included).
    trainable = [(k, v) for k, v in P.items() if k not in FROZEN]
    decay = [v for k, v in trainable if v.ndim >= 2 and not k.endswith(".bias")]
    no_decay = [v for k, v in trainable if not (v.ndim >= 2 and not k.endswith(".bias"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS, eps=EPS)
    opt.step()
    after = {k: v.detach().clone() for k, v in P.items()}
    return [x.item() for x in losses], grads, after


# --- self-checks -------------------------------------------------------------------------------

def check_consistency_grad(P0, images, perm, c):
    """d L_con / d pred[b,i,n] = (1/|S|) sum_j d'(pred_i - pred_j) / P over pairs (i, j) in S:
    only the first member of a pair is pulled (stop-gradient on the second)."""
    B, K, N = images.shape[0], c["K"], c["N"]
    with torch.no_grad():
        base = torch.stack([torch.stack([reference_predict(P0, images[b], v, c) for v in visible_sets(perm[b], c)])
                            for b in range(B)])
    leaf = base.clone().requires_grad_(True)
    _, _, con = reference_losses(leaf, images, perm, c)
    got = torch.autograd.grad(con, leaf)[0] if con.requires_grad else torch.zeros_like(base)  # S empty

    dprime = (lambda z: 2 * z) if c["consistencyDistance"] == "mse" else torch.sign
    expect, count = torch.zeros_like(base), 0
    for b in range(B):
        vis = [set(v) for v in visible_sets(perm[b], c)]
        for n in range(N):
            m = [k for k in range(K) if n not in vis[k]]
            for i in m:
                for j in m:
                    if i != j:
                        expect[b, i, n] += dprime(base[b, i, n] - base[b, j, n]) / c["P"]
                        count += 1
    torch.testing.assert_close(got, expect / max(count, 1), rtol=1e-12, atol=1e-15)


def check_batched(P0, images, perm, c, losses, grads, after):
    """The batched model (emae_torch, used by the benchmark) must agree with the reference."""
    model = emae_torch.EMAE(c).double()
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == param_shapes(c)
    model.load_state_dict(P0)
    pred, masked = model(images, perm)
    out = emae_torch.emae_loss(pred, masked, images, model.cfg)
    out[0].backward()
    for got, want in zip(out, losses):
        assert abs(got.item() - want) <= 1e-12 * max(1.0, abs(want)), (got.item(), want)
    for k, v in model.named_parameters():
        if k in grads:
            torch.testing.assert_close(v.grad, grads[k], rtol=1e-9, atol=1e-12, msg=k)
        else:
            assert v.grad is None and not v.requires_grad, k
    emae_torch.make_optimizer(model, LR, WEIGHT_DECAY).step()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, after[k], rtol=1e-9, atol=1e-12, msg=k)


# --- safetensors (hand-written: the package may not be installed) ------------------------------

def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        if t.dtype == torch.float32:
            dtype, data = "F32", struct.pack(f"<{t.numel()}f", *t.flatten().tolist())
        elif t.dtype == torch.int32:
            dtype, data = "I32", struct.pack(f"<{t.numel()}i", *t.flatten().tolist())
        else:
            raise TypeError(f"{name}: {t.dtype}")
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    os.replace(tmp, path)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        fmt = {"F32": "f", "I32": "i"}[info["dtype"]]
        vals = struct.unpack(f"<{(e - b) // 4}{fmt}", raw[8 + n + b:8 + n + e])
        out[name] = torch.tensor(vals, dtype=torch.float32 if fmt == "f" else torch.int32).reshape(info["shape"])
    return out, meta


# --- main --------------------------------------------------------------------------------------

def make(name, cfg, seed, outdir):
    c = emae_torch.derive(cfg)
    g = torch.Generator().manual_seed(seed)
    B = cfg["batchSize"]
    images = torch.randn(B, c["channels"], c["imageSize"], c["imageSize"], generator=g).double()
    perm = torch.stack([torch.randperm(c["N"], generator=g) for _ in range(B)]).to(torch.int32)
    P0 = random_params(c, g)

    losses, grads, after = reference_step(P0, images, perm, c)
    check_batched(P0, images, perm, c, losses, grads, after)
    check_consistency_grad(P0, images, perm, c)

    tensors = {"images": images.float(), "permutation": perm}
    tensors.update({f"param.{k}": v.float() for k, v in P0.items()})
    tensors.update({f"grad.{k}": v.float() for k, v in grads.items()})
    tensors.update({f"after.{k}": v.float() for k, v in after.items()})
    metadata = {"config": json.dumps(cfg), "loss": repr(losses[0]), "recon": repr(losses[1]),
                "consistency": repr(losses[2]), "lr": repr(LR), "weightDecay": repr(WEIGHT_DECAY),
                "beta1": repr(BETAS[0]), "beta2": repr(BETAS[1]), "eps": repr(EPS)}
    path = os.path.join(outdir, f"golden-{name}.safetensors")
    write_safetensors(path, tensors, metadata)

    back, meta = read_safetensors(path)
    assert meta == metadata and back.keys() == tensors.keys()
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    print(f"{path}: {os.path.getsize(path)} bytes, loss {losses[0]:.6f} "
          f"(recon {losses[1]:.6f}, consistency {losses[2]:.6f})")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "test", "fixtures")
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)  # deterministic float64 reductions
    for seed, (name, cfg) in enumerate(CONFIGS.items()):
        make(name, cfg, 1000 + seed, outdir)


if __name__ == "__main__":
    main()

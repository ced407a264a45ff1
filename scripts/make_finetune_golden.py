#!/usr/bin/env python3
"""Golden fixtures for fine-tuning (DESIGN.md section 3b) from a float64 PyTorch reference.

The model is MAE's models_vit.VisionTransformer (timm ViT): patch embedding, cls token,
learnable pos_embed added to every token (cls included), pre-norm blocks with qkv bias, exact
GELU, LayerNorm eps 1e-6, no dropout, drop path 0; then globalPool (mean of the N patch
tokens, cls excluded -> fc_norm -> head) or not (norm -> token 0 -> head). Loss: mean over the
batch of cross-entropy against (1 - s)*onehot + s/numClasses, or against given soft targets.
One AdamW step (betas 0.9/0.999, eps 1e-8) with the parameter groups of MAE's
util/lr_decay.py param_groups_lrd (layer-wise lr decay; no weight decay for 1-D parameters,
pos_embed and cls_token).

The reference below is deliberately literal: one image and one token at a time, the patch
embedding as a linear map of each (channel, row, col) patch vector, one attention head at a
time, the cross-entropy spelled out against an explicit target row, autograd for the
gradients and torch.optim.AdamW with one group per parameter. It is cross-checked against a
compact batched nn.Module (conv patch embedding, SDPA, F.cross_entropy, MAE-style grouped
optimizer), and a float32 run of that module is scored with the TS test's own tolerances.

Writes test/fixtures/finetune-golden-<name>.safetensors with
  images [B,C,H,W] F32, labels [B] I32 or targets [B,numClasses] F32,
  param.<name> (the whole state dict), grad.<name> (all of it: every tensor is trainable),
  after.<name> (after one AdamW step), and __metadata__ {config, loss, gradNorm, lr,
  weightDecay, layerDecay, beta1, beta2, eps}.

Usage: .venv/bin/python scripts/make_finetune_golden.py [outdir]
"""

import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import emae_torch  # noqa: E402
from make_golden import read_safetensors, write_safetensors  # noqa: E402

LR, WEIGHT_DECAY, LAYER_DECAY, BETAS, EPS = 1e-3, 0.05, 0.75, (0.9, 0.999), 1e-8
LN_EPS = 1e-6  # MAE's models_vit: partial(nn.LayerNorm, eps=1e-6); the Classifier's default
TOL = 1e-4     # what test/finetune-golden.test.ts allows (relative)
UPDATE_TOL = 1e-3  # ... and for the update after - param, relative L2

CONFIGS = {
    "gap": dict(imageSize=8, patchSize=2, channels=3, embedDim=16, depth=2, numHeads=2, mlpRatio=2,
                numClasses=5, globalPool=True, labelSmoothing=0.1, dropPath=0, batchSize=4),
    "cls": dict(imageSize=8, patchSize=4, channels=1, embedDim=16, depth=2, numHeads=2, mlpRatio=2,
                numClasses=5, globalPool=False, labelSmoothing=0, dropPath=0, batchSize=3),
    # Soft targets are used as given: labelSmoothing must not be applied to them a second time.
    "soft": dict(imageSize=8, patchSize=4, channels=3, embedDim=16, depth=2, numHeads=4, mlpRatio=2,
                 numClasses=5, globalPool=True, labelSmoothing=0.1, dropPath=0, batchSize=4),
}
SOFT = {"soft"}


# --- parameters -------------------------------------------------------------------------------

def derive(cfg):
    c = dict(cfg)
    grid = c["imageSize"] // c["patchSize"]
    assert grid * c["patchSize"] == c["imageSize"] and c["embedDim"] % c["numHeads"] == 0
    c["grid"], c["N"] = grid, grid * grid
    return c


def param_shapes(c):
    """State-dict names and shapes, spelled out from DESIGN.md 3b (checked against the module)."""
    D, p, C, N, h = c["embedDim"], c["patchSize"], c["channels"], c["N"], int(c["embedDim"] * c["mlpRatio"])
    s = {"patch_embed.proj.weight": [D, C, p, p], "patch_embed.proj.bias": [D],
         "cls_token": [1, 1, D], "pos_embed": [1, N + 1, D]}
    for i in range(c["depth"]):
        b = f"blocks.{i}"
        s.update({f"{b}.norm1.weight": [D], f"{b}.norm1.bias": [D],
                  f"{b}.attn.qkv.weight": [3 * D, D], f"{b}.attn.qkv.bias": [3 * D],
                  f"{b}.attn.proj.weight": [D, D], f"{b}.attn.proj.bias": [D],
                  f"{b}.norm2.weight": [D], f"{b}.norm2.bias": [D],
                  f"{b}.mlp.fc1.weight": [h, D], f"{b}.mlp.fc1.bias": [h],
                  f"{b}.mlp.fc2.weight": [D, h], f"{b}.mlp.fc2.bias": [D]})
    final = "fc_norm" if c["globalPool"] else "norm"
    s.update({f"{final}.weight": [D], f"{final}.bias": [D],
              "head.weight": [c["numClasses"], D], "head.bias": [c["numClasses"]]})
    return s


def random_params(c, g):
    """Non-trivial values everywhere (biases, LayerNorm affine, tokens, pos_embed, head all away
    from MAE's init), rounded to float32 because that is what is stored, then held in float64."""
    out = {}
    for name, shape in param_shapes(c).items():
        r = torch.randn(shape, generator=g, dtype=torch.float64)
        if name in ("cls_token", "pos_embed"):
            v = 0.3 * r
        elif "norm" in name and name.endswith(".weight"):
            v = 1 + 0.1 * r
        elif len(shape) == 1:  # biases, LayerNorm biases
            v = 0.1 * r
        else:  # weight matrices: std ~0.2-0.3 (1/sqrt(fan_in)), the head included
            v = r / math.sqrt(math.prod(shape[1:]))
        out[name] = v.float().double()
    return out


def make_batch(c, g, soft):
    """images [B,C,H,W]; labels [B] int; targets [B,numClasses] (float32-representable values):
    a per-row mixup of two label-smoothed one-hots, as timm's Mixup builds them."""
    B, K = c["batchSize"], c["numClasses"]
    images = torch.randn(B, c["channels"], c["imageSize"], c["imageSize"], generator=g).double()
    labels = torch.randint(0, K, (B,), generator=g)
    if not soft:
        return images, labels, None
    s = 0.1
    onehot = lambda y: F.one_hot(y, K).double() * (1 - s) + s / K  # noqa: E731
    other = torch.randint(0, K, (B,), generator=g)
    lam = 0.3 + 0.6 * torch.rand(B, 1, generator=g, dtype=torch.float64)
    targets = (lam * onehot(labels) + (1 - lam) * onehot(other)).float().double()
    assert torch.allclose(targets.sum(1), torch.ones(B, dtype=torch.float64), atol=1e-6)
    return images, labels, targets


# --- literal reference --------------------------------------------------------------------------

def layer_norm(x, w, b):
    """x [D]: (x - mean) / sqrt(biased var + eps) * w + b."""
    mu = x.sum() / x.numel()
    var = ((x - mu) ** 2).sum() / x.numel()
    return (x - mu) / torch.sqrt(var + LN_EPS) * w + b


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def linear(x, P, prefix):
    return P[prefix + ".weight"] @ x + P[prefix + ".bias"]


def block(tokens, P, pre, heads):
    """tokens: list of [D] vectors -> list of [D] vectors (pre-norm residual block)."""
    T, D = len(tokens), tokens[0].numel()
    dh = D // heads
    h = [layer_norm(x, P[pre + ".norm1.weight"], P[pre + ".norm1.bias"]) for x in tokens]
    qkv = [linear(x, P, pre + ".attn.qkv") for x in h]  # [3D]: q | k | v, each head-major
    out = []
    for t in range(T):
        heads_out = []
        for a in range(heads):
            sl = slice(a * dh, (a + 1) * dh)
            q = qkv[t][0 * D:1 * D][sl]
            scores = torch.stack([(q * qkv[u][1 * D:2 * D][sl]).sum() / math.sqrt(dh) for u in range(T)])
            w = torch.exp(scores - scores.max())
            w = w / w.sum()
            heads_out.append(sum(w[u] * qkv[u][2 * D:3 * D][sl] for u in range(T)))
        out.append(tokens[t] + linear(torch.cat(heads_out), P, pre + ".attn.proj"))
    res = []
    for x in out:
        m = linear(gelu(linear(layer_norm(x, P[pre + ".norm2.weight"], P[pre + ".norm2.bias"]), P, pre + ".mlp.fc1")),
                   P, pre + ".mlp.fc2")
        res.append(x + m)
    return res


def reference_logits(P, image, c):
    """One image [C,H,W] -> logits [numClasses]."""
    p, grid, D = c["patchSize"], c["grid"], c["embedDim"]
    W = P["patch_embed.proj.weight"].reshape(D, -1)  # columns in (channel, row, col) order
    pos = P["pos_embed"][0]
    tokens = [P["cls_token"][0, 0] + pos[0]]
    for r in range(grid):  # patch n = r * grid + q
        for q in range(grid):
            v = image[:, r * p:(r + 1) * p, q * p:(q + 1) * p].reshape(-1)
            tokens.append(W @ v + P["patch_embed.proj.bias"] + pos[1 + r * grid + q])
    for i in range(c["depth"]):
        tokens = block(tokens, P, f"blocks.{i}", c["numHeads"])
    if c["globalPool"]:
        feat = layer_norm(sum(tokens[1:]) / c["N"], P["fc_norm.weight"], P["fc_norm.bias"])
    else:
        feat = layer_norm(tokens[0], P["norm.weight"], P["norm.bias"])
    return linear(feat, P, "head")


def target_row(c, label, soft_row):
    if soft_row is not None:
        return soft_row  # used as given
    K, s = c["numClasses"], c["labelSmoothing"]
    return torch.tensor([(1 - s) * (k == label) + s / K for k in range(K)], dtype=torch.float64)


def reference_loss(P, images, labels, targets, c):
    terms = []
    for b in range(images.shape[0]):
        z = reference_logits(P, images[b], c)
        logp = z - z.max() - torch.log(torch.exp(z - z.max()).sum())
        t = target_row(c, int(labels[b]), None if targets is None else targets[b])
        terms.append(-(t * logp).sum())
    return sum(terms) / len(terms)


def layer_id(name, depth):
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def no_weight_decay(name, t):
    return t.ndim == 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token")


def reference_step(P0, images, labels, targets, c):
    """Loss, grads and one AdamW step, one optimizer group per parameter."""
    P = {k: v.clone().requires_grad_(True) for k, v in P0.items()}
    loss = reference_loss(P, images, labels, targets, c)
    loss.backward()
    grads = {k: v.grad.clone() for k, v in P.items()}
    depth = c["depth"]
    groups = [{"params": [v], "lr": LR * LAYER_DECAY ** (depth + 1 - layer_id(k, depth)),
               "weight_decay": 0.0 if no_weight_decay(k, v) else WEIGHT_DECAY} for k, v in P.items()]
    torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS).step()
    after = {k: v.detach().clone() for k, v in P.items()}
    grad_norm = math.sqrt(sum(float(g.square().sum()) for g in grads.values()))
    return loss.item(), grad_norm, grads, after


# --- compact batched model (the way a PyTorch user writes it) -------------------------------------

class ViT(nn.Module):
    def __init__(self, c):
        super().__init__()
        D = c["embedDim"]
        self.global_pool = c["globalPool"]
        self.patch_embed = emae_torch.PatchEmbed(c["patchSize"], c["channels"], D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, c["N"] + 1, D))
        self.blocks = nn.ModuleList(emae_torch.Block(D, c["numHeads"], c["mlpRatio"], LN_EPS) for _ in range(c["depth"]))
        if self.global_pool:
            self.fc_norm = nn.LayerNorm(D, eps=LN_EPS)
        else:
            self.norm = nn.LayerNorm(D, eps=LN_EPS)
        self.head = nn.Linear(D, c["numClasses"])

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.fc_norm(x[:, 1:].mean(1)) if self.global_pool else self.norm(x)[:, 0]
        return self.head(x)


def param_groups_lrd(model, weight_decay, layer_decay):
    """Grouped by (layer id, decay) with an lr_scale, as MAE's util/lr_decay.py does."""
    n = len(model.blocks) + 1
    scales = [layer_decay ** (n - i) for i in range(n + 1)]
    groups = {}
    for name, p in model.named_parameters():
        decay = not (p.ndim == 1 or name in ("pos_embed", "cls_token"))
        lid = 0 if name in ("cls_token", "pos_embed") or name.startswith("patch_embed") else \
            int(name.split(".")[1]) + 1 if name.startswith("blocks") else n
        g = groups.setdefault((lid, decay), {"lr_scale": scales[lid], "weight_decay": weight_decay if decay else 0.0,
                                             "params": []})
        g["params"].append(p)
    return list(groups.values())


def batched_step(model, P0, images, labels, targets, c):
    """-> loss, grad norm, grads, after of the compact model, in the model's dtype."""
    dtype = next(model.parameters()).dtype
    model.load_state_dict({k: v.to(dtype) for k, v in P0.items()})
    logits = model(images.to(dtype))
    if targets is None:
        loss = F.cross_entropy(logits, labels, label_smoothing=c["labelSmoothing"])
    else:
        loss = F.cross_entropy(logits, targets.to(dtype))
    loss.backward()
    grads = {k: v.grad.clone() for k, v in model.named_parameters()}
    grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])).item()
    groups = param_groups_lrd(model, WEIGHT_DECAY, LAYER_DECAY)
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
    for g in opt.param_groups:  # main_finetune's lr_sched.adjust_learning_rate
        g["lr"] = LR * g["lr_scale"]
    opt.step()
    return loss.item(), grad_norm, grads, {k: v.detach().clone() for k, v in model.state_dict().items()}


def rel_l2(a, b):
    return (torch.linalg.vector_norm(a.double() - b.double()) / torch.linalg.vector_norm(b.double()).clamp_min(1e-300)).item()


def check_batched(P0, images, labels, targets, c, ref):
    """The compact float64 model must agree with the literal reference to round-off."""
    loss, grad_norm, grads, after = ref
    model = ViT(c).double()
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == param_shapes(c)
    l2, n2, g2, a2 = batched_step(model, P0, images, labels, targets, c)
    worst = max(abs(l2 - loss) / abs(loss), abs(n2 - grad_norm) / grad_norm)
    for k in grads:
        torch.testing.assert_close(g2[k], grads[k], rtol=1e-9, atol=1e-12, msg=k)
        # atol: where the exact gradient is 0 (the attention key bias) AdamW moves a weight by
        # lr*g/(|g| + eps) with g round-off (~1e-16), so up to ~lr*1e-8 either way.
        torch.testing.assert_close(a2[k], after[k], rtol=1e-9, atol=1e-10, msg=k)
        keep = grads[k].abs() >= 1e-12
        worst = max(worst, rel_l2(g2[k], grads[k]), rel_l2(a2[k][keep] - P0[k][keep], after[k][keep] - P0[k][keep]))
    assert worst < 1e-10, worst
    return worst


def check_float32(P0, images, labels, targets, c, ref):
    """A float32 run of the compact model, scored the way test/finetune-golden.test.ts scores
    the native one (from the stored float32 fixture values), must pass with a clear margin."""
    loss, grad_norm, grads, after = ref
    model = ViT(c).float()
    l32, n32, g32, a32 = batched_step(model, P0, images, labels, targets, c)
    errs = {"loss": abs(l32 - loss) / abs(loss), "gradNorm": abs(n32 - grad_norm) / grad_norm,
            "grad": max(rel_l2(g32[k], grads[k].float()) for k in grads)}
    after_err, update_err = 0.0, 0.0
    for k in grads:
        keep = grads[k].float().abs() >= 1e-6  # the test's near-zero-gradient rule
        p, a_ref = P0[k].float(), after[k].float()
        if (~keep).any():
            assert (a32[k][~keep] - a_ref[~keep]).abs().max().item() <= 1.01 * LR * (1 + WEIGHT_DECAY), k
        after_err = max(after_err, rel_l2(a32[k][keep], a_ref[keep]))
        update_err = max(update_err, rel_l2(a32[k][keep].double() - p[keep].double(),
                                            a_ref[keep].double() - p[keep].double()))
    errs.update(after=after_err, update=update_err)
    for what, e in errs.items():
        assert e <= (UPDATE_TOL if what == "update" else TOL) / 10, (what, e)
    return errs


# --- main --------------------------------------------------------------------------------------

def make(name, cfg, seed, outdir):
    c = derive(cfg)
    g = torch.Generator().manual_seed(seed)
    images, labels, targets = make_batch(c, g, name in SOFT)
    P0 = random_params(c, g)

    ref = reference_step(P0, images, labels, targets, c)
    loss, grad_norm, grads, after = ref
    cross = check_batched(P0, images, labels, targets, c, ref)
    f32 = check_float32(P0, images, labels, targets, c, ref)

    tensors = {"images": images.float()}
    if targets is None:
        tensors["labels"] = labels.to(torch.int32)
    else:
        tensors["targets"] = targets.float()
    tensors.update({f"param.{k}": v.float() for k, v in P0.items()})
    tensors.update({f"grad.{k}": v.float() for k, v in grads.items()})
    tensors.update({f"after.{k}": v.float() for k, v in after.items()})
    metadata = {"config": json.dumps(cfg), "loss": repr(loss), "gradNorm": repr(grad_norm), "lr": repr(LR),
                "weightDecay": repr(WEIGHT_DECAY), "layerDecay": repr(LAYER_DECAY),
                "beta1": repr(BETAS[0]), "beta2": repr(BETAS[1]), "eps": repr(EPS)}
    path = os.path.join(outdir, f"finetune-golden-{name}.safetensors")
    write_safetensors(path, tensors, metadata)

    back, meta = read_safetensors(path)
    assert meta == metadata and back.keys() == tensors.keys()
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    print(f"{path}: {os.path.getsize(path)} bytes, loss {loss:.6f}, grad norm {grad_norm:.6f}; "
          f"batched float64 vs literal: worst relative {cross:.1e}; float32 vs fixture: "
          + ", ".join(f"{k} {v:.1e}" for k, v in f32.items()))


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "test", "fixtures")
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)  # deterministic float64 reductions
    for seed, (name, cfg) in enumerate(CONFIGS.items()):
        make(name, cfg, 2000 + seed, outdir)


if __name__ == "__main__":
    main()

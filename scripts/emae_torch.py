"""Batched PyTorch EMAE (DESIGN.md section 1), written the way a PyTorch user would.

All B*K parts of a batch run through the encoder/decoder as one [B*K, T, D] tensor.
Parameter names match facebookresearch/mae models_mae.py (timm Blocks), so
`state_dict()` is the MAE state dict. Used by bench/torch_cpu_step.py and checked
against the per-part reference in scripts/make_golden.py.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULTS = {
    "mlpRatio": 4,
    "maskRatio": 0.75,
    "normPixLoss": True,
    "consistencyWeight": 1.0,
    "consistencyDistance": "mse",
    "layerNormEps": 1e-6,
}


def derive(cfg):
    """Fill defaults and compute the derived sizes (N, P, K_total, V, K); validate."""
    c = {**DEFAULTS, **cfg}
    side = c["imageSize"] // c["patchSize"]
    assert side * c["patchSize"] == c["imageSize"], "imageSize % patchSize != 0"
    c["N"] = side * side
    c["P"] = c["patchSize"] ** 2 * c["channels"]
    c["K_total"] = round(1.0 / (1.0 - c["maskRatio"]))
    assert c["N"] % c["K_total"] == 0, "N % K_total != 0"
    c["V"] = c["N"] // c["K_total"]
    c["K"] = c.get("parts") or c["K_total"]
    c["parts"] = c["K"]
    assert 1 <= c["K"] <= c["K_total"], "parts must be in 1..K_total"
    assert c["consistencyDistance"] in ("mse", "l1")
    for dim, heads in ((c["embedDim"], c["numHeads"]), (c["decoderEmbedDim"], c["decoderNumHeads"])):
        assert dim % heads == 0 and dim % 4 == 0, "width must divide by heads and by 4 (sin-cos)"
    return c


# --- MAE util/pos_embed.py, transcribed (float64) ------------------------------------------

def _sincos_1d(dim, pos):
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = pos.reshape(-1)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_pos_embed(dim, grid_size, cls_token=True):
    """get_2d_sincos_pos_embed: [1 + g*g, dim] (cls row zero), float64."""
    g = torch.arange(grid_size, dtype=torch.float64)
    # np.meshgrid(grid_w, grid_h) ('xy'): grid[0][i, j] = j, i.e. the first half of the
    # channels encodes the column index, the second half the row index.
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), dim=0)
    emb = torch.cat([_sincos_1d(dim // 2, grid[0]), _sincos_1d(dim // 2, grid[1])], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb], dim=0)
    return emb


def patchify(images, p):
    """[B,C,H,W] -> [B,N,p*p*C]; MAE 'nchpwq->nhwpqc' (patches row-major, channel fastest)."""
    B, C, H, W = images.shape
    h, w = H // p, W // p
    x = images.reshape(B, C, h, p, w, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(B, h * w, p * p * C)


def pixel_target(images, cfg):
    t = patchify(images, cfg["patchSize"])
    if cfg["normPixLoss"]:
        mean = t.mean(dim=-1, keepdim=True)
        var = t.var(dim=-1, keepdim=True)  # unbiased, as in MAE
        t = (t - mean) / (var + 1e-6) ** 0.5
    return t


# --- model -----------------------------------------------------------------------------------

class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # scale dh^-1/2
        return self.proj(o.transpose(1, 2).reshape(B, T, D))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact erf GELU


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, p, c, d):
        super().__init__()
        self.proj = nn.Conv2d(c, d, kernel_size=p, stride=p)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D], patches row-major


class EMAE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = self.cfg = derive(cfg)
        D, Dd, eps = c["embedDim"], c["decoderEmbedDim"], c["layerNormEps"]
        grid = c["imageSize"] // c["patchSize"]
        self.patch_embed = PatchEmbed(c["patchSize"], c["channels"], D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        # Frozen, but kept as parameters so the state dict is MAE's.
        self.pos_embed = nn.Parameter(sincos_pos_embed(D, grid).float()[None], requires_grad=False)
        self.blocks = nn.ModuleList(Block(D, c["numHeads"], c["mlpRatio"], eps) for _ in range(c["depth"]))
        self.norm = nn.LayerNorm(D, eps=eps)
        self.decoder_embed = nn.Linear(D, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(Dd, grid).float()[None], requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            Block(Dd, c["decoderNumHeads"], c["mlpRatio"], eps) for _ in range(c["decoderDepth"]))
        self.decoder_norm = nn.LayerNorm(Dd, eps=eps)
        self.decoder_pred = nn.Linear(Dd, c["P"])
        self.init_mae_()

    def init_mae_(self):
        """MAE initialize_weights (pos embeds are already set)."""
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.patch_embed.proj.bias)

    def forward(self, images, permutation):
        """-> pred [B,K,N,P] and masked [B,K,N] (1 where patch n is masked in part k)."""
        c = self.cfg
        B, K, V, N = images.shape[0], c["K"], c["V"], c["N"]
        perm = permutation.long()
        ids = perm[:, :K * V]  # [B, K*V]; part k = ids[:, k*V:(k+1)*V], row b*K+k below

        x = self.patch_embed(images) + self.pos_embed[:, 1:]
        D = x.shape[-1]
        x = torch.gather(x, 1, ids[..., None].expand(-1, -1, D)).reshape(B * K, V, D)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B * K, -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))

        # Put the visible tokens back at their patch positions, mask_token elsewhere.
        Dd = x.shape[-1]
        ids_p = ids.reshape(B * K, V)
        full = self.mask_token.to(x.dtype).expand(B * K, N, Dd).scatter(1, ids_p[..., None].expand(-1, -1, Dd), x[:, 1:])
        x = torch.cat([x[:, :1], full], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]

        masked = torch.ones(B * K, N, dtype=pred.dtype, device=pred.device).scatter(1, ids_p, 0.0)
        return pred.reshape(B, K, N, -1), masked.reshape(B, K, N)


def emae_loss(pred, masked, images, cfg):
    """-> (loss, recon, consistency) as 0-d tensors."""
    t = pixel_target(images, cfg)
    rec = (pred - t[:, None]).square().mean(-1)  # [B,K,N]
    recon = (rec * masked).sum() / masked.sum().clamp_min(1)

    K = pred.shape[1]
    # Ordered pairs (i, j), i != j, patch masked in both; only the first member gets gradient.
    off_diag = 1.0 - torch.eye(K, dtype=pred.dtype, device=pred.device)
    pair = masked[:, :, None, :] * masked[:, None, :, :] * off_diag[None, :, :, None]  # [B,K,K,N]
    diff = pred[:, :, None] - pred.detach()[:, None]  # [B,K,K,N,P]
    d = diff.square() if cfg["consistencyDistance"] == "mse" else diff.abs()
    consistency = (d.mean(-1) * pair).sum() / pair.sum().clamp_min(1)  # 0 when S is empty

    return recon + cfg["consistencyWeight"] * consistency, recon, consistency


def adamw_param_groups(model, weight_decay):
    """MAE / timm add_weight_decay: no decay for 1-D params and biases; frozen params skipped."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model, lr, weight_decay, **kw):
    return torch.optim.AdamW(adamw_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.95), eps=1e-8, **kw)

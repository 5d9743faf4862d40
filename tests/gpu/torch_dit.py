#!/usr/bin/env python3
"""DiT training throughput in PyTorch eager, the comparison tests/gpu/run.sh
prints beside diffuse's: the same network (adaLN-Zero blocks, patch 2 on
32x32x4 latents, 1000 classes), the same loss (eps-prediction MSE) and AdamW.

    torch_dit.py MODEL BATCH {fp32,tf32,bf16}

prints one line: RESULT torch MODEL-PRECISION BATCH images/s.
"""
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {"DiT-S/2": (12, 384, 6), "DiT-B/2": (12, 768, 12), "DiT-L/2": (24, 1024, 16), "DiT-XL/2": (28, 1152, 16)}


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.ada = nn.Linear(d, 6 * d)

    def forward(self, x, c):
        s1, g1, m1, s2, g2, m2 = self.ada(F.silu(c)).chunk(6, dim=1)
        n, t, d = x.shape
        q, k, v = self.qkv(modulate(self.norm1(x), s1, g1)).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d)
        x = x + m1.unsqueeze(1) * self.proj(a)
        h = self.fc2(F.gelu(self.fc1(modulate(self.norm2(x), s2, g2)), approximate="tanh"))
        return x + m2.unsqueeze(1) * h


class DiT(nn.Module):
    def __init__(self, depth, d, heads, patch=2, channels=4, size=32, classes=1000):
        super().__init__()
        self.patch, self.channels, self.grid = patch, channels, size // patch
        self.x_embed = nn.Conv2d(channels, d, patch, patch)
        self.pos = nn.Parameter(torch.zeros(1, self.grid * self.grid, d), requires_grad=False)
        self.t_mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.y_table = nn.Embedding(classes + 1, d)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(d, 2 * d)
        self.final = nn.Linear(d, patch * patch * channels)

    def forward(self, x, t, y):
        half = 128
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        c = self.t_mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1)) + self.y_table(y)
        x = self.x_embed(x).flatten(2).transpose(1, 2) + self.pos
        for b in self.blocks:
            x = b(x, c)
        shift, scale = self.final_ada(F.silu(c)).chunk(2, dim=1)
        x = self.final(modulate(self.final_norm(x), shift, scale))
        n, p, g = x.shape[0], self.patch, self.grid
        x = x.view(n, g, g, p, p, self.channels).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(n, self.channels, g * p, g * p)


def main():
    model_name, batch, precision = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    dev = torch.device("cuda")
    depth, d, heads = CONFIGS[model_name]
    model = DiT(depth, d, heads).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    x = torch.randn(batch, 4, 32, 32, device=dev)
    eps = torch.randn_like(x)
    t = torch.randint(0, 1000, (batch,), device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.mse_loss(model(x, t, y).float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    steps = 8
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    ips = batch * steps / (time.perf_counter() - t0)
    print(f"RESULT torch {model_name}-{precision} {batch} {ips:.2f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The PyTorch side of bench/vs-pytorch: the DiT network of the `dit`
backbone (the official architecture, see the DiT paper and its models.py)
written as an ordinary PyTorch module, trained and sampled exactly as
bench/dit-bench drives the C plugin, and timed the same way.

    dit_peer.py train  --depth 12 --hidden 384 --heads 6 --patch 2 ...
    dit_peer.py sample ...

It prints one JSON object with the same keys as dit-bench. Attention goes
through torch.nn.functional.scaled_dot_product_attention (PyTorch's fused
kernel), linear layers through nn.Linear, so the peer is the model as a
PyTorch user would write it, not a port of the C code.
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

FREQ_DIM = 256


def sincos_table(hidden, grid):
    """Fixed 2-D positions: the first half of the features encodes the
    column, the second half the row; each half is all sines then all
    cosines of position * 10000^(-m / (hidden / 4))."""
    quarter = hidden // 4
    omega = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    pos = torch.arange(grid, dtype=torch.float64)
    rows = pos.repeat_interleave(grid)
    cols = pos.repeat(grid)

    def axis(p):
        angles = p[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([axis(cols), axis(rows)], dim=1).float().unsqueeze(0)


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Block(nn.Module):
    """adaLN-Zero transformer block."""

    def __init__(self, hidden, heads, mlp_ratio):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.fc1 = nn.Linear(hidden, width)
        self.fc2 = nn.Linear(width, hidden)
        self.ada = nn.Linear(hidden, 6 * hidden)

    def attention(self, h):
        n, tokens, hidden = h.shape
        q, k, v = self.qkv(h).view(n, tokens, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v)
        return self.proj(mixed.transpose(1, 2).reshape(n, tokens, hidden))

    def forward(self, x, silu_c):
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.ada(silu_c).chunk(6, dim=1)
        x = x + gate_a.unsqueeze(1) * self.attention(modulate(self.norm1(x), shift_a, scale_a))
        h = F.gelu(self.fc1(modulate(self.norm2(x), shift_m, scale_m)), approximate="tanh")
        return x + gate_m.unsqueeze(1) * self.fc2(h)


class DiT(nn.Module):
    def __init__(self, channels, size, patch, hidden, depth, heads, mlp_ratio, classes, out_channels):
        super().__init__()
        self.patch, self.out_channels, self.grid = patch, out_channels, size // patch
        self.patch_embed = nn.Conv2d(channels, hidden, patch, stride=patch)
        self.pos_embed = nn.Parameter(sincos_table(hidden, self.grid), requires_grad=False)
        self.t_fc1 = nn.Linear(FREQ_DIM, hidden)
        self.t_fc2 = nn.Linear(hidden, hidden)
        self.classes = classes
        self.label_table = nn.Embedding(classes + 1, hidden) if classes > 0 else None
        self.blocks = nn.ModuleList(Block(hidden, heads, mlp_ratio) for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(hidden, 2 * hidden)
        self.final = nn.Linear(hidden, patch * patch * out_channels)
        half = FREQ_DIM // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.initialise()

    def initialise(self):
        """The official initialisation: Xavier everywhere, then zeros in
        every adaLN and the final projection."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        if self.label_table is not None:
            nn.init.normal_(self.label_table.weight, std=0.02)
        nn.init.normal_(self.t_fc1.weight, std=0.02)
        nn.init.normal_(self.t_fc2.weight, std=0.02)
        for layer in [b.ada for b in self.blocks] + [self.final_ada, self.final]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x, t, y):
        n = x.shape[0]
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        args = t[:, None].float() * self.freqs[None, :]
        c = self.t_fc2(F.silu(self.t_fc1(torch.cat([args.cos(), args.sin()], dim=1))))
        if self.label_table is not None:
            c = c + self.label_table(y)
        silu_c = F.silu(c)
        for block in self.blocks:
            tokens = block(tokens, silu_c)
        shift, scale = self.final_ada(silu_c).chunk(2, dim=1)
        h = self.final(modulate(self.final_norm(tokens), shift, scale))
        p, g, co = self.patch, self.grid, self.out_channels
        h = h.view(n, g, g, p, p, co).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(n, co, g * p, g * p)


def build(args):
    return DiT(args.channels, args.size, args.patch, args.hidden, args.depth, args.heads, args.mlp_ratio,
               args.classes, args.channels)


def train(args):
    model = build(args)
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=args.lr, weight_decay=args.weight_decay)
    ema = [p.detach().clone() for p in trained] if args.ema > 0 else None
    n, shape = args.batch, (args.batch, args.channels, args.size, args.size)
    gen = torch.Generator().manual_seed(0)
    rows = {k: [] for k in ("step_s", "data_s", "forward_s", "backward_s", "optimiser_s", "cpu_s")}
    for step in range(args.warmup + args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        x0 = torch.randn(shape, generator=gen)
        eps = torch.randn(shape, generator=gen)
        t = torch.rand(n, generator=gen)
        tb = t.view(n, 1, 1, 1)
        x_t = (1 - tb) * x0 + tb * eps
        target = eps - x0
        y = None
        if args.classes > 0:
            y = torch.randint(args.classes, (n,), generator=gen)
            y = torch.where(torch.rand(n, generator=gen) < args.class_dropout, args.classes, y)
        t1 = time.perf_counter()
        loss = F.mse_loss(model(x_t, t, y), target)
        loss.item()
        t2 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(trained, args.grad_clip if args.grad_clip > 0 else float("inf"))
        opt.step()
        if ema is not None:
            decay = args.ema if not args.ema_warmup else min(args.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in trained], 1 - decay)
        t4 = time.perf_counter()
        if step >= args.warmup:
            cpu = time.process_time() - c0
            for key, value in zip(rows, (t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3, cpu)):
                rows[key].append(value)
    return model, rows


def sample(args):
    model = build(args).eval()
    n, shape = args.batch, (args.batch, args.channels, args.size, args.size)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    guided = args.classes > 0 and args.cfg_scale != 1.0
    y = None
    if guided:
        y = torch.cat([torch.arange(n) % args.classes, torch.full((n,), args.classes)])
    elif args.classes > 0:
        y = torch.arange(n) % args.classes
    total = args.warmup + args.steps
    dt = 1.0 / total
    rows = {"step_s": [], "cpu_s": []}
    with torch.inference_mode():
        for step in range(total):
            t0, c0 = time.perf_counter(), time.process_time()
            t = 1.0 - step * dt
            xin = torch.cat([x, x]) if guided else x
            out = model(xin, torch.full((xin.shape[0],), t), y)
            if guided:
                cond, uncond = out.chunk(2)
                v = uncond + args.cfg_scale * (cond - uncond)
            else:
                v = out
            x = x - dt * v
            if step >= args.warmup:
                rows["step_s"].append(time.perf_counter() - t0)
                rows["cpu_s"].append(time.process_time() - c0)
    return model, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["train", "sample"])
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--mlp-ratio", type=float, default=4.0)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--grad-clip", type=float, default=0.0)
    ap.add_argument("--ema", type=float, default=0.9999)
    ap.add_argument("--ema-warmup", type=int, default=0)
    ap.add_argument("--class-dropout", type=float, default=0.1)
    ap.add_argument("--cfg-scale", type=float, default=4.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, rows = (train if args.mode == "train" else sample)(args)
    result = {
        "mode": args.mode,
        "backbone": "pytorch",
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "torch": torch.__version__,
    }
    result.update(rows)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

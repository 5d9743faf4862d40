#!/usr/bin/env python3
"""Reference UNet of latent diffusion for the C parity test (tests/test_unet_parity.c).

The openaimodel UNet (Rombach et al. 2022, after Dhariwal & Nichol 2021)
re-stated from its specification in PyTorch and computed in float64, so the
golden values are exact to float32 precision. Module and attribute names
follow the official ones, so state_dict keys are the official keys.

Two tiny configurations cover the two families of blocks:

  unet_tiny  SpatialTransformer blocks with cross-attention to a context
             (an external sequence plus the class label as a learned
             token), scale-shift norm, ResBlock up/down-sampling, learned
             sigma (twice the output channels)
  unet_adm   the classic AttentionBlock (legacy head order), the label
             added to the time embedding (label_emb), additive time
             embedding, convolutional Downsample/Upsample

For each, random non-zero weights everywhere (zero-initialised layers
included), one forward pass and the backward pass of sum(out * w) for a
fixed random w. Written:

  data/<name>_weights.safetensors  parameters under the official names (float16
                                   values: the weights are drawn that way)
  data/<name>_inputs.safetensors   x, t, y (int64) and, for unet_tiny, context
  data/<name>_out.safetensors      out, w, grad.<param> for every parameter,
                                   grad.context for unet_tiny

Run it with PyTorch, safetensors and NumPy installed:

    python3 tests/reference/unet_reference.py
"""

import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import save_file

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
LABEL_CONTEXT_NAME = "cond_stage_model.embedding.weight"

CONFIGS = {
    "unet_tiny": dict(in_channels=4, out_channels=8, size=8, model_channels=4, channel_mult=[1, 2],
                      num_res_blocks=1, attention_resolutions=[2], num_heads=-1, num_head_channels=4,
                      use_scale_shift_norm=True, resblock_updown=True, conv_resample=True,
                      use_spatial_transformer=True, transformer_depth=1, context_dim=6,
                      class_cond="context", num_classes=10, groups=2, context_len=3, seed=11),
    "unet_adm": dict(in_channels=3, out_channels=3, size=8, model_channels=4, channel_mult=[1, 2],
                     num_res_blocks=1, attention_resolutions=[1, 2], num_heads=2, num_head_channels=-1,
                     use_scale_shift_norm=False, resblock_updown=False, conv_resample=True,
                     use_spatial_transformer=False, transformer_depth=1, context_dim=0,
                     class_cond="embedding", num_classes=10, groups=2, context_len=0, seed=12),
}
TIMESTEPS = [0.0, 123.0, 999.0]
LABELS = [3, 10, 7]  # 10: the null class


def timestep_embedding(t, dim):
    """[cos(t f_m), sin(t f_m)], f_m = exp(-ln(10000) m / half), rounded as
    the official float32 code: exponent and product in float32, the
    transcendental functions correctly rounded from float32 arguments."""
    half = dim // 2
    m = np.arange(half, dtype=np.float32)
    exponent = np.float32(-math.log(10000.0)) * m / np.float32(half)
    freqs = np.exp(exponent.astype(np.float64)).astype(np.float32)
    args = (np.asarray(t, dtype=np.float32)[:, None] * freqs[None, :]).astype(np.float64)
    emb = np.concatenate([np.cos(args), np.sin(args)], axis=1).astype(np.float32)
    if dim % 2:
        emb = np.concatenate([emb, np.zeros((len(t), 1), np.float32)], axis=1)
    return torch.from_numpy(emb.astype(np.float64))


class ResBlock(nn.Module):
    def __init__(self, ch, out, emb_dim, groups, scale_shift, up=False, down=False):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, ch, eps=1e-5), nn.SiLU(),
                                       nn.Conv2d(ch, out, 3, padding=1))
        self.up, self.down, self.scale_shift = up, down, scale_shift
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out if scale_shift else out))
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, out, eps=1e-5), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out, out, 3, padding=1))
        self.skip_connection = nn.Identity() if out == ch else nn.Conv2d(ch, out, 1)

    def resample(self, x):
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.avg_pool2d(x, 2)

    def forward(self, x, emb, context):
        if self.up or self.down:
            h = self.in_layers[:-1](x)
            h, x = self.resample(h), self.resample(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = torch.chunk(e, 2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Legacy order: qkv reshaped to (B heads, 3 ch, T), split inside each head."""

    def __init__(self, ch, heads, groups):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch, eps=1e-5)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)

    def forward(self, x, emb, context):
        b, c, hh, ww = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        bs, width, length = qkv.shape
        ch = width // (3 * self.heads)
        q, k, v = qkv.reshape(bs * self.heads, 3 * ch, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
        a = torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)
        return (flat + self.proj_out(a)).reshape(b, c, hh, ww)


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim, heads, dim_head):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head ** -0.5
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x, context=None):
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        n, h = x.shape[0], self.heads

        def split(t):
            return t.reshape(n, t.shape[1], h, -1).permute(0, 2, 1, 3)

        q, k, v = split(q), split(k), split(v)
        attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        out = (attn @ v).permute(0, 2, 1, 3).reshape(n, x.shape[1], -1)
        return self.to_out(out)


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x):
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, mult * dim), nn.Dropout(0.0), nn.Linear(mult * dim, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, dim_head, context_dim):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim or dim, heads, dim_head)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    def __init__(self, ch, heads, dim_head, depth, context_dim, groups):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.proj_in = nn.Conv2d(ch, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)])
        self.proj_out = nn.Conv2d(inner, ch, 1)

    def forward(self, x, emb, context):
        b, c, hh, ww = x.shape
        h = self.proj_in(self.norm(x))
        h = h.reshape(b, h.shape[1], hh * ww).transpose(1, 2)
        for block in self.transformer_blocks:
            h = block(h, context)
        h = h.transpose(1, 2).reshape(b, -1, hh, ww)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x, emb, context):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, emb, context):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class InputConv(nn.Conv2d):
    def forward(self, x, emb, context):
        return super().forward(x)


class Stage(nn.ModuleList):
    """TimestepEmbedSequential: every layer gets emb and context."""

    def forward(self, x, emb, context):
        for layer in self:
            x = layer(x, emb, context)
        return x


class UNetModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        mc, groups, ss = c["model_channels"], c["groups"], c["use_scale_shift_norm"]
        emb_dim = 4 * mc
        rows = c["num_classes"] + 1
        self.cfg = c
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if c["class_cond"] == "embedding":
            self.label_emb = nn.Embedding(rows, emb_dim)

        def heads_of(ch):
            return ch // c["num_head_channels"] if c["num_head_channels"] > 0 else c["num_heads"]

        def attention(ch):
            heads = heads_of(ch)
            if c["use_spatial_transformer"]:
                return SpatialTransformer(ch, heads, ch // heads, c["transformer_depth"], c["context_dim"], groups)
            return AttentionBlock(ch, heads, groups)

        def res(ch, out, **kw):
            return ResBlock(ch, out, emb_dim, groups, ss, **kw)

        self.input_blocks = nn.ModuleList([Stage([InputConv(c["in_channels"], mc, 3, padding=1)])])
        chans, ch, ds = [mc], mc, 1
        levels = len(c["channel_mult"])
        for level, mult in enumerate(c["channel_mult"]):
            for _ in range(c["num_res_blocks"]):
                layers = [res(ch, mult * mc)]
                ch = mult * mc
                if ds in c["attention_resolutions"]:
                    layers.append(attention(ch))
                self.input_blocks.append(Stage(layers))
                chans.append(ch)
            if level != levels - 1:
                down = res(ch, ch, down=True) if c["resblock_updown"] else Downsample(ch)
                self.input_blocks.append(Stage([down]))
                chans.append(ch)
                ds *= 2
        self.middle_block = Stage([res(ch, ch), attention(ch), res(ch, ch)])
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(c["channel_mult"]))[::-1]:
            for i in range(c["num_res_blocks"] + 1):
                layers = [res(ch + chans.pop(), mc * mult)]
                ch = mc * mult
                if ds in c["attention_resolutions"]:
                    layers.append(attention(ch))
                if level and i == c["num_res_blocks"]:
                    layers.append(res(ch, ch, up=True) if c["resblock_updown"] else Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Stage(layers))
        self.out = nn.Sequential(nn.GroupNorm(groups, ch, eps=1e-5), nn.SiLU(),
                                 nn.Conv2d(mc, c["out_channels"], 3, padding=1))

    def forward(self, x, t, y, context, label_table):
        emb = self.time_embed(timestep_embedding(t, self.cfg["model_channels"]))
        if self.cfg["class_cond"] == "embedding":
            emb = emb + self.label_emb(y)
        else:
            token = label_table[y][:, None, :]
            context = token if context is None else torch.cat([context, token], dim=1)
        skips, h = [], x
        for stage in self.input_blocks:
            h = stage(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        for stage in self.output_blocks:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, context)
        return self.out(h)


def random_weights(named_shapes, gen):
    weights = {}
    for name, shape in named_shapes:
        if len(shape) > 1:
            fan_in = int(np.prod(shape[1:]))
            w = torch.randn(shape, generator=gen, dtype=torch.float64) / math.sqrt(fan_in)
        elif name.endswith("norm.weight") or ".norm" in name and name.endswith(".weight") or \
                name.endswith("in_layers.0.weight") or name.endswith("out_layers.0.weight") or \
                name == "out.0.weight":
            w = 1 + 0.2 * torch.randn(shape, generator=gen, dtype=torch.float64)
        else:
            w = 0.2 * torch.randn(shape, generator=gen, dtype=torch.float64)
        # Rounded to float16 so the weights file stays small; the model
        # computes with exactly these values.
        weights[name] = w.to(torch.float16).to(torch.float32)
    return weights


def run(name, c):
    gen = torch.Generator().manual_seed(c["seed"])
    model = UNetModel(c).double()
    shapes = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    if c["class_cond"] == "context":
        shapes.append((LABEL_CONTEXT_NAME, (c["num_classes"] + 1, c["context_dim"])))
    weights = random_weights(shapes, gen)
    params = {k: v.to(torch.float64).clone().requires_grad_(True) for k, v in weights.items()}
    model.load_state_dict({k: v for k, v in params.items() if k != LABEL_CONTEXT_NAME})
    # Use the very tensors in `params` so their .grad are filled.
    for module_name, module in model.named_modules():
        for pname, _ in list(module.named_parameters(recurse=False)):
            full = f"{module_name}.{pname}" if module_name else pname
            setattr(module, pname, nn.Parameter(params[full]))
    for full, p in model.named_parameters():
        params[full] = p

    n, size = len(TIMESTEPS), c["size"]
    x = torch.randn((n, c["in_channels"], size, size), generator=gen, dtype=torch.float64).float().double()
    t = torch.tensor(TIMESTEPS, dtype=torch.float64)
    y = torch.tensor(LABELS, dtype=torch.int64)
    context = None
    if c["context_len"]:
        context = torch.randn((n, c["context_len"], c["context_dim"]), generator=gen,
                              dtype=torch.float64).float().double().requires_grad_(True)
    label_table = params.get(LABEL_CONTEXT_NAME)
    out = model(x, TIMESTEPS, y, context, label_table)
    w = torch.randn(out.shape, generator=gen, dtype=torch.float64).float().double()
    (out * w).sum().backward()

    os.makedirs(DATA_DIR, exist_ok=True)
    save_file({k: v.detach().numpy().astype(np.float16) for k, v in weights.items()},
              os.path.join(DATA_DIR, f"{name}_weights.safetensors"))
    inputs = {"x": x.numpy().astype(np.float32), "t": t.numpy().astype(np.float32), "y": y.numpy()}
    if context is not None:
        inputs["context"] = context.detach().numpy().astype(np.float32)
    save_file(inputs, os.path.join(DATA_DIR, f"{name}_inputs.safetensors"))
    golden = {"out": out.detach().numpy().astype(np.float32), "w": w.numpy().astype(np.float32)}
    for k, p in params.items():
        golden["grad." + k] = p.grad.numpy().astype(np.float32)
    if context is not None:
        golden["grad.context"] = context.grad.numpy().astype(np.float32)
    save_file(golden, os.path.join(DATA_DIR, f"{name}_out.safetensors"))
    print(f"{name}: {len(weights)} tensors, {sum(v.numel() for v in weights.values())} values")


if __name__ == "__main__":
    for config_name, config in CONFIGS.items():
        run(config_name, config)

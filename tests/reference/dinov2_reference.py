#!/usr/bin/env python3
"""Reference DINOv2 ViT for the dinov2 encoder's parity test.

Written from the DINOv2 architecture (Oquab et al. 2023, the torch hub
models): a conv patch embedding, a class token, absolute positions, optional
register tokens inserted after the class token (they get no position),
pre-norm blocks with LayerScale (x + ls1 * attn(norm1(x)), x + ls2 *
mlp(norm2(x))), exact GELU, LayerNorm eps 1e-6, and x_norm_patchtokens: the
final norm's output without the class and register tokens. Module names are
the hub state_dict's.

A tiny configuration with random non-zero weights (LayerScale too) keeps the
goldens small. The input goes through the encoder's own preprocessing: grey
[-1, 1] images repeated to RGB, mapped to [0, 1] and normalised with the
ImageNet statistics, at the positional grid's size (no resize).

Needs python3 with torch and safetensors. Writes
  data/dinov2_tiny_weights.safetensors  the state_dict
  data/dinov2_tiny_io.safetensors       images (N, 1, 28, 28), tokens (N, T, D)
"""
import os

import torch
from torch import nn
from safetensors.torch import save_file

WIDTH, DEPTH, HEADS, PATCH, SIZE, REGISTERS, MLP = 32, 2, 2, 7, 28, 2, 64
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class PatchEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, WIDTH, PATCH, stride=PATCH)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.proj = nn.Linear(WIDTH, WIDTH)

    def forward(self, x):
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.softmax(q @ k.transpose(-2, -1) / (d // HEADS) ** 0.5, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(n, t, d))


class LayerScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(WIDTH))

    def forward(self, x):
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(WIDTH, MLP)
        self.fc2 = nn.Linear(MLP, WIDTH)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(WIDTH, eps=1e-6)
        self.attn = Attention()
        self.ls1 = LayerScale()
        self.norm2 = nn.LayerNorm(WIDTH, eps=1e-6)
        self.mlp = Mlp()
        self.ls2 = LayerScale()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        grid = SIZE // PATCH
        self.patch_embed = PatchEmbed()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, WIDTH))
        self.register_tokens = nn.Parameter(torch.zeros(1, REGISTERS, WIDTH))
        self.mask_token = nn.Parameter(torch.zeros(1, WIDTH))
        self.blocks = nn.ModuleList([Block() for _ in range(DEPTH)])
        self.norm = nn.LayerNorm(WIDTH, eps=1e-6)

    def x_norm_patchtokens(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = torch.cat([x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + REGISTERS:]


def main():
    torch.manual_seed(0)
    model = DinoVisionTransformer()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") or (name.startswith("norm") or ".norm" in name) and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.2)
    images = torch.rand(2, 1, SIZE, SIZE) * 2 - 1
    rgb = ((images.repeat(1, 3, 1, 1) + 1) / 2 - MEAN) / STD
    with torch.no_grad():
        tokens = model.x_norm_patchtokens(rgb)
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, os.path.join(here, "dinov2_tiny_weights.safetensors"))
    save_file({"images": images.contiguous(), "tokens": tokens.contiguous()},
              os.path.join(here, "dinov2_tiny_io.safetensors"))
    print("tokens", tuple(tokens.shape), "mean |x|", float(tokens.abs().mean()))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference outputs of diffusers.AutoencoderKL for the C parity test (tests/test_vae_parity.c).

Builds a small AutoencoderKL (three levels, f = 4, GroupNorm of 2 groups so
the channels can stay small) in float64 with random non-zero weights drawn
as float16 values, and writes:

  data/vae_tiny_diffusers.safetensors  the weights under diffusers' names
  data/vae_tiny_compvis.safetensors    the same weights under the CompVis
                                       names (converted below, independently
                                       of the C table; attention weights as
                                       1x1 convolutions)
  data/vae_tiny_io.safetensors         x (images), mean and logvar of the
                                       posterior of x, z (latents) and
                                       decoded = decode(z)

Needs PyTorch, diffusers, safetensors and NumPy:

    python3 tests/reference/vae_reference.py
"""

import math
import os
import re

import numpy as np
import torch
from diffusers import AutoencoderKL
from safetensors.numpy import save_file

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
CONFIG = dict(in_channels=3, out_channels=3, block_out_channels=(4, 8, 8), layers_per_block=1,
              latent_channels=3, norm_num_groups=2, sample_size=16,
              down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
LEVELS = len(CONFIG["block_out_channels"])


def to_compvis(name, value):
    """diffusers name -> CompVis name (and the value reshaped where it differs)."""
    n = name
    n = re.sub(r"down_blocks\.(\d+)\.resnets\.(\d+)\.", r"down.\1.block.\2.", n)
    n = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", n)
    n = re.sub(r"up_blocks\.(\d+)\.resnets\.(\d+)\.",
               lambda m: f"up.{LEVELS - 1 - int(m.group(1))}.block.{m.group(2)}.", n)
    n = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0\.",
               lambda m: f"up.{LEVELS - 1 - int(m.group(1))}.upsample.", n)
    n = n.replace("mid_block.resnets.0.", "mid.block_1.").replace("mid_block.resnets.1.", "mid.block_2.")
    n = n.replace("mid_block.attentions.0.", "mid.attn_1.")
    n = n.replace("conv_norm_out.", "norm_out.").replace("conv_shortcut.", "nin_shortcut.")
    attention = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    for old, new in attention.items():
        if ".attn_1." + old in n:
            n = n.replace(".attn_1." + old, ".attn_1." + new)
            if value.ndim == 2:
                value = value.reshape(value.shape + (1, 1))
    return n, value


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(5)
    vae = AutoencoderKL(**CONFIG).double().eval()
    weights = {}
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if p.ndim > 1:
                w = torch.randn(p.shape, generator=gen, dtype=torch.float64) / math.sqrt(p[0].numel())
            elif "norm" in name and name.endswith(".weight"):
                w = 1 + 0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64)
            else:
                w = 0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64)
            w = w.to(torch.float16)  # stored as float16; the model computes with exactly these values
            p.copy_(w.to(torch.float64))
            weights[name] = np.ascontiguousarray(w.numpy())
        x = torch.randn((2, 3, 16, 16), generator=gen, dtype=torch.float64).float().double()
        posterior = vae.encode(x).latent_dist
        z = torch.randn((2, 3, 4, 4), generator=gen, dtype=torch.float64).float().double()
        decoded = vae.decode(z).sample

    os.makedirs(DATA_DIR, exist_ok=True)
    save_file(weights, os.path.join(DATA_DIR, "vae_tiny_diffusers.safetensors"))
    compvis = dict(to_compvis(k, v) for k, v in weights.items())
    assert len(compvis) == len(weights)
    save_file(compvis, os.path.join(DATA_DIR, "vae_tiny_compvis.safetensors"))
    f32 = lambda t: np.ascontiguousarray(t.contiguous().numpy().astype(np.float32))
    save_file({"x": f32(x), "mean": f32(posterior.mean), "logvar": f32(posterior.logvar), "z": f32(z),
               "decoded": f32(decoded)}, os.path.join(DATA_DIR, "vae_tiny_io.safetensors"))
    print(f"vae_tiny: {len(weights)} tensors, {sum(v.size for v in weights.values())} values")


if __name__ == "__main__":
    main()

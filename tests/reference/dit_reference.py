#!/usr/bin/env python3
"""Reference DiT and SiT networks for the C parity test (tests/test_dit_parity.c).

A compact re-statement of the DiT network (Peebles & Xie 2022) from its
specification, in PyTorch, computed in float64 so the golden values are
exact to float32 precision. For two tiny configurations it draws random,
non-zero weights everywhere (adaLN and final layer included, unlike the
official zero initialisation), runs one forward pass in eval mode and the
backward pass of sum(out * w) for a fixed random w, and writes:

  data/<name>_tiny_weights.safetensors  parameters under the official state_dict names
  data/<name>_tiny_inputs.safetensors   x (N, C, H, W), t (N), y (N, int64)
  data/<name>_tiny_out.safetensors      out, hidden.1 (tokens after block 1), w,
                                        grad.<param> for every trained parameter

with <name> = dit and sit. Run it from anywhere, with PyTorch, safetensors
and NumPy installed:

    python3 tests/reference/dit_reference.py

The outputs are deterministic (fixed seeds); the committed files were made
by this script.
"""

import math
import os

import numpy as np
import torch
from safetensors.numpy import save_file

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

# Two tiny configurations. They differ on purpose (patch, heads, MLP ratio,
# learned-sigma split) so the test covers more than one shape of each op.
CONFIGS = {
    "dit": dict(channels=4, size=8, patch=2, hidden=12, depth=2, heads=2, mlp_ratio=4.0,
                num_classes=10, learn_sigma=True, sit_split=False,
                t=[0.0, 123.5, 999.0], seed=1),
    "sit": dict(channels=4, size=8, patch=4, hidden=8, depth=2, heads=2, mlp_ratio=2.0,
                num_classes=10, learn_sigma=True, sit_split=True,
                t=[0.0, 0.4375, 1.0], seed=2),
}
BATCH_LABELS = [3, 10, 7]  # 10 = the null class of a 10-class model
FREQ_DIM = 256


def timestep_frequencies(t):
    """[cos(t f_m), sin(t f_m)], m < 128, f_m = exp(-ln(10000) m / 128).

    Rounded as the official float32 code computes it: the exponent and the
    product t * f_m in float32; exp, cos and sin correctly rounded from the
    float32 arguments (the C code does the same, so both agree bit for bit
    or within one ulp)."""
    half = FREQ_DIM // 2
    m = np.arange(half, dtype=np.float32)
    exponent = np.float32(-math.log(10000.0)) * m / np.float32(half)
    freqs = np.exp(exponent.astype(np.float64)).astype(np.float32)
    args = np.asarray(t, dtype=np.float32)[:, None] * freqs[None, :]
    args = args.astype(np.float64)
    emb = np.concatenate([np.cos(args), np.sin(args)], axis=1).astype(np.float32)
    return torch.from_numpy(emb.astype(np.float64))


def sincos_1d(dim, positions):
    """MAE's 1-D table: all sines of pos * omega_m, then all cosines."""
    omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions.astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def pos_embed_table(dim, grid):
    """(grid * grid, dim): first half encodes the column, second half the row."""
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    table = np.concatenate([sincos_1d(dim // 2, cols.reshape(-1)),
                            sincos_1d(dim // 2, rows.reshape(-1))], axis=1)
    return table.astype(np.float32)


def parameter_shapes(cfg):
    """(name, shape) in the official state_dict order."""
    c, p, d = cfg["channels"], cfg["patch"], cfg["hidden"]
    tokens = (cfg["size"] // p) ** 2
    mlp = int(d * cfg["mlp_ratio"])
    out_channels = 2 * c if cfg["learn_sigma"] else c
    shapes = [
        ("pos_embed", (1, tokens, d)),
        ("x_embedder.proj.weight", (d, c, p, p)),
        ("x_embedder.proj.bias", (d,)),
        ("t_embedder.mlp.0.weight", (d, FREQ_DIM)),
        ("t_embedder.mlp.0.bias", (d,)),
        ("t_embedder.mlp.2.weight", (d, d)),
        ("t_embedder.mlp.2.bias", (d,)),
        ("y_embedder.embedding_table.weight", (cfg["num_classes"] + 1, d)),
    ]
    for k in range(cfg["depth"]):
        b = f"blocks.{k}."
        shapes += [
            (b + "attn.qkv.weight", (3 * d, d)), (b + "attn.qkv.bias", (3 * d,)),
            (b + "attn.proj.weight", (d, d)), (b + "attn.proj.bias", (d,)),
            (b + "mlp.fc1.weight", (mlp, d)), (b + "mlp.fc1.bias", (mlp,)),
            (b + "mlp.fc2.weight", (d, mlp)), (b + "mlp.fc2.bias", (d,)),
            (b + "adaLN_modulation.1.weight", (6 * d, d)), (b + "adaLN_modulation.1.bias", (6 * d,)),
        ]
    shapes += [
        ("final_layer.linear.weight", (p * p * out_channels, d)),
        ("final_layer.linear.bias", (p * p * out_channels,)),
        ("final_layer.adaLN_modulation.1.weight", (2 * d, d)),
        ("final_layer.adaLN_modulation.1.bias", (2 * d,)),
    ]
    return shapes


def random_weights(cfg, gen):
    """Non-zero weights of a moderate scale (so every path matters), float32."""
    weights = {}
    for name, shape in parameter_shapes(cfg):
        if name == "pos_embed":
            grid = cfg["size"] // cfg["patch"]
            weights[name] = pos_embed_table(cfg["hidden"], grid).reshape(shape)
            continue
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        scale = 1.0 / math.sqrt(fan_in) if len(shape) > 1 else 0.2
        w = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
        weights[name] = w.to(torch.float32).numpy()
    return weights


def layernorm(x):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-6)


def modulate(x, shift, scale):
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


def linear(x, P, prefix):
    return x @ P[prefix + ".weight"].T + P[prefix + ".bias"]


def attention(x, P, prefix, heads):
    n, t, d = x.shape
    hd = d // heads
    qkv = linear(x, P, prefix + ".qkv").reshape(n, t, 3, heads, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = torch.softmax(q @ k.transpose(-1, -2) * hd ** -0.5, dim=-1)
    mixed = (weights @ v).transpose(1, 2).reshape(n, t, d)
    return linear(mixed, P, prefix + ".proj")


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def unpatchify(x, p, channels, grid):
    n = x.shape[0]
    x = x.reshape(n, grid, grid, p, p, channels)
    return torch.einsum("nijrsc->ncirjs", x).reshape(n, channels, grid * p, grid * p)


def forward(cfg, P, x, t, y):
    """The network; returns (out, tokens after block 1)."""
    p, d, heads = cfg["patch"], cfg["hidden"], cfg["heads"]
    grid = cfg["size"] // p
    tokens = torch.nn.functional.conv2d(x, P["x_embedder.proj.weight"], P["x_embedder.proj.bias"], stride=p)
    tokens = tokens.flatten(2).transpose(1, 2) + P["pos_embed"]
    temb = timestep_frequencies(t)
    temb = linear(torch.nn.functional.silu(linear(temb, P, "t_embedder.mlp.0")), P, "t_embedder.mlp.2")
    c = temb + P["y_embedder.embedding_table.weight"][y]
    c = torch.nn.functional.silu(c)
    hidden1 = None
    for k in range(cfg["depth"]):
        b = f"blocks.{k}."
        mod = linear(c, P, b + "adaLN_modulation.1").chunk(6, dim=1)
        h = modulate(layernorm(tokens), mod[0], mod[1])
        tokens = tokens + mod[2][:, None, :] * attention(h, P, b + "attn", heads)
        h = modulate(layernorm(tokens), mod[3], mod[4])
        h = linear(gelu_tanh(linear(h, P, b + "mlp.fc1")), P, b + "mlp.fc2")
        tokens = tokens + mod[5][:, None, :] * h
        if k == 0:
            hidden1 = tokens
    shift, scale = linear(c, P, "final_layer.adaLN_modulation.1").chunk(2, dim=1)
    h = linear(modulate(layernorm(tokens), shift, scale), P, "final_layer.linear")
    out_channels = 2 * cfg["channels"] if cfg["learn_sigma"] else cfg["channels"]
    out = unpatchify(h, p, out_channels, grid)
    if cfg["sit_split"] and cfg["learn_sigma"]:
        out = out[:, : cfg["channels"]]
    return out, hidden1


def f32(tensor):
    return np.ascontiguousarray(tensor.detach().to(torch.float32).numpy())


def make_golden(name, cfg):
    gen = torch.Generator().manual_seed(cfg["seed"])
    weights = random_weights(cfg, gen)
    n = len(BATCH_LABELS)
    x = torch.randn((n, cfg["channels"], cfg["size"], cfg["size"]), generator=gen, dtype=torch.float64)
    x = x.to(torch.float32).to(torch.float64)
    t = np.asarray(cfg["t"], dtype=np.float32)
    y = np.asarray(BATCH_LABELS, dtype=np.int64)

    P = {k: torch.from_numpy(v.astype(np.float64)).requires_grad_(k != "pos_embed") for k, v in weights.items()}
    out, hidden1 = forward(cfg, P, x, t, torch.from_numpy(y))
    w = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(torch.float32).to(torch.float64)
    (out * w).sum().backward()

    save_file(weights, os.path.join(DATA_DIR, f"{name}_tiny_weights.safetensors"))
    save_file({"x": f32(x), "t": t, "y": y}, os.path.join(DATA_DIR, f"{name}_tiny_inputs.safetensors"))
    results = {"out": f32(out), "hidden.1": f32(hidden1), "w": f32(w)}
    for key, param in P.items():
        if param.requires_grad:
            results["grad." + key] = f32(param.grad)
    save_file(results, os.path.join(DATA_DIR, f"{name}_tiny_out.safetensors"))
    count = sum(v.size for v in weights.values())
    print(f"{name}: {count} parameters, out {tuple(out.shape)}, |out| max {out.abs().max().item():.4f}")


def main():
    os.makedirs(DATA_DIR, exist_ok=True)
    torch.set_num_threads(1)
    for name, cfg in CONFIGS.items():
        make_golden(name, cfg)


if __name__ == "__main__":
    main()

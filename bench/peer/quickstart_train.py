#!/usr/bin/env python3
"""The PyTorch reference trainer of bench/report: trains the model of a
diffuse pipeline file (pipelines/quickstart.cfg) the way diffuse's training
stage does, as a PyTorch user would write it, and exports its EMA weights
under the official DiT names at chosen steps, for `diffuse eval --weights`.

    quickstart_train.py PIPELINE --steps 1200 --save-at 400,800,1200 --out DIR

What is the same as diffuse (the recipe, not the random numbers):
  data      Fashion-MNIST's training split from the IDX files, padded
            centred with the background -1 to pad_to, scaled to [-1, 1];
            a fresh random order every epoch
  model     the `dit` backbone (bench/peer/dit_peer.py's DiT), official init
  objective SiT's velocity on the linear path, framework time t uniform in
            [0, 1] (t = 0 data): x_t = (1 - t) x0 + t eps, the network
            given 1 - t, target x0 - eps, mean squared error
  labels    dropped to the null class with probability class_dropout
  optimiser AdamW (PyTorch's betas and eps), weight_decay, global norm
            clipping at grad_clip, linear warm-up then cosine to min_lr
            (diffuse's df_lr_at), EMA min(ema, (1 + k) / (10 + k)) with
            ema_warmup
  seed      the pipeline's seed seeds the initialisation and the draws

It writes DIR/pytorch-STEP.safetensors (the EMA set, or the weights when
ema = 0) and prints one JSON line per export: step, the process's CPU
seconds so far and wall seconds of training, and at the end the peak RSS. Needs torch, numpy and
safetensors.
"""

import argparse
import gzip
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from dit_peer import DiT  # noqa: E402

# bench/vs-pytorch reads pipeline files; its reader is reused, not copied.
import importlib.machinery  # noqa: E402
import importlib.util  # noqa: E402

_loader = importlib.machinery.SourceFileLoader("vs_pytorch", os.path.join(os.path.dirname(HERE), "vs-pytorch"))
_spec = importlib.util.spec_from_loader("vs_pytorch", _loader)
vs_pytorch = importlib.util.module_from_spec(_spec)
_loader.exec_module(vs_pytorch)

# dit_peer.py's attribute names -> the official state_dict names.
OFFICIAL = [("patch_embed.", "x_embedder.proj."), ("t_fc1.", "t_embedder.mlp.0."),
            ("t_fc2.", "t_embedder.mlp.2."), ("label_table.", "y_embedder.embedding_table."),
            ("final_ada.", "final_layer.adaLN_modulation.1."), ("final.", "final_layer.linear.")]
BLOCK = {"qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2", "ada": "adaLN_modulation.1"}


def official_name(name):
    if name.startswith("blocks."):
        _, k, layer, rest = name.split(".", 3)
        return "blocks.%s.%s.%s" % (k, BLOCK[layer], rest)
    for ours, theirs in OFFICIAL:
        if name.startswith(ours):
            return theirs + name[len(ours):]
    return name


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_images(root, pad_to):
    images = read_idx(os.path.join(root, "train-images-idx3-ubyte.gz")).astype(np.float32) / 127.5 - 1.0
    labels = read_idx(os.path.join(root, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    size = images.shape[1]
    if pad_to and pad_to > size:
        lo = (pad_to - size) // 2
        padded = np.full((images.shape[0], pad_to, pad_to), -1.0, dtype=np.float32)
        padded[:, lo:lo + size, lo:lo + size] = images
        images = padded
    return torch.from_numpy(images[:, None]), torch.from_numpy(labels)


def lr_at(step, base, warmup, cosine, total, min_lr):
    """diffuse's df_lr_at: linear warm-up over `warmup` steps, then constant
    or cosine from base to min_lr over the remaining steps."""
    if step < warmup:
        return base * (step + 1) / warmup
    if not cosine:
        return base
    span = total - warmup
    q = min(1.0, (step - warmup) / span) if span > 0 else 1.0
    return min_lr + (base - min_lr) * 0.5 * (1.0 + math.cos(math.pi * q))


def export(model, ema, trained, path):
    """The EMA set (or the weights) under the official names, float32."""
    values = dict(model.named_parameters())
    if ema is not None:
        values.update({name: e for (name, _), e in zip(trained, ema)})
    tensors = {official_name(k): np.ascontiguousarray(v.detach().float().numpy()) for k, v in values.items()}
    save_file(tensors, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pipeline")
    ap.add_argument("--steps", type=int, help="training steps (default: the pipeline's train.steps)")
    ap.add_argument("--save-at", default="", help="comma-separated steps to export at (the last step always)")
    ap.add_argument("--out", required=True, help="folder for the exported weights")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, help="replaces the pipeline's seed")
    ap.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = vs_pytorch.read_config(args.pipeline)
    case = vs_pytorch.Case("quickstart", cfg, args.pipeline)
    tr, top, ds = cfg.get("train", {}), cfg.get(""), cfg.get("dataset", {})
    steps = args.steps or int(tr.get("steps", 1000))
    save_at = sorted({int(s) for s in args.save_at.split(",") if s} | {steps})
    seed = args.seed if args.seed is not None else int(top.get("seed", 0))
    warmup = int(tr.get("warmup", 0))
    cosine = tr.get("lr_schedule", "constant") == "cosine"
    min_lr = float(tr.get("min_lr", 0.0))
    os.makedirs(args.out, exist_ok=True)

    torch.manual_seed(seed)
    images, labels = load_images(args.root, int(ds.get("pad_to", 0)))
    model = DiT(case.channels, case.size, case.patch, case.hidden, case.depth, case.heads, case.mlp_ratio,
                case.classes, case.channels)
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in trained]
    opt = torch.optim.AdamW(params, lr=case.lr, weight_decay=case.weight_decay)
    ema = [p.detach().clone() for p in params] if case.ema > 0 else None
    gen = torch.Generator().manual_seed(seed)
    count, batch = images.shape[0], case.batch
    order, epoch = None, -1
    # CPU time counts from the process's start (imports and data
    # included), as the diffuse side's does.
    start_wall = time.perf_counter()
    for step in range(steps):
        first = step * batch
        index = []
        for pos in range(first, first + batch):
            if pos // count != epoch:
                epoch = pos // count
                order = torch.randperm(count, generator=gen)
            index.append(order[pos % count])
        index = torch.stack(index)
        x0, y = images[index], labels[index].clone()
        y[torch.rand(batch, generator=gen) < case.class_dropout] = case.classes
        t = torch.rand(batch, generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        tb = t.view(-1, 1, 1, 1)
        x_t = (1 - tb) * x0 + tb * eps
        loss = F.mse_loss(model(x_t, 1 - t, y), x0 - eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if case.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, case.grad_clip)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, case.lr, warmup, cosine, steps, min_lr)
        opt.step()
        if ema is not None:
            decay = min(case.ema, (1 + step) / (10 + step)) if case.ema_warmup else case.ema
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        if step + 1 in save_at:
            cpu, wall = time.process_time(), time.perf_counter() - start_wall
            path = os.path.join(args.out, "pytorch-%06d.safetensors" % (step + 1))
            export(model, ema, trained, path)
            print(json.dumps({"step": step + 1, "loss": loss.item(), "cpu_s": cpu, "wall_s": wall,
                              "weights": path}), flush=True)
    print(json.dumps({"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "params": sum(p.numel() for p in model.parameters()), "torch": torch.__version__}))


if __name__ == "__main__":
    main()

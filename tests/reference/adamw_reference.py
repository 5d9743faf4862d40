#!/usr/bin/env python3
"""Expected values of torch.optim.AdamW for tests/test_optim.c.

Run by hand from the top of the source tree (pip install torch safetensors):

    python3 tests/reference/adamw_reference.py

It writes tests/reference/data/adamw_torch.safetensors: the initial flat
parameter block `init` [n], the gradients of each step `grads` [steps, n],
PyTorch's parameters and moments after each step (`params`, `exp_avg`,
`exp_avg_sq`, [steps, n]) and `decay_mask` [n] (1 = weight decay applied).
The masked elements form a second parameter group with weight_decay 0, the
way biases and norm gains are usually excluded. lr and weight_decay are
stored as metadata; betas and eps are PyTorch's defaults.
"""
import os

import torch
from safetensors.torch import save_file

STEPS, N_DECAY, N_PLAIN = 6, 29, 8
LR, WEIGHT_DECAY = 1e-2, 0.1


def main():
    torch.manual_seed(0)
    n = N_DECAY + N_PLAIN
    init = torch.randn(n) * 2
    # gradients over several orders of magnitude, some steps sign flips
    scale = 10.0 ** torch.linspace(-4, 1, n)
    grads = torch.randn(STEPS, n) * scale

    decay = torch.nn.Parameter(init[:N_DECAY].clone())
    plain = torch.nn.Parameter(init[N_DECAY:].clone())
    opt = torch.optim.AdamW(
        [{"params": [decay], "weight_decay": WEIGHT_DECAY},
         {"params": [plain], "weight_decay": 0.0}],
        lr=LR, foreach=False)

    params, exp_avg, exp_avg_sq = [], [], []
    for s in range(STEPS):
        decay.grad = grads[s, :N_DECAY].clone()
        plain.grad = grads[s, N_DECAY:].clone()
        opt.step()
        params.append(torch.cat([decay.detach(), plain.detach()]))
        exp_avg.append(torch.cat([opt.state[p]["exp_avg"] for p in (decay, plain)]))
        exp_avg_sq.append(torch.cat([opt.state[p]["exp_avg_sq"] for p in (decay, plain)]))

    mask = torch.cat([torch.ones(N_DECAY, dtype=torch.int64),
                      torch.zeros(N_PLAIN, dtype=torch.int64)])
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                       "adamw_torch.safetensors")
    save_file({"init": init, "grads": grads, "params": torch.stack(params),
               "exp_avg": torch.stack(exp_avg), "exp_avg_sq": torch.stack(exp_avg_sq),
               "decay_mask": mask},
              out, metadata={"lr": repr(LR), "weight_decay": repr(WEIGHT_DECAY),
                             "torch": torch.__version__})
    print("wrote", out)


if __name__ == "__main__":
    main()

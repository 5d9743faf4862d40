#!/usr/bin/env python3
"""Golden features of FID's Inception v3 for the C parity test
(tests/test_inception_parity.c).

The network is the PyTorch FID port itself (PyPI package pytorch-fid,
pytorch_fid.inception.InceptionV3 with its FID blocks), not a re-statement,
so the test compares diffuse's network with the one FID users run. Its
weights are not downloaded: every tensor of the port's state_dict is
replaced by deterministic values that the C test regenerates by the same
formula, so the ~90 MB of weights never enter the repository. For the
tensor `name` with n elements, element i (row-major) is

    key = FNV-1a 32 of the name's bytes
    x   = lowbias32(i XOR key)       (the integer hash below, mod 2^32)
    u   = (x >> 8) / 2^24            (in [0, 1), exact in float32)

    *.conv.weight        (2u - 1) sqrt(6 / fan_in)   (He-uniform: ReLU
                                                      layers keep their scale)
    *.bn.weight          0.5 + u
    *.bn.bias            0.2 (2u - 1)
    *.bn.running_mean    0.2 (2u - 1)
    *.bn.running_var     0.5 + u

each rounded to float32 (num_batches_tracked is left alone: eval mode does
not read it). The forward runs in float64 on two 1x28x28 images in [-1, 1],
as diffuse's metrics see Fashion-MNIST: repeated to 3 channels and mapped
to [0, 1], the range the port takes (it resizes to 299x299 bilinearly and
scales back to [-1, 1] itself). Written:

  data/inception_parity.safetensors  images (2, 1, 28, 28) and
                                     features (2, 2048), the pool3 output

Needs PyTorch, torchvision, pytorch-fid, safetensors and NumPy:

    pip install pytorch-fid torchvision safetensors numpy
    python3 tests/reference/inception_reference.py
"""

import os

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_fid import inception as fid
from safetensors.numpy import save_file

MASK = 0xFFFFFFFF


def fnv1a32(text):
    h = 2166136261
    for byte in text.encode():
        h = ((h ^ byte) * 16777619) & MASK
    return h


def lowbias32(x):
    """The 32-bit integer hash (Wellons' lowbias32) on uint64 arrays."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK
    return x ^ (x >> 16)


def formula(name, shape):
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.uint64)
    u = (lowbias32(i ^ np.uint64(fnv1a32(name))) >> np.uint64(8)).astype(np.float64) / 2.0**24
    if name.endswith(".conv.weight"):
        values = (2 * u - 1) * np.sqrt(6.0 / (n // shape[0]))
    elif name.endswith(".bn.weight") or name.endswith(".bn.running_var"):
        values = 0.5 + u
    elif name.endswith(".bn.bias") or name.endswith(".bn.running_mean"):
        values = 0.2 * (2 * u - 1)
    else:
        raise ValueError("no formula for " + name)
    return values.astype(np.float32).reshape(shape)


def build_port():
    """The port's InceptionV3, its download replaced by the formula."""
    # fid_inception_v3() fetches the FID weights and loads them into the
    # freshly built network: hand it that network's own state instead,
    # then overwrite every tensor by name.
    fid.load_state_dict_from_url = lambda *args, **kwargs: None
    original_load = torch.nn.Module.load_state_dict
    torch.nn.Module.load_state_dict = lambda self, state, *args, **kwargs: None
    try:
        model = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    finally:
        torch.nn.Module.load_state_dict = original_load
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = tensor
        else:
            state[name] = torch.from_numpy(formula(name, tuple(tensor.shape)))
    model.load_state_dict(state)
    return model.double().eval()


def images():
    """Two 28x28 images in [-1, 1]: a smooth garment-like blob and noise."""
    y, x = np.mgrid[0:28, 0:28] / 27.0
    blob = np.tanh(4 * (0.3 - np.hypot(x - 0.5, (y - 0.45) * 0.7))) * 0.9
    noise = np.random.default_rng(5).uniform(-1, 1, (28, 28))
    return np.stack([blob, noise])[:, None].astype(np.float32)


def main():
    torch.manual_seed(0)
    model = build_port()
    x = images()
    with torch.no_grad():
        port_input = (torch.from_numpy(x).double().repeat(1, 3, 1, 1) + 1) / 2
        features = model(port_input)[0].reshape(len(x), -1)
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "data", "inception_parity.safetensors")
    save_file({"images": x, "features": features.numpy().astype(np.float32)}, out)
    f = features.numpy()
    print("wrote %s: features %s, |f| mean %.4g max %.4g" % (out, f.shape, np.abs(f).mean(), np.abs(f).max()))


if __name__ == "__main__":
    main()

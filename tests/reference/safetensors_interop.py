#!/usr/bin/env python3
"""safetensors interoperability between PyTorch and diffuse's C writer/reader.

Run by hand from the top of the source tree, with torch and safetensors
installed (pip install torch safetensors):

    python3 tests/reference/safetensors_interop.py write   # torch_written.safetensors
    python3 tests/reference/safetensors_interop.py check   # checks c_written.safetensors

`write` regenerates tests/reference/data/torch_written.safetensors, which
tests/test_safetensors.c reads and checks value by value. `check` loads
tests/reference/data/c_written.safetensors, written by the C writer (the
CMocka test compares its own output with that file byte for byte), and
checks every value, dtype, shape and the metadata. With no argument, both.
"""
import json
import os
import struct
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save, save_file

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def c_value(n):
    """Element i of the C side's deterministic content: i * 0.25 - 3."""
    return torch.arange(n, dtype=torch.float64) * 0.25 - 3


def write_torch_file():
    i = torch.arange
    tensors = {
        "f32_odd": c_value(3 * 5 * 7).to(torch.float32).reshape(3, 5, 7),
        "f16": ((i(21) % 64).to(torch.float32) * 0.125 - 4).to(torch.float16).reshape(7, 3),
        "bf16": (i(5, dtype=torch.float32) * 0.5 - 1).to(torch.bfloat16),
        "i64": (i(6, dtype=torch.int64) * (1 << 40) + i(6) - 3).reshape(2, 3, 1),
        "f64": i(4, dtype=torch.float64) / 3,
        "i32": (i(6, dtype=torch.int32) * -7),
        "u8": (i(4) * 60).to(torch.uint8).reshape(2, 2),
        "scalar": torch.tensor(3.5, dtype=torch.float32),
    }
    path = os.path.join(DATA, "torch_written.safetensors")
    save_file(tensors, path, metadata={"format": "pt", "writer": "torch"})
    print("wrote", path)


def check_c_file():
    path = os.path.join(DATA, "c_written.safetensors")
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        assert meta["format"] == "pt", meta
        assert meta["pipeline"].startswith('name = "interop";'), meta
        assert sorted(f.keys()) == ["counts", "empty", "values"], f.keys()
        values = f.get_tensor("values")
        assert values.dtype == torch.float32 and values.shape == (3, 4, 5)
        assert torch.equal(values.flatten(), c_value(60).to(torch.float32))
        counts = f.get_tensor("counts")
        assert counts.dtype == torch.int64 and counts.shape == (7,)
        assert counts.tolist() == [k * k - 10 for k in range(7)]
        empty = f.get_tensor("empty")
        assert empty.dtype == torch.float32 and empty.shape == (0, 3)
        tensors = {k: f.get_tensor(k) for k in f.keys()}

    # The C writer lays the file out as the Python library does: the same
    # tensors saved here give the same header entries in the same order
    # and the same data section (only metadata key order is unspecified).
    with open(path, "rb") as fp:
        c_bytes = fp.read()
    py_bytes = save(tensors, metadata=meta)

    def split(b):
        n = struct.unpack("<Q", b[:8])[0]
        return json.loads(b[8:8 + n]), b[8 + n:]

    c_header, c_data = split(c_bytes)
    py_header, py_data = split(py_bytes)
    assert list(c_header) == list(py_header), (list(c_header), list(py_header))
    assert c_header == py_header, (c_header, py_header)
    assert c_data == py_data
    assert len(c_bytes) == len(py_bytes)
    print("ok", path)


if __name__ == "__main__":
    what = sys.argv[1:] or ["write", "check"]
    if "write" in what:
        write_torch_file()
    if "check" in what:
        check_c_file()

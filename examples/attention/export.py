"""Export single attention blocks (benchmark blocks, untrained) to ONNX with torch.onnx.export.

Regenerate everything (run from the repo root):

    /work/venvs/torch/bin/python examples/attention/export.py

The venv was made with:

    python3 -m venv /work/venvs/torch
    /work/venvs/torch/bin/pip install torch onnx onnxruntime numpy

Versions used for the committed files: torch 2.15.0+cu132, onnx 1.23.2,
onnxruntime 1.31.1, numpy 2.4.6 (Python 3.11.7). The script prints the
versions it runs with; other versions may emit slightly different graphs.

Outputs, written next to this script:

  eegformer_mhsa.onnx          hand-written multi-head self-attention, x f32[1,81,32] -> y f32[1,81,32]
                               (8 heads of 32: Q/K/V 32->256, output projection 256->32)
  ecgformer_mhsa.onnx          nn.MultiheadAttention(16, 8), x f32[1,66,16] -> y f32[1,66,16]
  llama_prefill_s{16,32,64,128}.onnx
                               causal self-attention of a Llama layer at the microLlama shape (16 heads of 4,
                               Q/K/V/O 64->64 without bias), x f32[1,S,64] -> y f32[1,S,64]; no rotary embedding
  <name>.calib.npz             calibration inputs for `mote quantize --calib`: key `x`, f32[64,S,E]
                               (64 samples stacked on the batch axis, as examples/digits/calib.npz; 16 for
                               the llama_prefill blocks)
  <name>.inputs.npz            one reference input (key `x`, f32[1,S,E])
  <name>.outputs.npz           torch's output for it (key `y`, f32[1,S,E])

Every block: torch.manual_seed(0) right before the module is built, default
init (untrained), batch 1, float32, opset 17, static shapes, the legacy
TorchScript exporter (dynamo=False), do_constant_folding=True. Data per
model: numpy.random.default_rng(1).standard_normal, first the 64 calibration
samples, then the reference input (the 65th draw, not in the calibration
set). The MHA "fast path" is switched off (torch.backends.mha.set_fastpath_enabled)
because its fused kernel has no ONNX export. Every model is checked against
onnxruntime (max abs error <= 1e-5). The outputs are byte-for-byte
reproducible with the versions above.
"""

import collections
import math
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 1e-5
CALIB_SAMPLES = 64
# The microLlama-shaped prefill blocks: prompt lengths, and fewer calibration samples (S·64 floats each).
LLAMA_PREFILL = (16, 32, 64, 128)
LLAMA_CALIB_SAMPLES = 16


class EegformerMhsa(nn.Module):
    """Multi-head self-attention as a user writes it: 8 heads of 32 over 32 features (inner width 256)."""

    def __init__(self, seq=81, dim=32, heads=8, head_dim=32):
        super().__init__()
        self.seq, self.heads, self.head_dim = seq, heads, head_dim
        inner = heads * head_dim
        self.q = nn.Linear(dim, inner)
        self.k = nn.Linear(dim, inner)
        self.v = nn.Linear(dim, inner)
        self.out = nn.Linear(inner, dim)

    def forward(self, x):
        s, h, p = self.seq, self.heads, self.head_dim
        q = self.q(x).view(1, s, h, p).transpose(1, 2)  # [1, H, S, P]
        k = self.k(x).view(1, s, h, p).transpose(1, 2)
        v = self.v(x).view(1, s, h, p).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(p), dim=-1)  # [1, H, S, S]
        o = (att @ v).transpose(1, 2).reshape(1, s, h * p)  # [1, S, H*P]
        return self.out(o)


class LlamaPrefillMhsa(nn.Module):
    """Causal self-attention of a Llama layer at the microLlama shape: 16 heads of 4 over 64 features, no biases.

    The prompt's S tokens in one call (prefill). Rotary position embedding is not part of the block (the mote
    attention operator takes the projected Q/K/V as they are); the causal mask is built from the sequence length
    inside forward, as a user's decoder does.
    """

    def __init__(self, seq, dim=64, heads=16):
        super().__init__()
        self.seq, self.heads, self.head_dim = seq, heads, dim // heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        s, h, p = self.seq, self.heads, self.head_dim
        q = self.wq(x).view(1, s, h, p).transpose(1, 2)  # [1, H, S, P]
        k = self.wk(x).view(1, s, h, p).transpose(1, 2)
        v = self.wv(x).view(1, s, h, p).transpose(1, 2)
        mask = torch.triu(torch.full((s, s), float("-inf")), diagonal=1)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(p) + mask, dim=-1)  # [1, H, S, S]
        o = (att @ v).transpose(1, 2).reshape(1, s, h * p)
        return self.wo(o)


class EcgformerMhsa(nn.Module):
    """nn.MultiheadAttention self-attention: 8 heads of 2 over 16 features."""

    def __init__(self, dim=16, heads=8):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x):
        y, _ = self.mha(x, x, x, need_weights=False)
        return y


def macs(s, e, h, p):
    """Multiply-accumulates of one block: Q/K/V and output projections, QK^T and att.V."""
    inner = h * p
    return 3 * s * e * inner + 2 * h * s * s * p + s * inner * e


def export(model, name, seq, dim, calib_samples=CALIB_SAMPLES):
    rng = np.random.default_rng(1)
    calib = rng.standard_normal((calib_samples, seq, dim)).astype(np.float32)
    x = rng.standard_normal((1, seq, dim)).astype(np.float32)

    path = os.path.join(HERE, name + ".onnx")
    torch.onnx.export(
        model,
        (torch.from_numpy(x),),
        path,
        input_names=["x"],
        output_names=["y"],
        opset_version=17,
        do_constant_folding=True,
        dynamo=False,  # legacy TorchScript exporter
    )
    onnx.checker.check_model(onnx.load(path), full_check=True)

    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy().astype(np.float32)
    np.savez(os.path.join(HERE, name + ".calib.npz"), x=calib)
    np.savez(os.path.join(HERE, name + ".inputs.npz"), x=x)
    np.savez(os.path.join(HERE, name + ".outputs.npz"), y=y)

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y_ort,) = sess.run(["y"], {"x": x})
    err = float(np.max(np.abs(y_ort - y)))
    g = onnx.load(path).graph
    ops = collections.Counter(n.op_type for n in g.node)
    print(f"{name}.onnx: {os.path.getsize(path)} bytes, x{list(x.shape)} -> y{list(y.shape)}, "
          f"max |ort - torch| = {err:.3e}, output std = {y.std():.3f}")
    print("  ops: " + ", ".join(f"{op} x{c}" for op, c in sorted(ops.items())))
    assert err <= TOL, f"{name}: onnxruntime disagrees with torch ({err})"
    return path


def main():
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, onnx {onnx.__version__}, "
          f"onnxruntime {ort.__version__}, numpy {np.__version__}")
    # nn.MultiheadAttention under eval()+no_grad() takes a fused fast path the TorchScript exporter cannot export.
    torch.backends.mha.set_fastpath_enabled(False)

    torch.manual_seed(0)
    eeg = EegformerMhsa().eval()
    torch.manual_seed(0)
    ecg = EcgformerMhsa().eval()

    with torch.no_grad():
        export(eeg, "eegformer_mhsa", 81, 32)
        export(ecg, "ecgformer_mhsa", 66, 16)
        for seq in LLAMA_PREFILL:
            torch.manual_seed(0)
            export(LlamaPrefillMhsa(seq).eval(), f"llama_prefill_s{seq}", seq, 64, LLAMA_CALIB_SAMPLES)
    print(f"MACs: eegformer_mhsa {macs(81, 32, 8, 32):,}, ecgformer_mhsa {macs(66, 16, 8, 2):,}, "
          + ", ".join(f"llama_prefill_s{s} {macs(s, 64, 16, 4):,}" for s in LLAMA_PREFILL))


if __name__ == "__main__":
    main()

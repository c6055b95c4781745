"""Export small example transformer models to ONNX with torch.onnx.export.

Regenerate everything (run from the repo root):

    /work/venvs/torch/bin/python examples/torch-encoder/export.py

The venv was made with:

    python3 -m venv /work/venvs/torch
    /work/venvs/torch/bin/pip install torch onnx onnxruntime numpy

Versions used for the committed files: torch 2.15.0+cu132, onnx 1.23.2,
onnxruntime 1.31.1, numpy 2.4.6 (Python 3.11.7). The script prints the
versions it runs with; other versions may emit slightly different graphs.

Python is used only to produce these example models. Outputs, written next
to this script:

  kws_encoder_op17.onnx     Linear -> TransformerEncoderLayer(gelu) -> mean -> Linear, opset 17
  kws_encoder_op14.onnx     same module and weights, opset 14 (LayerNorm/GELU decomposed)
  kws_encoder_dynamic.onnx  same as op17 but batch dim symbolic ("batch")
  causal_mha_op17.onnx      MultiheadAttention with causal mask built from the runtime
                            shape, residual, LayerNorm, ReLU MLP + residual, opset 17
  <name>.inputs.npz         reference inputs  (key = ONNX input name)
  <name>.outputs.npz        torch outputs     (key = ONNX output name)
  GRAPHS.txt                per model: opset, dim_params, op histogram, attributes,
                            node order (constants inlined), initializer dtypes/shapes

All exports use the legacy TorchScript exporter (dynamo=False), which emits
the Shape/Gather/Unsqueeze/Concat shape arithmetic that real exports contain.
The MHA "fast path" is switched off (torch.backends.mha.set_fastpath_enabled)
because its fused kernels have no ONNX export. Weights: torch.manual_seed(0)
default init, 1-D parameters randomized (see randomize_), q/k projections
scaled by QK_GAIN, KWS head scaled x4 so logits are O(1). Every model is
checked against onnxruntime (max abs error <= 1e-5) and must be < 300 KB.
The outputs are byte-for-byte reproducible with the versions above.
"""

import collections
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 1e-5
QK_GAIN = 3.0


class KwsEncoder(nn.Module):
    """Keyword-spotting-style classifier: [B, 16, 64] -> [B, 10]."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(64, 64)
        self.encoder = nn.TransformerEncoderLayer(
            d_model=64,
            nhead=4,
            dim_feedforward=128,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
        )
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        h = self.proj(x)
        h = self.encoder(h)
        h = h.mean(dim=1)
        return self.head(h)


class CausalBlock(nn.Module):
    """Tiny decoder block: causal self-attention + LayerNorm + ReLU MLP."""

    def __init__(self, d=32, heads=4, hidden=64):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x):
        seq_len = x.shape[1]
        # Causal mask built from the runtime shape inside forward.
        mask = torch.triu(
            torch.full((seq_len, seq_len), float("-inf"), device=x.device),
            diagonal=1,
        )
        a, _ = self.attn(x, x, x, attn_mask=mask, need_weights=False)
        h = self.norm(x + a)
        return h + self.fc2(torch.relu(self.fc1(h)))


def randomize_(model, gen):
    """Make every parameter distinct and non-trivial.

    PyTorch's default init leaves attention biases at 0, LayerNorm weights at 1
    and LayerNorm biases at 0. Such parameters would hide importer bugs (e.g. a
    swapped gamma/beta or a mis-split in_proj_bias), and the exporter would
    de-duplicate identical initializers into Identity nodes. Matrices keep
    their default (fan-in scaled) init, so activations stay O(1), except the
    attention query/key projections, which are scaled up so the softmax is
    clearly non-uniform (with the default init it is almost flat, which would
    hide a wrong scale or a transposed score matrix).
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.MultiheadAttention):
                e = m.embed_dim
                m.in_proj_weight[: 2 * e].mul_(QK_GAIN)
        for name, p in model.named_parameters():
            if p.dim() == 1:
                noise = torch.randn(p.shape, generator=gen)
                if "norm" in name and name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * noise)
                else:
                    p.copy_(0.1 * noise)


def export(model, x, name, input_name, output_name, opset, dynamic_axes=None):
    path = os.path.join(HERE, name + ".onnx")
    kwargs = {}
    if "dynamo" in torch.onnx.export.__code__.co_varnames:
        kwargs["dynamo"] = False  # legacy TorchScript exporter
    torch.onnx.export(
        model,
        (torch.from_numpy(x),),
        path,
        input_names=[input_name],
        output_names=[output_name],
        opset_version=opset,
        dynamic_axes=dynamic_axes,
        do_constant_folding=True,
        **kwargs,
    )
    onnx.checker.check_model(onnx.load(path), full_check=True)

    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy().astype(np.float32)
    np.savez(os.path.join(HERE, name + ".inputs.npz"), **{input_name: x})
    np.savez(os.path.join(HERE, name + ".outputs.npz"), **{output_name: y})

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y_ort,) = sess.run([output_name], {input_name: x})
    err = float(np.max(np.abs(y_ort - y)))
    size = os.path.getsize(path)
    print(f"{name}.onnx: {size} bytes, output {output_name}{list(y.shape)}, "
          f"max |ort - torch| = {err:.3e}, output std = {y.std():.3f}")
    assert err <= TOL, f"{name}: onnxruntime disagrees with torch ({err})"
    assert size < 300_000, f"{name}: file too large ({size} bytes)"
    return path


def summarize(path):
    m = onnx.load(path)
    g = m.graph
    lines = [f"== {os.path.basename(path)} =="]
    lines.append("producer: %s %s, ir_version %d" % (m.producer_name, m.producer_version, m.ir_version))
    lines.append("opset_import: " + ", ".join(
        f"{o.domain or 'ai.onnx'}={o.version}" for o in m.opset_import))

    def dims(vi):
        t = vi.type.tensor_type
        ds = [d.dim_param if d.HasField("dim_param") else
              (str(d.dim_value) if d.HasField("dim_value") else "?") for d in t.shape.dim]
        return f"{vi.name}: {onnx.TensorProto.DataType.Name(t.elem_type)}[{', '.join(ds)}]"

    lines.append("inputs:  " + "; ".join(dims(v) for v in g.input))
    lines.append("outputs: " + "; ".join(dims(v) for v in g.output))
    dim_params = sorted({d.dim_param for v in list(g.input) + list(g.output) + list(g.value_info)
                         for d in v.type.tensor_type.shape.dim if d.dim_param})
    lines.append("dim_params: " + (", ".join(dim_params) if dim_params else "(none)"))

    hist = collections.Counter(f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in g.node)
    lines.append(f"nodes: {len(g.node)}")
    for op, c in sorted(hist.items()):
        lines.append(f"  {c:4d}  {op}")

    # Attributes per op type (distinct settings, Constant excluded), to show what the importer must handle.
    attrs = collections.defaultdict(set)
    for n in g.node:
        if n.op_type == "Constant":
            continue  # values are inlined in the node listing below
        for a in n.attribute:
            v = onnx.helper.get_attribute_value(a)
            if isinstance(v, onnx.TensorProto):
                arr = onnx.numpy_helper.to_array(v)
                v = f"tensor<{onnx.TensorProto.DataType.Name(v.data_type)}{list(arr.shape)}>"
                if arr.size <= 4:
                    v += "=" + str(arr.tolist())
            elif isinstance(v, bytes):
                v = v.decode()
            elif isinstance(v, list):
                v = tuple(v)
            attrs[n.op_type].add(f"{a.name}={v}")
    lines.append("attributes:")
    for op in sorted(attrs):
        lines.append(f"  {op}: " + ", ".join(sorted(attrs[op])))

    # Ordered node listing; Constant nodes are inlined as c<dtype[shape]>=value.
    consts = {}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            t = n.attribute[0].t
            arr = onnx.numpy_helper.to_array(t)
            txt = f"c<{onnx.TensorProto.DataType.Name(t.data_type).lower()}{list(arr.shape)}>"
            if arr.size <= 4:
                txt += "=" + str(arr.tolist())
            elif np.isinf(arr).any():
                txt += f"(has {int(np.isinf(arr).sum())} inf)"
            consts[n.output[0]] = txt
    inits = {i.name for i in g.initializer}

    def arg(name):
        if name in consts:
            return consts[name]
        if name in inits:
            return "@" + name
        return name.replace("_output_0", "")

    lines.append("node order (Constant inlined as c<...>, initializers as @name):")
    for n in g.node:
        if n.op_type == "Constant":
            continue
        at = []
        for a in n.attribute:
            v = onnx.helper.get_attribute_value(a)
            at.append(f"{a.name}={list(v) if isinstance(v, list) else v}")
        lines.append(f"  {n.op_type}({', '.join(arg(i) for i in n.input)})"
                     + (f" [{', '.join(at)}]" if at else "")
                     + f" -> {', '.join(arg(o) for o in n.output)}")

    init_dtypes = collections.Counter(onnx.TensorProto.DataType.Name(i.data_type) for i in g.initializer)
    lines.append(f"initializers: {len(g.initializer)} ("
                 + ", ".join(f"{k} x{v}" for k, v in sorted(init_dtypes.items())) + ")")
    for i in g.initializer:
        lines.append(f"  {i.name}: {onnx.TensorProto.DataType.Name(i.data_type)}{list(i.dims)}")
    return "\n".join(lines)


def main():
    versions = (f"python {sys.version.split()[0]}, torch {torch.__version__}, onnx {onnx.__version__}, "
                f"onnxruntime {ort.__version__}, numpy {np.__version__}")
    print(versions)
    torch.manual_seed(0)
    # Under eval()+no_grad() nn.TransformerEncoderLayer / nn.MultiheadAttention
    # take a fused "fast path" (aten::_transformer_encoder_layer_fwd,
    # aten::_native_multi_head_attention) that the TorchScript exporter cannot
    # export. Turn it off so the exporter sees the plain op-by-op graph.
    torch.backends.mha.set_fastpath_enabled(False)

    # Shared reference input for the three KWS exports.
    x_kws = np.random.default_rng(0).standard_normal((1, 16, 64)).astype(np.float32)
    kws = KwsEncoder().eval()
    gen = torch.Generator().manual_seed(0)
    randomize_(kws, gen)
    with torch.no_grad():
        # Mean pooling shrinks the features; scale the head so logits are O(1).
        kws.head.weight.mul_(4.0)

    # Causal block: created after kws so both are determined by seed 0.
    x_mha = np.random.default_rng(1).standard_normal((1, 12, 32)).astype(np.float32)
    mha = CausalBlock().eval()
    randomize_(mha, gen)

    paths = []
    with torch.no_grad():
        paths.append(export(kws, x_kws, "kws_encoder_op17", "x", "logits", 17))
        paths.append(export(kws, x_kws, "kws_encoder_op14", "x", "logits", 14))
        paths.append(export(kws, x_kws, "kws_encoder_dynamic", "x", "logits", 17,
                            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}))
        paths.append(export(mha, x_mha, "causal_mha_op17", "x", "y", 17))

    text = "Generated by examples/torch-encoder/export.py\n" + versions + "\n\n"
    text += "\n\n".join(summarize(p) for p in paths) + "\n"
    with open(os.path.join(HERE, "GRAPHS.txt"), "w") as f:
        f.write(text)
    print()
    print(text)


if __name__ == "__main__":
    main()

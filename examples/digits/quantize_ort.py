"""Quantize example models with onnxruntime's static QDQ quantizer, as a reference point.

Run from the repo root, after train.py:

    /work/venvs/torch/bin/python examples/digits/quantize_ort.py

For each model it runs onnxruntime.quantization.quant_pre_process(model, tmp,
skip_symbolic_shape=True) (ONNX shape inference plus onnxruntime's basic graph
optimizations; the preprocessed model goes to a temporary directory; symbolic
shape inference is skipped because it fails with an AssertionError in
_infer_Reshape on these exports, and all their shapes are static) and then

    quantize_static(preprocessed, output, reader, quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)

with every other argument left at its default. Outputs:

  examples/digits/digits_encoder.ort_qdq.onnx
      calibrated on calib.npz (key x, 64 training images, fed one at a time)
  examples/torch-encoder/kws_encoder_op17.ort_qdq.onnx
      calibrated on 32 standard-normal inputs of the model's input shape
      (numpy.random.default_rng(0))
  examples/digits/ORT_QDQ_GRAPHS.txt
      per QDQ model: op histogram, the ops onnxruntime left in float (with the
      reason), and for the digits model the onnxruntime top-1 accuracy of the
      float and the QDQ model on test.npz and their top-1 agreement

A node is "quantized" when each of its activation inputs comes from a
DequantizeLinear and each of its outputs feeds only QuantizeLinear nodes (the
pattern onnxruntime fuses into an integer kernel). Every other compute node is
a float island: it runs in float between a DequantizeLinear and a QuantizeLinear.
"""

import collections
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


class Reader(CalibrationDataReader):
    """Feeds calibration samples one at a time under the model's input name."""

    def __init__(self, name, samples):
        self.name = name
        self.samples = list(samples)
        self.i = 0

    def get_next(self):
        if self.i >= len(self.samples):
            return None
        self.i += 1
        return {self.name: self.samples[self.i - 1]}

    def rewind(self):
        self.i = 0


def input_spec(path):
    m = onnx.load(path)
    (inp,) = m.graph.input
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert all(d > 0 for d in shape), f"{path}: input {inp.name} has a symbolic shape {shape}"
    return inp.name, shape


def quantize(src, dst, samples):
    name, _ = input_spec(src)
    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "preprocessed.onnx")
        # skip_symbolic_shape: onnxruntime's symbolic shape inference asserts on the exporter's
        # Reshape (shape input of unknown rank); the graphs are static, so ONNX shape inference does.
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        quantize_static(pre, dst, Reader(name, samples), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    onnx.checker.check_model(onnx.load(dst), full_check=True)
    size = os.path.getsize(dst)
    print(f"wrote {os.path.relpath(dst, ROOT)} ({size} bytes)")
    assert size < 200_000, f"{dst}: too large ({size} bytes)"


def float_islands(path):
    """(node name, op type, reason) for every compute node left in float."""
    g = onnx.load(path).graph
    producer = {o: n for n in g.node for o in n.output}
    consumers = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    constants = {i.name for i in g.initializer}
    constants |= {n.output[0] for n in g.node if n.op_type == "Constant"}
    graph_outputs = {o.name for o in g.output}
    out = []
    for n in g.node:
        if n.op_type in QDQ_OPS or n.op_type == "Constant":
            continue
        reasons = []
        for i in n.input:
            if not i or i in constants:
                continue
            p = producer.get(i)
            if p is None or p.op_type != "DequantizeLinear":
                reasons.append(f"input {i} from {p.op_type if p else 'graph input'}")
        for o in n.output:
            cs = consumers.get(o, [])
            if o in graph_outputs:
                reasons.append(f"output {o} is a graph output")
            bad = sorted({c.op_type for c in cs if c.op_type != "QuantizeLinear"})
            if bad:
                reasons.append(f"output {o} feeds {', '.join(bad)}")
        if reasons:
            out.append((n.name, n.op_type, "; ".join(reasons)))
    return out


def histogram(path):
    g = onnx.load(path).graph
    return collections.Counter(n.op_type for n in g.node)


def run_all(path, name, xs):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (out,) = [o.name for o in sess.get_outputs()]
    return np.concatenate([sess.run([out], {name: x[None]})[0] for x in xs])


def report(path, extra=()):
    lines = [f"== {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes) =="]
    hist = histogram(path)
    lines.append(f"nodes: {sum(hist.values())}; op histogram (op_type: count):")
    lines += [f"  {op}: {c}" for op, c in sorted(hist.items())]
    isl = float_islands(path)
    by_op = collections.Counter(op for _, op, _ in isl)
    lines.append("float islands (op_type: count): "
                 + (", ".join(f"{op}: {c}" for op, c in sorted(by_op.items())) if isl else "(none)"))
    lines += [f"  {op} {name}: {why}" for name, op, why in isl]
    lines += list(extra)
    return lines


def main():
    versions = (f"python {sys.version.split()[0]}, onnx {onnx.__version__}, onnxruntime {ort.__version__}, "
                f"numpy {np.__version__}")
    print(versions)

    digits = os.path.join(HERE, "digits_encoder.onnx")
    digits_q = os.path.join(HERE, "digits_encoder.ort_qdq.onnx")
    calib = np.load(os.path.join(HERE, "calib.npz"))["x"]
    quantize(digits, digits_q, [c[None] for c in calib])

    kws = os.path.join(ROOT, "examples", "torch-encoder", "kws_encoder_op17.onnx")
    kws_q = os.path.join(ROOT, "examples", "torch-encoder", "kws_encoder_op17.ort_qdq.onnx")
    kws_name, kws_shape = input_spec(kws)
    rng = np.random.default_rng(0)
    quantize(kws, kws_q, [rng.standard_normal(kws_shape).astype(np.float32) for _ in range(32)])

    test = np.load(os.path.join(HERE, "test.npz"))
    x, y = test["x"], test["y"]
    n = len(y)
    pred_f = run_all(digits, "x", x).argmax(axis=1)
    pred_q = run_all(digits_q, "x", x).argmax(axis=1)
    cf, cq, agree = int((pred_f == y).sum()), int((pred_q == y).sum()), int((pred_f == pred_q).sum())
    acc = [
        f"onnxruntime top-1 on examples/digits/test.npz: float {100 * cf / n:.2f}% ({cf}/{n}), "
        f"QDQ {100 * cq / n:.2f}% ({cq}/{n}), agreement {100 * agree / n:.2f}% ({agree}/{n})",
    ]
    kws_y = np.load(os.path.join(ROOT, "examples", "torch-encoder", "kws_encoder_op17.outputs.npz"))["logits"]
    kws_x = np.load(os.path.join(ROOT, "examples", "torch-encoder", "kws_encoder_op17.inputs.npz"))[kws_name]
    kws_yq = run_all(kws_q, kws_name, kws_x)
    kws_extra = [f"onnxruntime on kws_encoder_op17.inputs.npz: max |QDQ - float| logits "
                 f"{float(np.max(np.abs(kws_yq - kws_y))):.3e} (float logits std {float(kws_y.std()):.3f}), "
                 f"argmax float {int(kws_y.argmax())}, QDQ {int(kws_yq.argmax())}"]

    cmd = ("quant_pre_process(model, tmp, skip_symbolic_shape=True) then quantize_static(tmp, out, reader, quant_format=QuantFormat.QDQ, "
           "per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, "
           "calibrate_method=CalibrationMethod.MinMax), other arguments default")
    text = [f"Generated by examples/digits/quantize_ort.py", versions, cmd,
            "A float island is a compute node that onnxruntime leaves in float: an activation input not from "
            "DequantizeLinear, or an output feeding something other than QuantizeLinear.", ""]
    text += report(digits_q, acc) + [""] + report(kws_q, kws_extra)
    text = "\n".join(text) + "\n"
    with open(os.path.join(HERE, "ORT_QDQ_GRAPHS.txt"), "w") as f:
        f.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()

"""Train a tiny transformer encoder on scikit-learn's digits and export it to ONNX.

Run from the repo root (takes a few seconds on one CPU core):

    /work/venvs/torch/bin/python examples/digits/train.py

The data set is sklearn.datasets.load_digits(): 1797 grey-scale 8x8 images of
the digits 0-9 with pixel values 0..16. It ships inside the scikit-learn
package, so nothing is downloaded. Python is used only to produce these
example files; nothing in the Rust test suite runs it.

Model (every image is a sequence of 8 tokens, one per pixel row):

    x f32[1, 8, 8] (pixels / 16, in [0, 1])
      -> Linear(8 -> 32) row embedding + learned position embedding [8, 32]
      -> 2 x pre-LayerNorm encoder block:
             h = h + MultiheadAttention(LayerNorm(h))      (4 heads of 8)
             h = h + Linear(64 -> 32)(GELU(Linear(32 -> 64)(LayerNorm(h))))
      -> LayerNorm -> mean over the 8 tokens -> Linear(32 -> 10)
      -> logits f32[1, 10]

Outputs, written next to this script:

  digits_encoder.onnx          opset 17, legacy TorchScript exporter, static batch 1
  digits_encoder.inputs.npz    x [1, 8, 8]: the first test image
  digits_encoder.outputs.npz   logits [1, 10]: torch's output for it
  calib.npz                    x [64, 8, 8]: the first 64 training images (calibration)
  test.npz                     x [450, 8, 8] float32, y [450] int64: the whole test split
  ACCURACY.txt                 float test accuracy (torch and onnxruntime, which must agree)

Determinism: fixed seeds, one intra-op thread, deterministic algorithms, a
fixed number of epochs (no early stopping on the test set). The script fails
if the test accuracy is below 96% or if onnxruntime's top-1 predictions on the
test split differ from torch's.
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import sklearn
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
EMBED = 32
HEADS = 4
HIDDEN = 64
LAYERS = 2
EPOCHS = 60
BATCH = 32
LR = 3e-3
MIN_ACCURACY = 0.96
N_CALIB = 64


class Block(nn.Module):
    """Pre-LayerNorm transformer encoder block."""

    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(EMBED)
        self.attn = nn.MultiheadAttention(EMBED, HEADS, dropout=0.0, batch_first=True)
        self.norm2 = nn.LayerNorm(EMBED)
        self.fc1 = nn.Linear(EMBED, HIDDEN)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(HIDDEN, EMBED)

    def forward(self, h):
        a = self.norm1(h)
        a, _ = self.attn(a, a, a, need_weights=False)
        h = h + a
        return h + self.fc2(self.act(self.fc1(self.norm2(h))))


class DigitsEncoder(nn.Module):
    """[B, 8, 8] pixel rows -> [B, 10] logits."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, EMBED)
        self.pos = nn.Parameter(0.02 * torch.randn(8, EMBED))
        self.blocks = nn.ModuleList([Block() for _ in range(LAYERS)])
        self.norm = nn.LayerNorm(EMBED)
        self.head = nn.Linear(EMBED, 10)

    def forward(self, x):
        h = self.embed(x) + self.pos
        for b in self.blocks:
            h = b(h)
        return self.head(self.norm(h).mean(dim=1))


def accuracy(model, x, y):
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return pred, int((pred == y).sum())


def main():
    versions = (f"python {sys.version.split()[0]}, torch {torch.__version__}, onnx {onnx.__version__}, "
                f"onnxruntime {ort.__version__}, scikit-learn {sklearn.__version__}, numpy {np.__version__}")
    print(versions)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # [1797, 8, 8] in [0, 1]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y)
    print(f"train {x_train.shape[0]}, test {x_test.shape[0]}")

    model = DigitsEncoder()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    steps_per_epoch = (len(x_train) + BATCH - 1) // BATCH
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=EPOCHS * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if (epoch + 1) % 10 == 0:
            model.eval()
            _, correct = accuracy(model, x_test, y_test)
            print(f"epoch {epoch + 1:3d}: train loss {total / len(xt):.4f}, "
                  f"test top-1 {100 * correct / len(y_test):.2f}%")

    model.eval()
    pred_torch, correct = accuracy(model, x_test, y_test)
    n = len(y_test)
    assert correct / n >= MIN_ACCURACY, f"test accuracy {correct}/{n} is below {MIN_ACCURACY:.0%}"

    # The MHA fast path (fused kernels under eval()+no_grad()) has no ONNX export.
    torch.backends.mha.set_fastpath_enabled(False)
    path = os.path.join(HERE, "digits_encoder.onnx")
    sample = x_test[:1]
    with torch.no_grad():
        torch.onnx.export(model, (torch.from_numpy(sample),), path, input_names=["x"], output_names=["logits"],
                          opset_version=17, do_constant_folding=True, dynamo=False)
        logits = model(torch.from_numpy(sample)).numpy()
    onnx.checker.check_model(onnx.load(path), full_check=True)
    size = os.path.getsize(path)
    assert size < 200_000, f"model too large ({size} bytes)"

    # onnxruntime on the whole test split, one sample at a time (static batch 1).
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ort_logits = np.concatenate([sess.run(["logits"], {"x": x_test[i:i + 1]})[0] for i in range(n)])
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x_test)).numpy()
    err = float(np.max(np.abs(ort_logits - torch_logits)))
    pred_ort = ort_logits.argmax(axis=1)
    correct_ort = int((pred_ort == y_test).sum())
    assert (pred_ort == pred_torch).all(), "onnxruntime and torch disagree on a test prediction"
    top2 = np.sort(ort_logits, axis=1)[:, -2:]
    margin = float(np.min(top2[:, 1] - top2[:, 0]))
    print(f"digits_encoder.onnx: {size} bytes, max |ort - torch| logits on the test split = {err:.3e}, "
          f"smallest top-1/top-2 logit margin = {margin:.3e}")

    np.savez(os.path.join(HERE, "digits_encoder.inputs.npz"), x=sample)
    np.savez(os.path.join(HERE, "digits_encoder.outputs.npz"), logits=logits.astype(np.float32))
    np.savez(os.path.join(HERE, "calib.npz"), x=np.ascontiguousarray(x_train[:N_CALIB]))
    np.savez(os.path.join(HERE, "test.npz"), x=np.ascontiguousarray(x_test), y=y_test)

    text = (f"Generated by examples/digits/train.py\n{versions}\n"
            f"test split: {n} samples (train_test_split(test_size=0.25, random_state={SEED}, stratify=y))\n"
            f"torch top-1: {100 * correct / n:.2f}% ({correct}/{n})\n"
            f"onnxruntime top-1 (digits_encoder.onnx): {100 * correct_ort / n:.2f}% ({correct_ort}/{n})\n"
            f"max |onnxruntime - torch| logits: {err:.3e}; smallest top-1/top-2 logit margin: {margin:.3e}\n")
    with open(os.path.join(HERE, "ACCURACY.txt"), "w") as f:
        f.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()

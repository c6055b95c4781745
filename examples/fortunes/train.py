"""Train mote's fortunes example: a BPE tokenizer and a tiny Llama 2 decoder on Debian's fortune cookies.

Run from the repo root (get_data.sh first; see README.md for the exact commands and timings):

    examples/fortunes/get_data.sh /tmp/fortunes
    nice -n 10 /work/venvs/torch/bin/python examples/fortunes/train.py --data /tmp/fortunes --out examples/fortunes

Steps, all deterministic (fixed seed, one torch thread, fixed step count, no early stopping):

 1. Read the fortune files listed in FILES (DIR/usr/share/games/fortunes/<name>: entries separated by lines holding
    only "%"), drop the few entries holding control characters (backspace overstrikes and bells from the old
    terminal days) and exact duplicates (several cookies sit in two files: a duplicate across the split would leak
    validation text into training).
 2. Hold out VAL_FRACTION of the entries (random.Random(SEED) shuffle): calib.txt, the validation and calibration
    text. The rest is the training text.
 3. Train a 512-token BPE vocabulary on the training text (bpe.py) and write tokenizer.bin, plus
    tokenizer_check.json: run.c-encoded ids of a few strings, for the Rust test.
 4. Encode every entry as run.c would prompt it, BOS + encode(entry), and concatenate (as llama2.c's
    pretokenization does: no EOS, so the model learns to end a cookie by emitting BOS, where run.c stops).
 5. Train the model (dim 64, 8 layers, 16 heads, SwiGLU 256, tied classifier; llama2.c's model.py semantics) with
    AdamW on random 128-token windows of the training stream.
 6. Export model.bin (llama2.c version 0, what run.c reads), fortunes.onnx (full-sequence causal decoder, T = 32),
    reference.json (greedy generations and logits of the float model) and print train/val losses. model.bin is
    checked by a numpy port of run.c's forward, fortunes.onnx by onnxruntime, both against the torch model.
"""

import argparse
import json
import math
import os
import random
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402

SEED = 1337
# Every fortune file of the package (the .dat files are strfile indexes, the .u8 names symlinks to these).
FILES = [
    "art", "ascii-art", "computers", "cookie", "debian", "definitions", "disclaimer", "drugs", "education", "ethnic",
    "food", "goedel", "humorists", "kids", "knghtbrd", "law", "linux", "linuxcookie", "love", "magic", "medicine",
    "men-women", "miscellaneous", "news", "paradoxum", "people", "perl", "pets", "platitudes", "politics",
    "pratchett", "science", "songs-poems", "sports", "startrek", "tao", "translate-me", "wisdom", "work", "zippy",
]  # fmt: skip
# 2% of the ~14,000 entries would be ~48 KB of text; the committed calib.txt is kept under 40 KB.
VAL_FRACTION = 0.015

VOCAB = 512
DIM, N_LAYERS, N_HEADS, N_KV_HEADS, HIDDEN = 64, 8, 16, 16, 256
MAX_SEQ_LEN = 256  # in the checkpoint header and the RoPE tables
NORM_EPS = 1e-5
TRAIN_LEN = 128  # training windows
ONNX_T = 32  # the ONNX model's fixed sequence length

PROMPTS = ["Once upon a time", "The best way to", "A friend"]
GEN_TOKENS = 24

# Strings whose run.c encoding (BOS first, no EOS) the Rust test checks: prompts, whitespace runs, tabs and
# newlines as in the cookies, digits, characters the vocabulary lacks (byte fallback), text spelling the specials.
CHECK_STRINGS = PROMPTS + [
    "",
    " ",
    "Hello, world!",
    "You will be married within a year.",
    "\"To be or not to be.\"\n\t\t-- Shakespeare",
    "Q:\tWhy did the chicken cross the road?\nA:\tTo get to the other side.",
    "In 1984,  42   spaces    and 3.14159 digits.",
    "caf\u00e9 na\u00efve \u00fcber \u20ac5 \u65e5\u672c \U0001f600",
    "<s> </s> <unk> <0x41>",
    "%",
]


def read_entries(data_dir):
    """The cookies of FILES in order: text between "%" lines, trailing blank lines dropped, leading tabs kept."""
    root = os.path.join(data_dir, "usr", "share", "games", "fortunes")
    entries = []
    for name in FILES:
        with open(os.path.join(root, name), encoding="utf-8") as f:
            lines = f.read().split("\n")
        cur = []
        for line in lines + ["%"]:
            if line == "%":
                text = "\n".join(cur).rstrip("\n")
                if text.strip():
                    entries.append(text)
                cur = []
            else:
                cur.append(line)
    return entries


def clean(entries):
    keep, seen, n_ctrl, n_dup = [], set(), 0, 0
    for e in entries:
        if any(ord(c) < 32 and c not in "\n\t" or ord(c) == 127 for c in e):
            n_ctrl += 1
        elif e in seen:
            n_dup += 1
        else:
            seen.add(e)
            keep.append(e)
    print(f"entries: {len(entries)} read, {n_ctrl} with control characters dropped, {n_dup} duplicates dropped")
    return keep


# ---------------------------------------------------------------------------------------------------------------
# The model: llama2.c's model.py (Llama 2) without dropout, KV cache or grouped-query attention (n_kv = n_heads).


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def precompute_freqs(head_size, end, theta=10000.0):
    """cos and sin [end, head_size/2] of pos * theta^(-2i/head_size): llama2.c's freqs_cis as real tables."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_size, 2)[: head_size // 2].float() / head_size))
    angles = torch.outer(torch.arange(end).float(), freqs)
    return torch.cos(angles), torch.sin(angles)


def apply_rotary_emb(x, cos, sin):
    """Rotates the pairs (x[2i], x[2i+1]) of every head; x is [B, T, H, head_size], cos/sin [T, head_size/2]."""
    xr, xi = x.reshape(x.shape[:-1] + (-1, 2)).unbind(-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack([xr * cos - xi * sin, xr * sin + xi * cos], dim=-1).flatten(3)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.head_size = DIM // N_HEADS
        self.wq = nn.Linear(DIM, N_HEADS * self.head_size, bias=False)
        self.wk = nn.Linear(DIM, N_KV_HEADS * self.head_size, bias=False)
        self.wv = nn.Linear(DIM, N_KV_HEADS * self.head_size, bias=False)
        self.wo = nn.Linear(N_HEADS * self.head_size, DIM, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, N_HEADS, self.head_size)
        k = self.wk(x).view(b, t, N_KV_HEADS, self.head_size)
        v = self.wv(x).view(b, t, N_KV_HEADS, self.head_size)
        q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if mask is None:
            # Training: the fused kernel, same math.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = q @ k.transpose(2, 3) / math.sqrt(self.head_size) + mask
            y = F.softmax(scores, dim=-1) @ v
        return self.wo(y.transpose(1, 2).contiguous().view(b, t, DIM))


class FeedForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = nn.Linear(DIM, HIDDEN, bias=False)
        self.w2 = nn.Linear(HIDDEN, DIM, bias=False)
        self.w3 = nn.Linear(DIM, HIDDEN, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = Attention()
        self.feed_forward = FeedForward()
        self.attention_norm = RMSNorm(DIM, NORM_EPS)
        self.ffn_norm = RMSNorm(DIM, NORM_EPS)

    def forward(self, x, cos, sin, mask):
        h = x + self.attention(self.attention_norm(x), cos, sin, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok_embeddings = nn.Embedding(VOCAB, DIM)
        self.layers = nn.ModuleList(Block() for _ in range(N_LAYERS))
        self.norm = RMSNorm(DIM, NORM_EPS)
        self.output = nn.Linear(DIM, VOCAB, bias=False)
        self.output.weight = self.tok_embeddings.weight  # tied classifier, as llama2.c
        cos, sin = precompute_freqs(DIM // N_HEADS, MAX_SEQ_LEN)
        self.register_buffer("freqs_cos", cos, persistent=False)
        self.register_buffer("freqs_sin", sin, persistent=False)
        # llama2.c's init: N(0, 0.02) everywhere, the residual projections scaled down by sqrt(2 * n_layers).
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * N_LAYERS) if name.endswith(("w3.weight", "wo.weight")) else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, tokens, fast=False):
        b, t = tokens.shape
        h = self.tok_embeddings(tokens)
        cos, sin = self.freqs_cos[:t], self.freqs_sin[:t]
        # Export and reference (fast=False): the causal mask built in the graph from the sequence length, the way a
        # plain torch model writes it, so that the ONNX file shows it (Trilu) rather than a fused attention op.
        mask = None if fast else torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        return self.output(self.norm(h))


# ---------------------------------------------------------------------------------------------------------------
# Exports


def export_legacy(model, path):
    """llama2.c version 0 (legacy_export): 7 i32 header (positive vocab_size: shared classifier), then f32 tensors in
    run.c's order, nn.Linear weights as stored [out, in], stacked over layers; RoPE tables last."""
    layers = model.layers
    parts = [
        model.tok_embeddings.weight,
        *[l.attention_norm.weight for l in layers],
        *[l.attention.wq.weight for l in layers],
        *[l.attention.wk.weight for l in layers],
        *[l.attention.wv.weight for l in layers],
        *[l.attention.wo.weight for l in layers],
        *[l.ffn_norm.weight for l in layers],
        *[l.feed_forward.w1.weight for l in layers],
        *[l.feed_forward.w2.weight for l in layers],
        *[l.feed_forward.w3.weight for l in layers],
        model.norm.weight,
        model.freqs_cos,
        model.freqs_sin,
    ]
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", DIM, HIDDEN, N_LAYERS, N_HEADS, N_KV_HEADS, VOCAB, MAX_SEQ_LEN))
        for p in parts:
            f.write(p.detach().float().contiguous().numpy().astype("<f4").tobytes())


def runc_forward(path, tokens):
    """A numpy port of run.c's forward (one token at a time, KV cache, RoPE from powf as run.c computes it), on the
    exported model.bin: the logits after the last token. Checks the file, not the torch module."""
    data = np.fromfile(path, dtype="<f4")
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = np.frombuffer(data[:7].tobytes(), "<i4")
    hs = dim // n_heads
    at = 7

    def take(*shape):
        nonlocal at
        n = int(np.prod(shape))
        out = data[at : at + n].reshape(shape)
        at += n
        return out

    emb = take(vocab, dim)
    rms_att = take(n_layers, dim)
    kv_dim = n_kv * hs
    wq, wk, wv = take(n_layers, dim, dim), take(n_layers, kv_dim, dim), take(n_layers, kv_dim, dim)
    wo = take(n_layers, dim, dim)
    rms_ffn = take(n_layers, dim)
    w1, w2, w3 = take(n_layers, hidden, dim), take(n_layers, dim, hidden), take(n_layers, hidden, dim)
    rms_final = take(dim)
    take(seq_len, hs // 2), take(seq_len, hs // 2)
    assert at == len(data), "model.bin has trailing data"

    def rmsnorm(x, w):
        return w * (x / np.sqrt(np.mean(x * x) + 1e-5))

    def rope(vec, pos):
        vec = vec.copy()
        for i in range(0, len(vec), 2):
            freq = 1.0 / 10000.0 ** ((i % hs) / hs)
            c, s = math.cos(pos * freq), math.sin(pos * freq)
            v0, v1 = vec[i], vec[i + 1]
            vec[i], vec[i + 1] = v0 * c - v1 * s, v0 * s + v1 * c
        return vec

    kc = np.zeros((n_layers, len(tokens), dim), np.float64)
    vc = np.zeros_like(kc)
    for pos, token in enumerate(tokens):
        x = emb[token].astype(np.float64)
        for l in range(n_layers):
            xb = rmsnorm(x, rms_att[l])
            q, kc[l, pos], vc[l, pos] = rope(wq[l] @ xb, pos), rope(wk[l] @ xb, pos), wv[l] @ xb
            att_out = np.zeros(dim)
            for h in range(n_heads):
                sl = slice(h * hs, (h + 1) * hs)
                att = kc[l, : pos + 1, sl] @ q[sl] / math.sqrt(hs)
                att = np.exp(att - att.max())
                att /= att.sum()
                att_out[sl] = att @ vc[l, : pos + 1, sl]
            x = x + wo[l] @ att_out
            xb = rmsnorm(x, rms_ffn[l])
            a, b = w1[l] @ xb, w3[l] @ xb
            x = x + w2[l] @ (a / (1 + np.exp(-a)) * b)
    return emb @ rmsnorm(x, rms_final)


def share_classifier(path):
    """The exporter writes the tied classifier as MatMul(h, W^T) with W^T folded into a second initializer, a
    transposed copy of the embedding table (128 KB, and a second tensor to quantize). Replace that copy by a
    Transpose node on the table itself, so that the file holds the weights once, as model.bin does."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(path)
    g = m.graph
    emb = next(i for i in g.initializer if i.name == "tok_embeddings.weight")
    table = numpy_helper.to_array(emb)
    copies = [i for i in g.initializer if tuple(i.dims) == (DIM, VOCAB)
              and np.array_equal(numpy_helper.to_array(i), table.T)]
    assert len(copies) == 1, f"expected one transposed copy of the embedding table, found {len(copies)}"
    copy = copies[0]
    g.initializer.remove(copy)
    g.node.insert(0, helper.make_node("Transpose", ["tok_embeddings.weight"], [copy.name], name="/output/Transpose",
                                      perm=[1, 0]))
    onnx.checker.check_model(m)
    onnx.save(m, path)


@torch.no_grad()
def greedy(model, ids, n):
    """Argmax continuation, one token at a time over the full prefix (no cache): the float oracle."""
    ids = list(ids)
    out = []
    for _ in range(n):
        logits = model(torch.tensor([ids]))[0, -1]
        nxt = int(torch.argmax(logits))
        out.append(nxt)
        ids.append(nxt)
    return out


# ---------------------------------------------------------------------------------------------------------------


def batches(stream, n_windows, length, gen):
    """Random windows of length + 1 tokens (inputs and shifted targets) from a token stream."""
    starts = torch.randint(0, len(stream) - length - 1, (n_windows,), generator=gen)
    w = torch.stack([stream[s : s + length + 1] for s in starts.tolist()])
    return w[:, :-1], w[:, 1:]


def tiled(stream, length=TRAIN_LEN):
    """Consecutive non-overlapping windows covering the stream (inputs and shifted targets)."""
    n = (len(stream) - 1) // length
    return stream[: n * length].view(n, length), stream[1 : n * length + 1].view(n, length)


@torch.no_grad()
def evaluate(model, x, y):
    """Mean next-token loss over windows."""
    n, length = x.shape
    total = 0.0
    for i in range(0, n, 64):
        logits = model(x[i : i + 64], fast=True)
        total += F.cross_entropy(logits.reshape(-1, VOCAB), y[i : i + 64].reshape(-1), reduction="sum").item()
    return total / (n * length)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="directory get_data.sh unpacked the package into")
    ap.add_argument("--out", required=True, help="where to write the example files")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()

    torch.set_num_threads(1)  # the machine is shared; also makes the run bit-reproducible
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    t_start = time.time()

    # 1-2. data and split
    entries = clean(read_entries(args.data))
    order = list(range(len(entries)))
    random.Random(SEED).shuffle(order)
    n_val = round(VAL_FRACTION * len(entries))
    val_idx = sorted(order[:n_val])
    val_set = set(val_idx)
    val = [entries[i] for i in val_idx]
    train = [e for i, e in enumerate(entries) if i not in val_set]
    calib = "".join(e + "\n%\n" for e in val)
    with open(os.path.join(args.out, "calib.txt"), "w", encoding="utf-8") as f:
        f.write(calib)
    print(f"split: {len(train)} train entries ({sum(len(e) for e in train)} chars), "
          f"{len(val)} validation entries (calib.txt, {len(calib.encode())} bytes)")

    # 3. tokenizer, trained on the text as run.c will see it: each entry after the dummy " " prefix
    t0 = time.time()
    tokens, scores = bpe.train_bpe([" " + e for e in train], VOCAB)
    tok_path = os.path.join(args.out, "tokenizer.bin")
    bpe.write_tokenizer_bin(tok_path, tokens, scores)
    tok = bpe.Tokenizer(*bpe.read_tokenizer_bin(tok_path, VOCAB))
    n_chars = sum(1 for s in scores if s == bpe.SINGLE_CHAR_SCORE)
    print(f"tokenizer: {n_chars} single characters, {VOCAB - 259 - n_chars} merges "
          f"({time.time() - t0:.1f} s); longest token {max(len(t) for t in tokens)} bytes")
    check = [{"text": s, "ids": tok.encode(s, bos=True, eos=False)} for s in CHECK_STRINGS]
    with open(os.path.join(args.out, "tokenizer_check.json"), "w", encoding="utf-8") as f:
        json.dump(check, f, indent=1, ensure_ascii=False)
        f.write("\n")

    # 4. token streams
    t0 = time.time()

    def stream(texts):
        ids = []
        for e in texts:
            enc = tok.encode(e, bos=True, eos=False)
            assert tok.decode_text(enc) == e.encode("utf-8"), e
            ids += enc
        return torch.tensor(ids, dtype=torch.long)

    train_ids, val_ids = stream(train), stream(val)
    n_bytes = sum(len(e.encode()) for e in train)
    print(f"tokens: {len(train_ids)} train ({n_bytes / (len(train_ids) - len(train)):.2f} bytes per text token), "
          f"{len(val_ids)} validation ({time.time() - t0:.1f} s)")

    # 5. training
    model = Transformer()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters")
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95),
    )
    warmup = 100

    def lr_at(step):  # linear warmup, cosine decay to a tenth
        if step < warmup:
            return args.lr * (step + 1) / warmup
        p = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    val_xy = tiled(val_ids)
    # Train loss at the end on 512 random windows (65k tokens) rather than the whole 1.4M-token stream (a minute).
    train_xy = batches(train_ids, 512, TRAIN_LEN, torch.Generator().manual_seed(SEED + 1))
    gen = torch.Generator().manual_seed(SEED)
    t_train = time.time()
    log, recent = [], []
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y = batches(train_ids, args.batch, TRAIN_LEN, gen)
        loss = F.cross_entropy(model(x, fast=True).reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent.append(loss.item())
        if (step + 1) % 250 == 0 or step == 0:
            model.eval()
            v = evaluate(model, *val_xy)
            model.train()
            avg = sum(recent) / len(recent)
            log.append((step + 1, round(avg, 4), round(v, 4)))
            print(f"step {step + 1:5d}  train loss (mean of the last {len(recent)} batches) {avg:.4f}  "
                  f"val loss {v:.4f}  ({time.time() - t_train:.0f} s)", flush=True)
            recent = []
    train_time = time.time() - t_train
    model.eval()
    train_loss = evaluate(model, *train_xy)
    val_loss = evaluate(model, *val_xy)
    print(f"final: train loss {train_loss:.4f} (512 random windows), val loss {val_loss:.4f} (the whole validation "
          f"stream), {TRAIN_LEN}-token windows, nats per token; training {train_time:.0f} s")

    # 6. exports
    bin_path = os.path.join(args.out, "model.bin")
    export_legacy(model, bin_path)

    refs = []
    for prompt in PROMPTS:
        ids = tok.encode(prompt, bos=True, eos=False)
        cont = greedy(model, ids, GEN_TOKENS)
        refs.append({
            "prompt": prompt,
            "prompt_ids": ids,
            "greedy_ids": cont,
            "text": tok.decode_text(ids + cont).decode("utf-8", "replace"),
        })
        print(f"greedy: {refs[-1]['text']!r}")
    with torch.no_grad():
        first = refs[0]["prompt_ids"]
        last_logits = model(torch.tensor([first]))[0, -1]
    runc = runc_forward(bin_path, first)
    err = float(np.abs(runc - last_logits.double().numpy()).max())
    print(f"model.bin via the numpy run.c port vs torch: max |logit diff| {err:.2e}")
    assert err < 1e-3, err

    onnx_path = os.path.join(args.out, "fortunes.onnx")
    x = refs[0]["prompt_ids"] + refs[0]["greedy_ids"]
    x = torch.tensor([(x + [bpe.BOS] * ONNX_T)[:ONNX_T]])
    torch.onnx.export(model, (x,), onnx_path, input_names=["tokens"], output_names=["logits"], opset_version=17,
                      dynamo=False, do_constant_folding=True)
    share_classifier(onnx_path)
    with torch.no_grad():
        want = model(x).numpy()
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        got = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"]).run(None, {"tokens": x.numpy()})[0]
        onnx_err = float(np.abs(got - want).max())
        print(f"fortunes.onnx via onnxruntime vs torch: max |logit diff| {onnx_err:.2e}")
        assert onnx_err < 1e-4, onnx_err
    except ImportError:
        print("onnxruntime missing: fortunes.onnx not checked")

    reference = {
        "model": "model.bin / fortunes.onnx (float32, torch)",
        "tokenizer": "tokenizer.bin; prompt_ids = encode(prompt, bos=True, eos=False) as run.c",
        "decoding": f"greedy: argmax of the last position's logits over the full prefix, {GEN_TOKENS} tokens, "
                    "not stopping at BOS (run.c would stop there)",
        "prompts": refs,
        # run.c's encoding of the whole of calib.txt, each entry as BOS + encode(entry), summarised so that the
        # Rust tokenizer can be checked on 35 KB of real text without committing 20,000 ids.
        "calib_ids": {
            "entries": len(val),
            "tokens": len(val_ids),
            "sum": int(val_ids.sum()),
            "position_weighted_sum": int((val_ids * torch.arange(1, len(val_ids) + 1)).sum()),
        },
        "last_logits_prompt": PROMPTS[0],
        "last_logits": [float(v) for v in last_logits.numpy().astype(np.float32)],
    }
    with open(os.path.join(args.out, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(reference, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"losses at steps: {log}")
    print(f"total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()

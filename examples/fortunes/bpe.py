"""A small byte-pair tokenizer in llama2.c's tokenizer.bin format, with run.c's exact `encode`.

Pure Python (no sentencepiece). train.py imports it; it can also be run on its own to print how a string encodes:

    /work/venvs/torch/bin/python examples/fortunes/bpe.py examples/fortunes/tokenizer.bin "Once upon a time"

Vocabulary layout (that of Llama 2's sentencepiece model, which run.c's encode/decode assume):

    0          <unk>
    1          <s>      BOS (run.c hard-codes 1)
    2          </s>     EOS (run.c hard-codes 2)
    3..258     <0x00>..<0xFF>  byte fallback: run.c encodes a code point it cannot find as its bytes + 3
    259..      every code point of the training text, as its UTF-8 bytes (sorted by code point)
    ..511      merged tokens, in the order they were learned

Scores: run.c repeatedly merges the adjacent pair whose concatenation is a token of the highest score, so merged
token k (k = 0 first) scores -(k + 1): earlier merges win, as in BPE. Single code points score -1e6 (never the
result of a merge anyway); <unk>, <s>, </s> and the byte tokens score 0, as sentencepiece writes them. train_bpe
refuses merges that would spell one of those reserved strings, so encode can never merge into them.

Spaces are plain " " (not sentencepiece's U+2581), and encode prepends a dummy " " to non-empty text, as run.c does.
"""

import heapq
import re
import struct
import sys
from collections import Counter, defaultdict

UNK, BOS, EOS = 0, 1, 2
BYTE_OFFSET = 3
SPECIALS = [b"<unk>", b"<s>", b"</s>"]
SINGLE_CHAR_SCORE = -1e6

# Training only: split text into chunks that merges may not cross, GPT-2 style: a word (letters, digits or other
# symbols) with at most one leading space, or a run of whitespace. Without it the ~150 merges a 512-token vocabulary
# leaves room for would be spent on strings like "e t" that span words. encode() itself does not chunk (run.c does
# not), but since no learned token spans a chunk boundary its merges rarely cross one.
CHUNK = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")


def train_bpe(texts, vocab_size):
    """Learns a vocabulary of exactly `vocab_size` tokens from `texts` (already carrying the dummy " " prefix).

    Returns (tokens, scores): lists of bytes and floats in id order. Deterministic: ties between equally frequent
    pairs go to the pair whose (left, right) byte strings sort first.
    """
    tokens = list(SPECIALS) + [f"<0x{b:02X}>".encode() for b in range(256)]
    scores = [0.0] * len(tokens)
    chars = sorted({c for t in texts for c in t})
    for c in chars:
        tokens.append(c.encode("utf-8"))
        scores.append(SINGLE_CHAR_SCORE)
    if len(tokens) > vocab_size:
        raise SystemExit(f"{len(chars)} distinct characters do not fit a vocabulary of {vocab_size}")
    reserved = set(tokens[: BYTE_OFFSET + 256])
    known = set(tokens)

    # Unique chunks with their counts; each chunk is a list of token byte strings, merged in place as we go.
    chunk_counts = Counter(m.group() for t in texts for m in CHUNK.finditer(t))
    words = [[c.encode("utf-8") for c in w] for w in sorted(chunk_counts)]
    freq = [chunk_counts[w] for w in sorted(chunk_counts)]

    pair_count = Counter()
    where = defaultdict(set)  # pair -> indices of the words holding it
    for i, w in enumerate(words):
        for pair in zip(w, w[1:]):
            pair_count[pair] += freq[i]
            where[pair].add(i)

    n_merges = 0
    while len(tokens) < vocab_size:
        candidates = [(n, p) for p, n in pair_count.items() if n > 0 and p[0] + p[1] not in reserved]
        if not candidates:
            raise SystemExit(f"ran out of pairs to merge at {len(tokens)} tokens")
        # Highest count; among equal counts the smallest pair (max of the negated bytes is awkward: sort instead).
        best_n = max(n for n, _ in candidates)
        best = min(p for n, p in candidates if n == best_n)
        merged = best[0] + best[1]
        if merged not in known:
            # A concatenation already in the vocabulary (say "t" + "he" after "th" + "e") gets no second entry:
            # run.c looks merges up by their bytes, so it already merges that pair into the existing token.
            tokens.append(merged)
            scores.append(-float(n_merges + 1))
            known.add(merged)
            n_merges += 1
        for i in sorted(where.pop(best)):
            w, f = words[i], freq[i]
            for pair in zip(w, w[1:]):
                pair_count[pair] -= f
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and (w[j], w[j + 1]) == best:
                    out.append(merged)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for pair in zip(out, out[1:]):
                pair_count[pair] += f
                where[pair].add(i)
        del pair_count[best]
    check_reserved_unreachable(tokens)
    return tokens, scores


def check_reserved_unreachable(tokens):
    """Fails if some reserved token (<unk>, <s>, </s>, <0xXX>) is the concatenation of two tokens: run.c's encode
    would then merge text such as "<s>" into BOS."""
    known = set(tokens)
    for t in tokens[: BYTE_OFFSET + 256]:
        for cut in range(1, len(t)):
            if t[:cut] in known and t[cut:] in known:
                raise SystemExit(f"reserved token {t!r} is reachable by merging {t[:cut]!r} + {t[cut:]!r}")


def write_tokenizer_bin(path, tokens, scores):
    """llama2.c's tokenizer.bin: u32 max_token_length, then per token f32 score, i32 length, bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack("<I", max(len(t) for t in tokens)))
        for t, s in zip(tokens, scores):
            f.write(struct.pack("<fi", s, len(t)))
            f.write(t)


def read_tokenizer_bin(path, vocab_size):
    with open(path, "rb") as f:
        data = f.read()
    (max_len,) = struct.unpack_from("<I", data, 0)
    at, tokens, scores = 4, [], []
    for _ in range(vocab_size):
        s, n = struct.unpack_from("<fi", data, at)
        assert 0 <= n <= max_len
        tokens.append(data[at + 8 : at + 8 + n])
        scores.append(s)
        at += 8 + n
    assert at == len(data), "trailing bytes after the last token"
    return tokens, scores


class Tokenizer:
    def __init__(self, tokens, scores):
        self.tokens = tokens
        # Scores as run.c sees them (f32). All merge scores are small integers, exact in f32.
        self.scores = [struct.unpack("<f", struct.pack("<f", s))[0] for s in scores]
        self.ids = {}
        for i, t in enumerate(tokens):
            self.ids.setdefault(t, i)  # run.c's bsearch finds some duplicate; there are none here

    def encode(self, text, bos, eos):
        """run.c's encode: BOS, the dummy " " prefix, each code point as its token or its bytes + 3, then merge the
        adjacent pair (BOS included) whose concatenation is the highest-scoring token (leftmost on ties, only
        above -1e10) until none is left; EOS last.

        run.c rescans every pair after each merge (quadratic); this keeps the pairs in a heap keyed by (-score,
        position) over a linked list, which picks the same pair every time: the valid entry with the highest score
        and, among equal scores, the smallest original position, i.e. the leftmost pair.
        """
        ids = [BOS] if bos else []
        if text:
            ids.append(self.ids[b" "])
        for ch in text:
            b = ch.encode("utf-8")
            if b in self.ids:
                ids.append(self.ids[b])
            else:
                ids.extend(x + BYTE_OFFSET for x in b)
        ids = self._merge(ids)
        if eos:
            ids.append(EOS)
        return ids

    def _merge(self, ids):
        n = len(ids)
        tok = list(ids)
        nxt = list(range(1, n + 1))  # n = end
        prv = list(range(-1, n - 1))
        ver = [0] * n
        alive = [True] * n
        heap = []

        def push(i):
            j = nxt[i]
            if i < 0 or j >= n:
                return
            m = self.ids.get(self.tokens[tok[i]] + self.tokens[tok[j]])
            if m is not None and self.scores[m] > -1e10:
                heapq.heappush(heap, (-self.scores[m], i, ver[i], j, ver[j], m))

        for i in range(n - 1):
            push(i)
        while heap:
            _, i, vi, j, vj, m = heapq.heappop(heap)
            if not (alive[i] and alive[j] and nxt[i] == j and ver[i] == vi and ver[j] == vj):
                continue  # stale: one of the two tokens changed since this pair was pushed
            tok[i] = m
            ver[i] += 1
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            push(prv[i])
            push(i)
        return [tok[i] for i in range(n) if alive[i]]

    def decode(self, prev, token):
        """run.c's decode: strip the leading space after BOS; <0xXX> is that raw byte."""
        piece = self.tokens[token]
        if prev == BOS and piece.startswith(b" "):
            piece = piece[1:]
        m = re.fullmatch(rb"<0x([0-9A-Fa-f]{2})>", piece)
        return bytes([int(m.group(1), 16)]) if m else piece

    def decode_text(self, ids):
        """The text of a token sequence (BOS and EOS left out), each token decoded after its predecessor."""
        out, prev = b"", BOS
        for t in ids:
            if t not in (BOS, EOS):
                out += self.decode(prev, t)
            prev = t
        return out


if __name__ == "__main__":
    tok = Tokenizer(*read_tokenizer_bin(sys.argv[1], 512))
    for s in sys.argv[2:]:
        ids = tok.encode(s, bos=True, eos=False)
        print(ids, [tok.tokens[i].decode("utf-8", "replace") for i in ids])

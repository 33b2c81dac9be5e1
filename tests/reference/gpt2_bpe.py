#!/usr/bin/python3
"""Cross-check of d2v's tokenizer against GPT-2's own algorithm.

An independent Python implementation of GPT-2's byte-level BPE encoder (the
pre-tokenization regex run by the `regex` module, the byte-to-unicode table,
merges applied by rank the way GPT-2's encoder.py does) reads the vocab.json
and merges.txt that `d2v tokenizer train` wrote and must produce the same ids
as `d2v tokenizer encode`, on text normalized with Python's unicodedata.

    gpt2_bpe.py D2V WORKDIR            (as a meson test; exit 77 = skipped)
    gpt2_bpe.py D2V WORKDIR TEXTFILE   (check an existing text file too)

Needs Debian's python3-regex (the standard `re` has no \\p{L}); without it the
test is skipped.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import unicodedata

try:
    import regex
except ImportError:
    print("python3-regex is not installed: skipped")
    sys.exit(77)

GPT2_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def byte_alphabet():
    """GPT-2's table: printable Latin-1 bytes keep their character, the rest
    move to 256, 257, ... in byte order."""
    kept = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table, moved = {}, 0
    for b in range(256):
        if b in kept:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + moved)
            moved += 1
    return table


class Gpt2Encoder:
    def __init__(self, directory):
        with open(os.path.join(directory, "vocab.json"), encoding="utf-8") as f:
            self.vocab = json.load(f)
        with open(os.path.join(directory, "merges.txt"), encoding="utf-8") as f:
            lines = f.read().split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        merges = [tuple(line.split(" ")) for line in lines if line]
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.alphabet = byte_alphabet()
        self.cache = {}

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        parts = list(word)
        while len(parts) > 1:
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self.cache[word] = parts
        return parts

    def encode(self, text):
        ids = []
        for piece in GPT2_PATTERN.findall(text):
            spelled = "".join(self.alphabet[b] for b in piece.encode("utf-8"))
            ids.extend(self.vocab[token] for token in self.bpe(spelled))
        return ids


def random_text(rng, n_lines):
    """Prose-like lines over many scripts, code points assigned in Python's
    Unicode version only (utf8proc may know newer ones)."""
    words = ("the of and to in is it's we're don't you'll I'd they've 1999 3.14 "
             "Straße naïve café Ærø Ελλάδα Россия 東京 日本語 한국어 العربية עברית हिन्दी ไทย "
             "😀 👍🏽 👨‍👩‍👧 🇫🇷 ﬁne ＡＢＣ ½ x² Ⅻ e\u0301 \u00a0 -- ... ?! (a) [b] {c}").split(" ")
    ranges = [(0x20, 0x7E), (0xA0, 0x17F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF),
              (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x3040, 0x30FF), (0x4E00, 0x4FFF),
              (0xAC00, 0xAD00), (0xFF01, 0xFF5E), (0x1F300, 0x1F64F), (0x2000, 0x206F)]
    lines = []
    for _ in range(n_lines):
        out = []
        for _ in range(rng.randint(1, 25)):
            if rng.random() < 0.8:
                out.append(rng.choice(words))
            else:
                lo, hi = rng.choice(ranges)
                chars = [chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6))]
                out.append("".join(c for c in chars if unicodedata.category(c) not in ("Cn", "Cs")))
            out.append(rng.choice([" ", " ", " ", "  ", "\t", ", "]))
        lines.append("".join(out).rstrip(" ") + rng.choice(["\n", "\n", "\n\n", " \n", "\r\n"]))
    return "".join(lines)


def run(args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def check_file(d2v, tok_dir, path, normalization):
    with open(path, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8", "replace")
    if normalization != "none":
        text = unicodedata.normalize(normalization.upper(), text)
    want = Gpt2Encoder(tok_dir).encode(text)
    out = run([d2v, "tokenizer", "encode", "--tokenizer", tok_dir, path]).stdout.decode()
    got = [int(x) for x in out.split()]
    if got != want:
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        print(f"FAIL {path} ({normalization}): d2v {len(got)} ids, GPT-2 reference {len(want)}; first difference at "
              f"id {first}: d2v {got[first:first + 8]} reference {want[first:first + 8]}")
        return False
    back = run([d2v, "tokenizer", "decode", "--tokenizer", tok_dir], input=out.encode()).stdout
    if back != text.encode("utf-8"):
        print(f"FAIL {path} ({normalization}): decode(encode(x)) is not the normalized text")
        return False
    print(f"ok {path} ({normalization}): {len(got)} ids agree with the GPT-2 reference, decode round-trips")
    return True


def main():
    d2v, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w", encoding="utf-8", newline="") as f:
        f.write(random_text(random.Random(1234), 6000))
    ok = True
    for normalization in ("nfkc", "nfc", "none"):
        tok_dir = os.path.join(work, "tok_" + normalization)
        run([d2v, "tokenizer", "train", "--vocab-size", "3000", "--min-frequency", "1", "--normalization",
             normalization, "--out", tok_dir, corpus])
        ok &= check_file(d2v, tok_dir, corpus, normalization)
        for extra in sys.argv[3:]:
            ok &= check_file(d2v, tok_dir, extra, normalization)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

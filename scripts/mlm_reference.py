#!/usr/bin/python3
"""A reference point for issue 5's text probe: BERT-style masked language
modelling (not data2vec) on text_micro's architecture, in PyTorch, for a
budget of training time (the probes are not counted), with the same k-NN
probe as `d2v eval knn` at the start and at 2/15, 1/3, 2/3 and all of it.

Why it exists: text_micro pretrained with data2vec scores under its random
initialisation on the WordNet topic probe (README, "Results: text"). This
asks whether any standard masked-prediction pretraining of a model this size
does better in the same time, which separates "d2v's data2vec is wrong"
from "the probe does not reward this model size and budget".

Model: post-LN, D=128, 4 layers, 4 heads, FFN 512, learned positions (64),
embedding layer norm, exact GELU, no dropout, BERT init (std 0.02), one
sentence per row as <s> tokens </s>. MLM: 15% of content tokens, 80% <mask>
/ 10% random / 10% kept, cross-entropy through a dense-GELU-LN transform and
the tied embedding. AdamW (0.9, 0.98), eps 1e-6, weight decay 0.01 on
matrices, clip 5, 10% warm-up then cosine, over the time budget.
Probe: mean of the last block over content tokens, L2-normalised, cosine
k-NN with k=20 and votes weighted exp(sim/0.07); also with features centred
on the training mean first.

usage: /usr/bin/python3 scripts/mlm_reference.py --d2v build/d2v \\
         --tokenizer data/text/tokenizer-4096 --pretrain data/glosses/glosses.txt \\
         --train data/topic/train.tsv --test data/topic/test.tsv \\
         [--minutes 15] [--lr 5e-4] [--threads 1] [--seed 0]
Prints one JSON line per probe point.
"""
import argparse
import json
import math
import subprocess
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

D, HEADS, FFN, LAYERS, SEQ = 128, 4, 512, 4, 64


def encode_lines(d2v, tokenizer, lines):
    """Token ids of each line with d2v's own tokenizer, without the line
    break's token that ends each output line."""
    out = subprocess.run([d2v, "tokenizer", "encode", "--tokenizer", tokenizer, "-"],
                         input="\n" + "\n".join(lines) + "\n", capture_output=True, text=True,
                         check=True).stdout
    rows = [[int(t) for t in line.split()] for line in out.splitlines()]
    if len(rows) != len(lines) + 1 or len(rows[0]) != 1:
        raise SystemExit(f"mlm_reference: {len(lines)} lines in, {len(rows) - 1} token lines out")
    newline = rows[0][0]  # the empty first line is its break alone
    return [r[:-1] if r and r[-1] == newline else r for r in rows[1:]]


def special_ids(tokenizer):
    vocab = json.load(open(f"{tokenizer}/vocab.json", encoding="utf-8"))
    return {name: vocab[name] for name in ("<s>", "<pad>", "</s>", "<mask>")}, len(vocab)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc1, self.fc2 = nn.Linear(D, FFN), nn.Linear(FFN, D)
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)

    def forward(self, x, key_bias):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2) / math.sqrt(D // HEADS) + key_bias).softmax(-1)
        x = self.ln1(x + self.proj((att @ v).transpose(1, 2).reshape(B, N, D)))
        return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))


class Encoder(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, D), nn.Embedding(SEQ, D)
        self.embed_norm = nn.LayerNorm(D)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.head_dense, self.head_norm = nn.Linear(D, D), nn.LayerNorm(D)
        self.head_bias = nn.Parameter(torch.zeros(vocab))
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0, 0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, ids, pad):
        x = self.embed_norm(self.tokens(ids) + self.positions(torch.arange(ids.shape[1]))[None])
        key_bias = torch.zeros(ids.shape[0], 1, 1, ids.shape[1]).masked_fill((ids == pad)[:, None, None, :],
                                                                              float("-inf"))
        for block in self.blocks:
            x = block(x, key_bias)
        return x

    def mlm_logits(self, h):
        return F.linear(self.head_norm(F.gelu(self.head_dense(h))), self.tokens.weight, self.head_bias)


def batch(rows, sp):
    """<s> ids </s>, truncated to SEQ and padded to the longest row."""
    rows = [[sp["<s>"]] + r[:SEQ - 2] + [sp["</s>"]] for r in rows]
    ids = torch.full((len(rows), max(map(len, rows))), sp["<pad>"], dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
    return ids


def content(ids, sp):
    return (ids != sp["<pad>"]) & (ids != sp["<s>"]) & (ids != sp["</s>"])


def features(model, rows, sp):
    out = []
    with torch.no_grad():
        for i in range(0, len(rows), 256):
            ids = batch(rows[i:i + 256], sp)
            keep = content(ids, sp).float()[..., None]
            out.append((model(ids, sp["<pad>"]) * keep).sum(1) / keep.sum(1).clamp(min=1))
    return torch.cat(out)


def knn(train_f, train_y, test_f, test_y, classes, k=20, temperature=0.07):
    sim = F.normalize(test_f, dim=1) @ F.normalize(train_f, dim=1).T
    top, idx = sim.topk(k, dim=1)
    votes = torch.zeros(len(test_f), classes).scatter_add_(1, train_y[idx], (top / temperature).exp())
    return (votes.argmax(1) == test_y).float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--d2v", "--tokenizer", "--pretrain", "--train", "--test"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    sp, vocab = special_ids(a.tokenizer)

    def labeled(path):
        labels, texts = [], []
        for number, line in enumerate(open(path, encoding="utf-8"), 1):
            if not line.strip():
                continue
            label, tab, text = line.rstrip("\n").partition("\t")
            if not tab or not label:
                raise SystemExit(f"mlm_reference: {path}:{number}: expected label<TAB>text")
            labels.append(label)
            texts.append(text)
        return labels, encode_lines(a.d2v, a.tokenizer, texts)
    train_lab, train_rows = labeled(a.train)
    test_lab, test_rows = labeled(a.test)
    classes = sorted(set(train_lab))
    train_y = torch.tensor([classes.index(c) for c in train_lab])
    test_y = torch.tensor([classes.index(c) for c in test_lab])
    text = [line.rstrip("\n") for line in open(a.pretrain, encoding="utf-8") if line.strip()]
    corpus = encode_lines(a.d2v, a.tokenizer, text)

    model = Encoder(vocab)

    def probe(step, seconds, loss):
        model.eval()
        tr, te = features(model, train_rows, sp), features(model, test_rows, sp)
        mean = tr.mean(0)
        print(json.dumps({"minutes": round(seconds / 60, 2), "step": step, "mlm_loss": loss,
                          "knn": round(knn(tr, train_y, te, test_y, len(classes)), 4),
                          "knn_centred": round(knn(tr - mean, train_y, te - mean, test_y, len(classes)), 4)}),
              flush=True)
        model.train()

    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.01}, {"params": vectors, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.98), eps=1e-6)
    budget = a.minutes * 60
    probe_at = [budget * f for f in (2 / 15, 1 / 3, 2 / 3, 1.0)]
    probe(0, 0.0, None)
    order, cursor, step, trained, losses = rng.permutation(len(corpus)), 0, 0, 0.0, []
    while probe_at:
        start = time.time()
        if cursor + 32 > len(corpus):
            order, cursor = rng.permutation(len(corpus)), 0
        ids = batch([corpus[j] for j in order[cursor:cursor + 32]], sp)
        cursor += 32
        chosen = (torch.rand(ids.shape) < 0.15) & content(ids, sp)
        split = torch.rand(ids.shape)
        inputs = ids.clone()
        inputs[chosen & (split < 0.8)] = sp["<mask>"]
        swap = chosen & (split >= 0.8) & (split < 0.9)
        inputs[swap] = torch.randint(0, vocab, (int(swap.sum()),))
        progress = trained / budget
        for g in opt.param_groups:
            g["lr"] = a.lr * (progress / 0.1 if progress < 0.1 else
                              0.5 * (1 + math.cos(math.pi * min(1.0, (progress - 0.1) / 0.9))))
        loss = F.cross_entropy(model.mlm_logits(model(inputs, sp["<pad>"])[chosen]), ids[chosen])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        trained += time.time() - start
        if trained >= probe_at[0]:
            probe_at.pop(0)
            probe(step, trained, round(float(np.mean(losses[-200:])), 4))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""The PyTorch peer of `d2v bench` (issue 6): the same data2vec training step
for the same INI config, written independently in eager fp32 PyTorch, timed
the same way, printing the same machine-readable last line.

    /usr/bin/python3 bench/peer.py CONFIG [--steps N] [--warmup W] [--threads T] [--set section.key=value]...

One step: front-end forward (student input masked, teacher input not),
teacher forward (EMA copy of the Transformer, eval mode, no grad) with top-K
target averaging and the configured norms, student forward, regression head
at masked positions, Smooth L1 / L2 loss, backward, gradient clipping, AdamW,
EMA. Inputs are synthetic (random pixels, waveforms, token ids), full length,
no padding. Masks are drawn with the configured share but simpler samplers
than d2v's (uniform positions for images, random span starts for speech,
uniform tokens for text): mask generation is a negligible part of the step.
The FLOP count is the same analytic formula d2v bench uses.
"""
import argparse
import configparser
import copy
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def load_config(path, sets):
    cp = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    if not cp.read(path):
        sys.exit(f"peer.py: cannot read config {path}")
    for s in sets:
        key, _, value = s.partition("=")
        section, _, name = key.partition(".")
        if not cp.has_section(section):
            cp.add_section(section)
        cp.set(section, name, value)
    return cp


def get(cp, section, key, default, kind=float):
    return kind(cp.get(section, key, fallback=str(default)))


# ---- the Transformer --------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, D, H, F_, pre_ln, eps, dropout, attn_dropout, act_dropout):
        super().__init__()
        self.H, self.pre_ln = H, pre_ln
        self.qkv = nn.Linear(D, 3 * D)
        self.proj = nn.Linear(D, D)
        self.ln1 = nn.LayerNorm(D, eps=eps)
        self.fc1 = nn.Linear(D, F_)
        self.fc2 = nn.Linear(F_, D)
        self.ln2 = nn.LayerNorm(D, eps=eps)
        self.dropout, self.attn_dropout, self.act_dropout = dropout, attn_dropout, act_dropout

    def attention(self, x):
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.H, D // self.H).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (D // self.H) ** -0.5
        probs = F.dropout(scores.softmax(dim=-1), self.attn_dropout, self.training)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(B, N, D)
        return F.dropout(self.proj(out), self.dropout, self.training)

    def ffn(self, x):
        h = F.dropout(F.gelu(self.fc1(x)), self.act_dropout, self.training)
        return F.dropout(self.fc2(h), self.dropout, self.training)

    def forward(self, x):
        """Returns the block's output and the FFN output before the last residual."""
        if self.pre_ln:
            h = x + self.attention(self.ln1(x))
            f = self.ffn(self.ln2(h))
            return h + f, f
        h = self.ln1(x + self.attention(x))
        f = self.ffn(h)
        return self.ln2(h + f), f


class Encoder(nn.Module):
    def __init__(self, cp):
        super().__init__()
        D, L = get(cp, "model", "dim", 768, int), get(cp, "model", "layers", 12, int)
        self.pre_ln = cp.get("model", "layout", fallback="post_ln") == "pre_ln"
        eps = get(cp, "model", "layer_norm_eps", 1e-5)
        self.dropout = get(cp, "model", "dropout", 0.1)
        args = (D, get(cp, "model", "heads", 12, int), get(cp, "model", "ffn_dim", 3072, int), self.pre_ln, eps,
                self.dropout, get(cp, "model", "attention_dropout", 0.1), get(cp, "model", "activation_dropout", 0.0))
        self.blocks = nn.ModuleList(Block(*args) for _ in range(L))
        self.norm = nn.LayerNorm(D, eps=eps)  # LN_in (post-LN) or LN_out (pre-LN)

    def forward(self, x, keep_taps=0, tap_block_end=False):
        if not self.pre_ln:
            x = F.dropout(self.norm(x), self.dropout, self.training)
        taps = []
        for i, block in enumerate(self.blocks):
            x, f = block(x)
            if i >= len(self.blocks) - keep_taps:
                taps.append(x if tap_block_end else f)
        if self.pre_ln:
            x = self.norm(x)
        return x, taps


# ---- front-ends ---------------------------------------------------------------------


class ImageFrontend(nn.Module):
    def __init__(self, cp, D):
        super().__init__()
        self.size = get(cp, "frontend", "image_size", 224, int)
        p = get(cp, "frontend", "patch_size", 16, int)
        self.G = (self.size // p) ** 2
        self.patch = nn.Conv2d(3, D, p, stride=p)
        self.cls = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, self.G + 1, D) * 0.02)
        self.mask_emb = nn.Parameter(torch.randn(D) * 0.02)
        count = get(cp, "mask", "count", 0, int)
        self.n_mask = count if count > 0 else int(round(get(cp, "mask", "ratio", 0.6) * self.G))

    def synthetic(self, B):
        return torch.randn(B, 3, self.size, self.size)

    def forward(self, images):
        B = images.shape[0]
        x = self.patch(images).flatten(2).transpose(1, 2)  # (B,G,D)
        mask = torch.zeros(B, self.G, dtype=torch.bool)
        mask.scatter_(1, torch.rand(B, self.G).argsort(1)[:, : self.n_mask], True)
        masked = torch.where(mask.unsqueeze(-1), self.mask_emb.expand_as(x), x)
        cls = self.cls.expand(B, -1, -1)
        student = torch.cat([cls, masked], 1) + self.pos
        teacher = torch.cat([cls, x], 1) + self.pos
        loss_mask = torch.cat([torch.zeros(B, 1, dtype=torch.bool), mask], 1)
        return student, teacher.detach(), loss_mask


class SpeechFrontend(nn.Module):
    def __init__(self, cp, D):
        super().__init__()
        spec = cp.get("frontend", "conv_spec", fallback="512x10x5,512x3x2*4,512x2x2*2")
        layers = []
        for part in spec.split(","):
            shape, _, times = part.partition("*")
            c, k, s = (int(v) for v in shape.split("x"))
            layers += [(c, k, s)] * (int(times) if times else 1)
        self.convs, self.conv_norms = nn.ModuleList(), nn.ModuleList()
        c_in = 1
        for c, k, s in layers:
            self.convs.append(nn.Conv1d(c_in, c, k, stride=s, bias=False))
            self.conv_norms.append(nn.LayerNorm(c))
            c_in = c
        self.feature_norm = nn.LayerNorm(c_in)
        self.proj = nn.Linear(c_in, D)
        self.mask_emb = nn.Parameter(torch.rand(D))
        K, G = get(cp, "frontend", "pos_conv_kernel", 19, int), get(cp, "frontend", "pos_conv_groups", 16, int)
        self.pos_convs = nn.ModuleList(
            nn.Conv1d(D, D, K, padding=K // 2, groups=G) for _ in range(get(cp, "frontend", "pos_conv_depth", 5, int)))
        self.samples = get(cp, "data", "max_samples", 320000, int)
        self.prob, self.span = get(cp, "mask", "prob", 0.65), get(cp, "mask", "span", 10, int)

    def synthetic(self, B):
        return torch.randn(B, self.samples)

    def positions(self, x):
        h = x.transpose(1, 2)
        for conv in self.pos_convs:
            h = F.gelu(F.layer_norm(conv(h).transpose(1, 2), (h.shape[1],)).transpose(1, 2))
        return x + h.transpose(1, 2)

    def forward(self, wave):
        h = wave.unsqueeze(1)
        for conv, norm in zip(self.convs, self.conv_norms):
            h = F.gelu(norm(conv(h).transpose(1, 2)).transpose(1, 2))
        x = self.proj(self.feature_norm(h.transpose(1, 2)))  # (B,N,D)
        B, N, _ = x.shape
        # Span masking: as many span starts as fairseq draws (prob * N / span),
        # each covering `span` frames; overlaps allowed.
        n_spans = max(1, int(self.prob * N / self.span + 0.5))
        starts = torch.randint(0, max(1, N - self.span), (B, n_spans))
        idx = (starts.unsqueeze(-1) + torch.arange(self.span)).reshape(B, -1).clamp_(max=N - 1)
        mask = torch.zeros(B, N, dtype=torch.bool)
        mask.scatter_(1, idx, True)
        masked = torch.where(mask.unsqueeze(-1), self.mask_emb.expand_as(x), x)
        return self.positions(masked), self.positions(x).detach(), mask


class TextFrontend(nn.Module):
    def __init__(self, cp, D, pre_ln, eps):
        super().__init__()
        self.V, self.S = get(cp, "data", "vocab_size", 50265, int), get(cp, "data", "seq_len", 512, int)
        self.tokens = nn.Embedding(self.V, D)
        self.pos = nn.Embedding(self.S, D)
        self.norm = nn.LayerNorm(D, eps=eps) if pre_ln else None  # post-LN: the encoder's LN_in
        self.prob = get(cp, "mask", "prob", 0.35)
        self.mask_id = self.V - 1

    def synthetic(self, B):
        ids = torch.randint(4, self.V - 1, (B, self.S))
        ids[:, 0] = 0  # <s>
        return ids

    def embed(self, ids):
        x = self.tokens(ids) + self.pos.weight[: ids.shape[1]]
        return self.norm(x) if self.norm is not None else x

    def forward(self, ids):
        mask = torch.rand(ids.shape) < self.prob
        mask[:, 0] = False
        student_ids = torch.where(mask, torch.full_like(ids, self.mask_id), ids)
        with torch.no_grad():
            teacher = self.embed(ids)
        return self.embed(student_ids), teacher, mask


# ---- the data2vec step ----------------------------------------------------------------


def target_norm(kind, x, eps):
    if kind == "instance":  # over time, per channel
        return F.instance_norm(x.transpose(1, 2), eps=eps).transpose(1, 2)
    if kind == "layer":  # over channels, no affine
        return F.layer_norm(x, x.shape[-1:], eps=eps)
    return x


class Data2vec(nn.Module):
    def __init__(self, cp):
        super().__init__()
        self.modality = cp.get("model", "modality")
        D = get(cp, "model", "dim", 768, int)
        self.D = D
        self.encoder = Encoder(cp)
        eps = get(cp, "model", "layer_norm_eps", 1e-5)
        self.eps = eps
        if self.modality == "image":
            self.frontend = ImageFrontend(cp, D)
        elif self.modality == "speech":
            self.frontend = SpeechFrontend(cp, D)
        elif self.modality == "text":
            self.frontend = TextFrontend(cp, D, self.encoder.pre_ln, eps)
        else:
            sys.exit(f"peer.py: unknown model.modality {self.modality}")
        self.mlp_head = cp.get("loss", "head", fallback="linear") == "mlp"
        self.head = (nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D)) if self.mlp_head
                     else nn.Linear(D, D))
        self.top_k = get(cp, "target", "top_k", 8, int)
        self.layer_norm = cp.get("target", "layer_norm", fallback="none")
        self.final_norm = cp.get("target", "final_norm", fallback="none")
        self.tap_block_end = cp.get("target", "layer_output", fallback="ffn") == "block"
        self.beta = get(cp, "loss", "beta", 0.0)
        scale = get(cp, "loss", "scale", 0.0)
        self.scale = scale if scale > 0 else 1 / math.sqrt(D)
        # The teacher: an EMA copy of the Transformer only (front-end shared).
        self.teacher = copy.deepcopy(self.encoder)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()

    def step(self, inputs, times):
        t0 = time.perf_counter()
        x_student, x_teacher, mask = self.frontend(inputs)
        t1 = time.perf_counter()
        with torch.no_grad():
            _, taps = self.teacher(x_teacher, keep_taps=self.top_k, tap_block_end=self.tap_block_end)
            y = sum(target_norm(self.layer_norm, a, self.eps) for a in taps) / len(taps)
            y = target_norm(self.final_norm, y, self.eps)[mask]
        t2 = time.perf_counter()
        out, _ = self.encoder(x_student)
        pred = self.head(out[mask])
        if self.beta == 0:
            loss = F.mse_loss(pred, y, reduction="none")
        else:
            loss = F.smooth_l1_loss(pred, y, reduction="none", beta=self.beta)
        loss = loss.sum(-1).mean() * self.scale
        loss.backward()
        t3 = time.perf_counter()
        times["frontend+mask"] += t1 - t0
        times["teacher"] += t2 - t1
        times["student fwd+bwd (incl. front-end bwd)"] += t3 - t2
        return loss.item(), int(mask.sum())


# ---- FLOPs: the same analytic count as d2v bench -------------------------------------


def step_flops(model, B, N, P):
    enc = model.encoder
    D, Fd, L = model.D, enc.blocks[0].fc1.out_features, len(enc.blocks)
    M = B * N
    block = 2 * M * D * 3 * D + 2 * M * D * D + 2 * 2 * M * D * Fd + 2 * 2 * B * N * N * D
    hidden = 2 * D if model.mlp_head else D
    head = 2 * P * D * hidden + (2 * P * hidden * D if model.mlp_head else 0)
    total = L * block * 4 + 3 * head
    fe = model.frontend
    if isinstance(fe, ImageFrontend):
        k = fe.patch.weight[0].numel()
        total += 2 * (2 * B * fe.G * k * D)
    elif isinstance(fe, SpeechFrontend):
        t = fe.samples
        for i, conv in enumerate(fe.convs):
            t = (t - conv.kernel_size[0]) // conv.stride[0] + 1
            c = 2 * B * t * conv.out_channels * conv.in_channels * conv.kernel_size[0]
            total += c + (c if i == 0 else 2 * c)
        proj = 2 * M * fe.proj.in_features * D
        pos = sum(2 * M * D * (D // c.groups) * c.kernel_size[0] for c in fe.pos_convs)
        total += proj + 2 * pos + 2 * (proj + pos)
    return total


def sgemm_peak():
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b)) for _ in range(3))
    return 2 * 2048 ** 3 / best * 1e-9


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    cp = load_config(args.config, args.set)
    threads = args.threads or get(cp, "train", "threads", 0, int) or torch.get_num_threads()
    torch.set_num_threads(threads)
    seed = get(cp, "train", "seed", 1, int)
    torch.manual_seed(seed)
    B = get(cp, "train", "batch_size", 8, int)

    # The peak is measured before the steps and after them, the better kept
    # (as d2v bench does): one slow window of a shared machine would flatter
    # the MFU.
    peak_before = sgemm_peak()
    model = Data2vec(cp)
    student = [p for n, p in model.named_parameters() if not n.startswith("teacher.")]
    decay = [p for p in student if p.dim() >= 2]
    no_decay = [p for p in student if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": get(cp, "optim", "weight_decay", 0.01)},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=get(cp, "optim", "lr", 5e-4), betas=(get(cp, "optim", "beta1", 0.9), get(cp, "optim", "beta2", 0.98)),
        eps=get(cp, "optim", "eps", 1e-6))
    clip = get(cp, "optim", "clip_norm", 0.0)
    tau0, tau_end = get(cp, "ema", "decay", 0.999), get(cp, "ema", "end_decay", 0.9999)
    anneal = get(cp, "ema", "anneal_steps", 30000, int)
    teacher_params = list(model.teacher.parameters())
    encoder_params = list(model.encoder.parameters())
    inputs = model.frontend.synthetic(B)

    step_times, positions, masked = [], 0, []
    phases = {k: 0.0 for k in ("frontend+mask", "teacher", "student fwd+bwd (incl. front-end bwd)", "optimizer",
                                "EMA")}
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            phases = {k: 0.0 for k in phases}
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss, n_masked = model.step(inputs, phases)
        t1 = time.perf_counter()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(student, clip)
        opt.step()
        t2 = time.perf_counter()
        tau = tau_end if step + 1 >= anneal else tau0 + (tau_end - tau0) * (step + 1) / anneal
        with torch.no_grad():
            torch._foreach_mul_(teacher_params, tau)
            torch._foreach_add_(teacher_params, encoder_params, alpha=1 - tau)
        t3 = time.perf_counter()
        phases["optimizer"] += t2 - t1
        phases["EMA"] += t3 - t2
        if not math.isfinite(loss):
            sys.exit(f"peer.py: step {step + 1}: the loss is {loss}")
        if step >= args.warmup:
            step_times.append(t3 - t0)
            masked.append(n_masked)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    peak = max(peak_before, sgemm_peak())

    if model.modality == "image":
        N = model.frontend.G + 1
    elif model.modality == "speech":
        with torch.no_grad():
            N = model.frontend(inputs[:1])[0].shape[1]
    else:
        N = model.frontend.S
    med = statistics.median(step_times)
    flops = step_flops(model, B, N, round(sum(masked) / len(masked)))
    gflops = flops / med * 1e-9
    print(f"peer {args.config}: PyTorch {torch.__version__}, {model.modality}, B={B} N={N}, {threads} threads, "
          f"{args.steps} steps after {args.warmup} warm-up")
    print(f"step {med * 1e3:.1f} ms median (min {min(step_times) * 1e3:.1f}, max {max(step_times) * 1e3:.1f})")
    for k, v in phases.items():
        print(f"  {k:40s} {v / args.steps * 1e3:9.1f} ms (mean)")
    print(f"flops/step {flops * 1e-9:.2f} GFLOP, {gflops:.1f} GFLOP/s; sgemm peak {peak:.1f} GFLOP/s; "
          f"peak RSS {rss_mb:.1f} MB")
    print(f"d2v step_ms={med * 1e3:.2f} min_ms={min(step_times) * 1e3:.2f} max_ms={max(step_times) * 1e3:.2f} "
          f"positions_per_s={B * N / med:.1f} gflops={gflops:.2f} mfu={gflops / peak:.4f} rss_mb={rss_mb:.1f}")


if __name__ == "__main__":
    main()

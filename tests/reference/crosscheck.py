#!/usr/bin/python3
"""Independent PyTorch reference for data2vec training steps (cross-check of d2v).

Usage:
    /usr/bin/python3 tests/reference/crosscheck.py [-v] CASE.safetensors [...]

Each case file holds the inputs of S training steps (front-end outputs, masks,
padding, learning rates, EMA decays), the initial student and teacher weights,
and what the C implementation computed from them. This script recomputes every
output in float64 from the inputs alone and compares, tensor by tensor:

    err = max|c - ref| / max(max|ref|, 1e-6)        must be < 1e-4

It prints one line per failing tensor (every tensor with -v), a summary line
per case, and finally exactly "N passed, M failed" (counted in tensors). The
exit status is 0 if everything passed, 1 otherwise, and 77 (the "skipped" code
of meson/automake) if PyTorch is not installed.

The semantics follow Baevski et al. (2022), "data2vec: A General Framework for
Self-supervised Learning in Speech, Vision and Language", and fairseq's
released recipes, as specified in DESIGN.md §1 and §3:

  * Model architecture: a standard Transformer (post-LN as in wav2vec 2.0 and
    RoBERTa, or pre-LN as in BEiT/ViT) run twice per step: as the *student* on
    the masked input and as the *teacher* on the unmasked input.
  * Masking: masked positions of the student input are replaced by a learned
    mask embedding.
  * Training targets: the teacher's targets are the average of the top-K blocks'
    outputs, each normalized first (instance or layer norm), optionally followed
    by a final norm.
  * Objective: a regression head on the student's masked positions, Smooth L1
    (or squared error) to the targets.
  * Teacher parameterization: after each AdamW update the teacher's Transformer
    weights follow the student by an exponential moving average.
"""

import json
import math
import struct
import sys

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # reported by main(); the rest of the module is not used
    torch = None

TOLERANCE = 1e-4
REF_FLOOR = 1e-6  # denominator floor of the relative error

# --------------------------------------------------------------------------
# safetensors I/O (json + numpy; no safetensors package needed)
# --------------------------------------------------------------------------

NUMPY_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
                "U8": np.dtype("u1"), "I64": np.dtype("<i8")}


def read_safetensors(path):
    """Return (metadata dict of strings, dict name -> numpy array).

    Layout: 8-byte little-endian header length, JSON header mapping each name
    to {dtype, shape, data_offsets}, then the raw little-endian data; offsets
    are relative to the first byte after the header.
    """
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    metadata = header.pop("__metadata__", {}) or {}
    data = memoryview(blob)[8 + header_len:]
    arrays = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = NUMPY_DTYPES[info["dtype"]]
        arrays[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(info["shape"])
    return metadata, arrays


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

CHOICES = {
    "layout": ("post_ln", "pre_ln"),
    "layer_norm": ("instance", "layer", "none"),
    "final_norm": ("none", "layer", "instance"),
    "layer_output": ("ffn", "block"),
    "head": ("linear", "mlp"),
}
INT_KEYS = ("dim", "layers", "heads", "ffn", "top_k", "batch", "positions", "steps")
FLOAT_KEYS = ("eps", "loss_beta", "loss_scale", "beta1", "beta2", "adam_eps",
              "weight_decay", "clip_norm")


class Config:
    """The case's hyper-parameters, parsed from the safetensors __metadata__."""

    def __init__(self, metadata):
        for key in INT_KEYS:
            setattr(self, key, int(self._get(metadata, key)))
        for key in FLOAT_KEYS:
            setattr(self, key, float(self._get(metadata, key)))
        for key, allowed in CHOICES.items():
            value = self._get(metadata, key)
            if value not in allowed:
                raise ValueError("metadata %s=%r is not one of %s" % (key, value, allowed))
            setattr(self, key, value)
        if self.dim % self.heads != 0:
            raise ValueError("dim %d is not divisible by heads %d" % (self.dim, self.heads))
        if not 1 <= self.top_k <= self.layers:
            raise ValueError("top_k %d is outside 1..layers (%d)" % (self.top_k, self.layers))

    @staticmethod
    def _get(metadata, key):
        if key not in metadata:
            raise ValueError("metadata key %r is missing" % key)
        return metadata[key]


# --------------------------------------------------------------------------
# Transformer encoder (shared by student and teacher)
# --------------------------------------------------------------------------

def linear(params, prefix, x):
    """PyTorch Linear: x @ W^T + b with W stored (out, in)."""
    return F.linear(x, params[prefix + ".weight"], params[prefix + ".bias"])


def layer_norm(params, prefix, x, eps):
    """LayerNorm over channels with the affine parameters <prefix>.weight/bias."""
    return F.layer_norm(x, (x.shape[-1],), params[prefix + ".weight"],
                        params[prefix + ".bias"], eps)


def gelu(x):
    """GELU, exact erf form: x * Phi(x)."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def self_attention(params, prefix, x, pad, heads):
    """Multi-head self-attention with key padding.

    qkv rows 0..D-1 are q, D..2D-1 k, 2D..3D-1 v; head h owns channels
    h*Dh..(h+1)*Dh-1 of each. Keys at padded positions get weight 0; padded
    query rows are computed like any other row.
    """
    B, N, D = x.shape
    Dh = D // heads
    q, k, v = linear(params, prefix + ".qkv", x).split(D, dim=-1)

    def by_head(t):  # (B, N, D) -> (B, H, N, Dh)
        return t.reshape(B, N, heads, Dh).transpose(1, 2)

    q, k, v = by_head(q), by_head(k), by_head(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)          # (B, H, Nq, Nk)
    scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    context = torch.softmax(scores, dim=-1) @ v               # (B, H, N, Dh)
    context = context.transpose(1, 2).reshape(B, N, D)
    return linear(params, prefix + ".proj", context)


def feed_forward(params, prefix, x):
    """fc2(gelu(fc1(x)))."""
    return linear(params, prefix + ".fc2", gelu(linear(params, prefix + ".fc1", x)))


def block_forward(params, l, h, pad, cfg):
    """One Transformer block. Returns (block output, tap).

    The tap is what the teacher's targets are built from: the FFN output before
    the block's last residual connection (the paper's choice, layer_output=ffn)
    or the block's end output (the released vision recipe, layer_output=block).
    """
    p = "blocks.%d" % l
    if cfg.layout == "post_ln":      # wav2vec 2.0 / RoBERTa
        r1 = h + self_attention(params, p + ".attn", h, pad, cfg.heads)
        h1 = layer_norm(params, p + ".ln1", r1, cfg.eps)
        f = feed_forward(params, p, h1)
        out = layer_norm(params, p + ".ln2", h1 + f, cfg.eps)
    else:                            # pre_ln: BEiT / ViT
        r1 = h + self_attention(params, p + ".attn",
                                layer_norm(params, p + ".ln1", h, cfg.eps), pad, cfg.heads)
        f = feed_forward(params, p, layer_norm(params, p + ".ln2", r1, cfg.eps))
        out = r1 + f
    return out, (f if cfg.layer_output == "ffn" else out)


def encoder_forward(params, x, pad, cfg):
    """The Transformer on front-end output x (B, N, D). Returns (output, taps).

    post_ln normalizes the input (norm.*) before the first block; pre_ln
    normalizes the last block's output instead.
    """
    h = layer_norm(params, "norm", x, cfg.eps) if cfg.layout == "post_ln" else x
    taps = []
    for l in range(cfg.layers):
        h, tap = block_forward(params, l, h, pad, cfg)
        taps.append(tap)
    if cfg.layout == "pre_ln":
        h = layer_norm(params, "norm", h, cfg.eps)
    return h, taps


# --------------------------------------------------------------------------
# Targets, head and loss
# --------------------------------------------------------------------------

def instance_norm(t, pad, eps):
    """Normalize each (sample, channel) over the non-padded time positions.

    Biased variance; padded positions are set to 0. This is the speech choice
    of the paper (instance norm over time, F.instance_norm on (B, D, N)).
    """
    valid = (~pad).unsqueeze(-1).to(t.dtype)                  # (B, N, 1)
    count = valid.sum(dim=1, keepdim=True)
    mean = (t * valid).sum(dim=1, keepdim=True) / count
    var = (((t - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
    return (t - mean) / torch.sqrt(var + eps) * valid


def target_norm(t, kind, pad, eps):
    """Per-layer / final target normalization: instance, layer (no affine) or none."""
    if kind == "instance":
        return instance_norm(t, pad, eps)
    if kind == "layer":
        return F.layer_norm(t, (t.shape[-1],), eps=eps)
    return t


def teacher_targets(teacher, x, pad, loss_rows, cfg):
    """Targets y = final_norm((1/K) * sum over the top K blocks of norm(tap)).

    The teacher sees the unmasked input and receives no gradient. Returns the
    targets at the loss rows, shape (P, D).
    """
    with torch.no_grad():
        _, taps = encoder_forward(teacher, x, pad, cfg)
        top = taps[cfg.layers - cfg.top_k:]
        y = sum(target_norm(t, cfg.layer_norm, pad, cfg.eps) for t in top) / cfg.top_k
        y = target_norm(y, cfg.final_norm, pad, cfg.eps)
    return y[loss_rows]


def student_predictions(student, x, mask, pad, loss_rows, cfg):
    """Student: masked positions take the learned mask embedding; encoder; head.

    head=linear is one Linear(D, D) (speech, vision); head=mlp is
    Linear(D, 2D) - GELU - Linear(2D, D) (text). Returns (P, D).
    """
    xs = torch.where(mask.unsqueeze(-1), student["mask_emb"], x)
    out, _ = encoder_forward(student, xs, pad, cfg)
    h = out[loss_rows]
    if cfg.head == "linear":
        return linear(student, "head.fc1", h)
    return linear(student, "head.fc2", gelu(linear(student, "head.fc1", h)))


def regression_loss(pred, y, cfg):
    """loss_scale * sum over rows and channels of l(pred - y) / P.

    l is the squared error for beta = 0 (no 1/2), else Smooth L1 with beta.
    """
    if cfg.loss_beta == 0.0:
        per_element = (pred - y) ** 2
    else:
        per_element = F.smooth_l1_loss(pred, y, reduction="none", beta=cfg.loss_beta)
    return cfg.loss_scale * per_element.sum() / pred.shape[0]


def channel_std(t):
    """Mean over channels of the per-channel std over rows (fairseq's *_var)."""
    return torch.sqrt(t.var(dim=0, unbiased=True) + 1e-6).mean()


# --------------------------------------------------------------------------
# Update: clipping, AdamW, EMA
# --------------------------------------------------------------------------

def decays(name, tensor):
    """Weight decay applies to the 2-D weight matrices of linears only."""
    return name.endswith(".weight") and tensor.dim() == 2


def clip_gradients(grads, clip_norm):
    """Scale all gradients by clip_norm / (g + 1e-6) if the total norm g exceeds clip_norm.
    Returns the gradients and g (the norm before clipping)."""
    total = torch.sqrt(sum((g ** 2).sum() for g in grads.values()))
    if clip_norm > 0 and total > clip_norm:
        scale = clip_norm / (total + 1e-6)
        grads = {name: g * scale for name, g in grads.items()}
    return grads, total


def make_optimizer(student, cfg):
    """torch.optim.AdamW with decoupled decay on weight matrices only."""
    decay = [t for n, t in student.items() if decays(n, t)]
    no_decay = [t for n, t in student.items() if not decays(n, t)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=0.0, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)


def ema_update(teacher, student, tau):
    """Teacher parameterization: theta_teacher <- tau * theta_teacher + (1 - tau) * theta_student."""
    with torch.no_grad():
        for name, t in teacher.items():
            t.copy_(tau * t + (1.0 - tau) * student[name])


# --------------------------------------------------------------------------
# The S training steps of one case
# --------------------------------------------------------------------------

def as_torch(array, dtype):
    return torch.from_numpy(np.array(array, dtype=np.float64)).to(dtype)


def load_weights(arrays, prefix, dtype, trainable):
    weights = {}
    for name, array in arrays.items():
        if name.startswith(prefix):
            t = as_torch(array, dtype)
            weights[name[len(prefix):]] = t.requires_grad_(trainable)
    return weights


def run_reference(cfg, arrays, dtype=None):
    """Recompute every output of a case from its inputs and initial weights.

    Returns a dict with the same names the C side stores: c.targets, c.pred,
    c.loss, c.target_var, c.pred_var, grad.*, final.*, final_teacher.*.
    """
    dtype = dtype or torch.float64
    student = load_weights(arrays, "init.", dtype, trainable=True)
    teacher = load_weights(arrays, "init_teacher.", dtype, trainable=False)
    if not student or not teacher:
        raise ValueError("no init.* or init_teacher.* tensors")
    pad = torch.from_numpy(np.array(arrays["pad"]) != 0)
    lr = np.array(arrays["lr"], dtype=np.float64)
    tau = np.array(arrays["tau"], dtype=np.float64)
    optimizer = make_optimizer(student, cfg)
    names = list(student)
    out = {"c.loss": [], "c.target_var": [], "c.pred_var": [], "c.grad_norm": []}

    for s in range(cfg.steps):
        x = as_torch(arrays["x.%d" % s], dtype)
        mask = torch.from_numpy(np.array(arrays["mask.%d" % s]) != 0)
        loss_rows = mask & ~pad
        if not loss_rows.any():
            raise ValueError("step %d has no loss rows (mask=1, pad=0)" % s)

        # Forward both models (the teacher as it was before this update), loss, backward.
        y = teacher_targets(teacher, x, pad, loss_rows, cfg)
        pred = student_predictions(student, x, mask, pad, loss_rows, cfg)
        loss = regression_loss(pred, y, cfg)
        grads = dict(zip(names, torch.autograd.grad(loss, [student[n] for n in names])))

        out["c.loss"].append(loss.detach())
        out["c.target_var"].append(channel_std(y))
        out["c.pred_var"].append(channel_std(pred.detach()))
        if s == 0:
            out["c.targets"] = y
            out["c.pred"] = pred.detach()
            out.update({"grad." + n: g for n, g in grads.items()})

        # Update the student (clip, AdamW at lr[s]), then move the teacher (EMA at tau[s]).
        grads, norm = clip_gradients(grads, cfg.clip_norm)
        out["c.grad_norm"].append(norm.detach())
        for n in names:
            student[n].grad = grads[n]
        for group in optimizer.param_groups:
            group["lr"] = float(lr[s])
        optimizer.step()
        ema_update(teacher, student, float(tau[s]))

    for key in ("c.loss", "c.target_var", "c.pred_var", "c.grad_norm"):
        out[key] = torch.stack(out[key])
    out.update({"final." + n: t.detach() for n, t in student.items()})
    out.update({"final_teacher." + n: t.detach() for n, t in teacher.items()})
    return out


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------

OUTPUT_PREFIXES = ("c.", "grad.", "final.", "final_teacher.")


def relative_error(c, ref):
    """max|c - ref| / max(max|ref|, 1e-6), in float64."""
    c = np.asarray(c, dtype=np.float64)
    diff = np.max(np.abs(c - ref)) if c.size else 0.0
    scale = np.max(np.abs(ref)) if ref.size else 0.0
    return float(diff / max(scale, REF_FLOOR))


def compare(arrays, reference):
    """Yield (name, err, problem) for every reference output and every stored C output."""
    stored = {n for n in arrays if n.startswith(OUTPUT_PREFIXES)}
    for name in sorted(reference):
        ref = reference[name].detach().to(torch.float64).numpy()
        if name not in arrays:
            yield name, math.inf, "missing from the case file"
        elif tuple(arrays[name].shape) != ref.shape:
            yield name, math.inf, "shape %s, expected %s" % (
                tuple(arrays[name].shape), ref.shape)
        elif not np.all(np.isfinite(arrays[name])):
            yield name, math.inf, "non-finite values in the C output"
        else:
            yield name, relative_error(arrays[name], ref), None
    for name in sorted(stored - set(reference)):
        yield name, math.inf, "C output with no reference counterpart"


def check_case(path, verbose):
    """Cross-check one case file; returns (passed, failed)."""
    try:
        metadata, arrays = read_safetensors(path)
        cfg = Config(metadata)
        reference = run_reference(cfg, arrays)
    except (OSError, ValueError, KeyError, RuntimeError, struct.error) as e:
        print("FAIL %s: cannot run the reference: %s: %s" % (path, type(e).__name__, e))
        return 0, 1

    passed = failed = 0
    worst_name, worst_err = None, -1.0
    for name, err, problem in compare(arrays, reference):
        ok = problem is None and err < TOLERANCE
        if ok:
            passed += 1
        else:
            failed += 1
        if err > worst_err:
            worst_name, worst_err = name, err
        if not ok or verbose:
            detail = problem or "err %.3e (tolerance %.0e)" % (err, TOLERANCE)
            print("%s %s:%s: %s" % ("ok  " if ok else "FAIL", path, name, detail))
    print("%s: %d tensors, %d passed, %d failed, worst err %.3e (%s) [%s %s L=%d K=%d]" % (
        path, passed + failed, passed, failed, worst_err, worst_name,
        cfg.layout, cfg.layer_norm, cfg.layers, cfg.top_k))
    return passed, failed


def main(argv):
    if torch is None:
        print("SKIP: python3-torch is not installed; the PyTorch cross-check did not run")
        return 77
    verbose = "-v" in argv[1:]
    paths = [a for a in argv[1:] if a != "-v"]
    if not paths:
        print("usage: %s [-v] CASE.safetensors [CASE2.safetensors ...]" % argv[0],
              file=sys.stderr)
        return 2
    torch.set_default_dtype(torch.float64)
    passed = failed = 0
    for path in paths:
        p, f = check_case(path, verbose)
        passed += p
        failed += f
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/python3
"""Independent PyTorch reference for d2v's speech front-end (modalities/speech.c).

Usage:
    /usr/bin/python3 tests/reference/speech_crosscheck.py CASE.safetensors [...]

Each case file (written by tests/speech_export.c) holds the resolved config,
the front-end's weights, a padded batch of waveforms with their lengths, the
frame mask C drew, a random d_x_student, and what C computed from them: the
pad and pool masks, x_student, x_teacher and every parameter gradient (added
onto the starting values in grad_init.*). This script redoes the forward pass
in float64 the way fairseq's Data2VecAudioModel does, takes the gradients by
autograd from sum(x_student * d_x_student), and compares tensor by tensor:

    err = max|c - ref| / max(max|ref|, 1e-6)        must be < 1e-4

plus exact checks of the masks: frames per row from fairseq's output-length
formula, the padding mask, no masked frame in the padding, the same masked
count in every row. It prints a table, then "N passed, M failed"; the exit
status is 0 if everything passed, 1 otherwise, and 77 (meson's "skipped") if
PyTorch is not installed.

The reference semantics (fairseq, data2vec_audio.py and wav2vec2.py):

  wave (B,T) -> ConvFeatureExtractionModel, mode "layer_norm": per layer
      Conv1d(bias=False) -> LayerNorm over channels (affine) -> GELU
  -> LayerNorm(C) -> post_extract_proj Linear(C,D)          = features
  padding_mask: frames at or past _get_feat_extract_output_lengths(length)
  student: features with x[mask_indices] = mask_emb (apply_mask)
  teacher: features.clone() taken before masking (ema_transformer_only)
  both: TransformerEncoder.extract_features up to its first layer norm:
      x = index_put(x, padding_mask, 0); x = x + pos_conv(x)
  pos_conv (make_conv_block): depth x [Conv1d(D,D,K,padding=K//2,groups=G)
      -> SamePad(K) -> LayerNorm(D, no affine) -> GELU]
  The teacher uses the student's pos_conv (ema_layers_only copies it).
"""

import configparser
import json
import struct
import sys

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # reported by main(); nothing else runs without torch
    torch = None

TOLERANCE = 1e-4
REF_FLOOR = 1e-6  # denominator floor of the relative error
FAIRSEQ_LN_EPS = 1e-5  # fairseq's LayerNorm / Fp32LayerNorm default

# --------------------------------------------------------------------------
# safetensors (json + numpy; no safetensors package needed)
# --------------------------------------------------------------------------

NUMPY_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I32": np.dtype("<i4"),
                "I64": np.dtype("<i8"), "U8": np.dtype("u1")}


def read_safetensors(path):
    """Return (metadata dict of strings, dict name -> numpy array).

    8-byte little-endian header length, a JSON header naming each tensor's
    dtype, shape and data_offsets (relative to the end of the header), then
    the raw data.
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
        # copy: byte-sized tensors may leave wider ones unaligned in the blob
        raw = np.frombuffer(data[begin:end], dtype=NUMPY_DTYPES[info["dtype"]]).copy()
        arrays[name] = raw.reshape(info["shape"])
    return metadata, arrays


# --------------------------------------------------------------------------
# Configuration: the resolved INI text C wrote into __metadata__["config"]
# --------------------------------------------------------------------------


def parse_conv_spec(text):
    """'512x10x5,512x3x2*4' -> [(channels, kernel, stride), ...], '*n' repeats."""
    layers = []
    for item in text.split(","):
        layer, _, repeat = item.partition("*")
        channels, kernel, stride = (int(v) for v in layer.split("x"))
        layers += [(channels, kernel, stride)] * (int(repeat) if repeat else 1)
    return layers


class FrontendConfig:
    def __init__(self, metadata):
        ini = configparser.ConfigParser()
        ini.read_string(metadata["config"])
        self.case = metadata.get("case", "?")
        self.conv_layers = parse_conv_spec(ini["frontend"]["conv_spec"])
        self.dim = ini.getint("model", "dim")
        self.pos_kernel = ini.getint("frontend", "pos_conv_kernel")
        self.pos_groups = ini.getint("frontend", "pos_conv_groups")
        self.pos_depth = ini.getint("frontend", "pos_conv_depth")
        self.c_eps = float(metadata["layer_norm_eps"])


# --------------------------------------------------------------------------
# The reference front-end (float64)
# --------------------------------------------------------------------------


def feat_extract_output_lengths(lengths, conv_layers):
    """wav2vec2's _get_feat_extract_output_lengths, formula as fairseq writes it."""
    lengths = lengths.to(torch.float64)
    for _, kernel, stride in conv_layers:
        lengths = torch.floor((lengths - kernel) / stride + 1)
    return lengths.to(torch.long)


def frame_padding_mask(lengths, T, N, conv_layers):
    """Data2VecAudioModel.forward's padding mask over frames (True = pad), or
    None when no sample is padding (then fairseq drops the mask)."""
    B = lengths.shape[0]
    sample_padding = torch.arange(T)[None, :] >= lengths[:, None]
    if not sample_padding.any():
        return None
    output_lengths = feat_extract_output_lengths((~sample_padding).long().sum(-1), conv_layers)
    mask = torch.zeros(B, N, dtype=torch.bool)
    # the last valid frame of each row, then everything after it
    mask[torch.arange(B), output_lengths - 1] = True
    return (1 - mask.flip([-1]).long().cumsum(-1).flip([-1])).bool()


def feature_encoder(wave, P, cfg):
    """ConvFeatureExtractionModel, extractor mode "layer_norm": (B,T) -> (B,N,C)."""
    x = wave.unsqueeze(1)
    c_in = 1
    for l, (channels, kernel, stride) in enumerate(cfg.conv_layers):
        weight = P["frontend.conv.%d.weight" % l].reshape(channels, c_in, kernel)
        x = F.conv1d(x, weight, stride=stride)
        x = F.layer_norm(x.transpose(1, 2), (channels,), P["frontend.conv.%d.norm.weight" % l],
                         P["frontend.conv.%d.norm.bias" % l], FAIRSEQ_LN_EPS).transpose(1, 2)
        x = F.gelu(x)
        c_in = channels
    return x.transpose(1, 2)


def pos_conv(x, P, cfg):
    """make_conv_block's stack on (B,N,D) -> (B,N,D)."""
    D, K, G = cfg.dim, cfg.pos_kernel, cfg.pos_groups
    h = x.transpose(1, 2)
    for l in range(cfg.pos_depth):
        weight = P["frontend.pos_conv.%d.weight" % l].reshape(D, D // G, K)
        h = F.conv1d(h, weight, P["frontend.pos_conv.%d.bias" % l], padding=K // 2, groups=G)
        if K % 2 == 0:  # SamePad: Conv1d(padding=K//2) made one frame too many
            h = h[:, :, :-1]
        h = F.layer_norm(h.transpose(1, 2), (D,), None, None, FAIRSEQ_LN_EPS).transpose(1, 2)
        h = F.gelu(h)
    return h.transpose(1, 2)


def encoder_input(x, padding_mask, P, cfg):
    """TransformerEncoder.extract_features up to its first layer norm."""
    if padding_mask is not None:
        x = x.clone()
        x[padding_mask] = 0  # index_put(x, padding_mask, 0)
    return x + pos_conv(x, P, cfg)


def reference_frontend(wave, frame_mask, padding_mask, P, cfg):
    features = feature_encoder(wave, P, cfg)
    C = features.shape[-1]
    features = F.layer_norm(features, (C,), P["frontend.feature_norm.weight"],
                            P["frontend.feature_norm.bias"], FAIRSEQ_LN_EPS)
    features = F.linear(features, P["frontend.proj.weight"], P["frontend.proj.bias"])
    teacher_features = features.clone()  # pre_encoder_features, before masking
    masked = features.clone()
    masked[frame_mask] = P["frontend.mask_emb"]  # apply_mask
    x_student = encoder_input(masked, padding_mask, P, cfg)
    x_teacher = encoder_input(teacher_features, padding_mask, P, cfg)
    return x_student, x_teacher


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def row(self, case, name, ok, max_diff="", max_ref="", err="", note=""):
        def fmt(v):
            return "%.3e" % v if isinstance(v, float) else str(v)
        print("%-22s %-40s %10s %10s %10s  %-4s %s" % (case, name, fmt(max_diff), fmt(max_ref), fmt(err),
                                                      "ok" if ok else "FAIL", note))
        if ok:
            self.passed += 1
        else:
            self.failed += 1

    def compare(self, case, name, c_value, ref_value):
        c_value = np.asarray(c_value, dtype=np.float64)
        ref_value = np.asarray(ref_value, dtype=np.float64)
        if c_value.shape != ref_value.shape:
            self.row(case, name, False, note="shape C %s, reference %s" % (c_value.shape, ref_value.shape))
            return
        max_diff = float(np.max(np.abs(c_value - ref_value)))
        max_ref = float(np.max(np.abs(ref_value)))
        err = max_diff / max(max_ref, REF_FLOOR)
        finite = bool(np.all(np.isfinite(c_value)))
        # a reference of all zeros would make the check vacuous: the case is
        # built so that every tensor carries signal
        ok = finite and err < TOLERANCE and max_ref > 0
        note = "" if finite else "non-finite in C"
        if max_ref == 0:
            note = "reference is all zero: vacuous check"
        self.row(case, name, ok, max_diff, max_ref, err, note)

    def exact(self, case, name, ok, note=""):
        self.row(case, name, bool(ok), note=note)


def check_case(path, report):
    metadata, arrays = read_safetensors(path)
    cfg = FrontendConfig(metadata)
    case = cfg.case
    wave = torch.from_numpy(arrays["wave"].astype(np.float64))
    lengths = torch.from_numpy(arrays["lengths"].astype(np.int64))
    frame_mask_np = arrays["frame_mask"].astype(bool)
    c_pad = arrays["pad"].astype(bool)
    c_pool = arrays["pool"].astype(bool)
    B, T = wave.shape
    N = frame_mask_np.shape[1]

    report.exact(case, "layer norm eps = fairseq's 1e-5", abs(cfg.c_eps - FAIRSEQ_LN_EPS) < 1e-10,
                 "C uses %.9g" % cfg.c_eps)
    beyond = (torch.arange(T)[None, :] >= lengths[:, None]) & (wave != 0)
    report.exact(case, "input: zeros past each length", not bool(beyond.any()))

    # Frames: fairseq's length formula against the C pad mask, row by row.
    expected_frames = feat_extract_output_lengths(lengths, cfg.conv_layers).numpy()
    c_frames = N - c_pad.sum(axis=1)
    report.exact(case, "frames per row", np.array_equal(expected_frames, c_frames),
                 "reference %s, C %s" % (expected_frames.tolist(), c_frames.tolist()))
    padding_mask = frame_padding_mask(lengths, T, N, cfg.conv_layers)
    ref_pad = np.zeros((B, N), dtype=bool) if padding_mask is None else padding_mask.numpy()
    report.exact(case, "pad mask", np.array_equal(ref_pad, c_pad), "%d padded frames" % int(ref_pad.sum()))
    report.exact(case, "pool mask = not pad", np.array_equal(c_pool, ~ref_pad))

    # The mask is C's draw; what fairseq's compute_mask_indices guarantees of
    # it (padding never masked, require_same_masks) is checked here.
    counts = frame_mask_np.sum(axis=1)
    report.exact(case, "no padded frame masked", not bool((frame_mask_np & ref_pad).any()))
    report.exact(case, "same masked count per row", bool(np.all(counts == counts[0])) and counts[0] > 0,
                 "masked per row %s" % counts.tolist())

    names = sorted(k[len("param."):] for k in arrays if k.startswith("param."))
    grad_names = sorted(k[len("grad."):] for k in arrays if k.startswith("grad."))
    report.exact(case, "a gradient for every parameter", names == grad_names, "%d parameters" % len(names))
    P = {n: torch.from_numpy(arrays["param." + n].astype(np.float64)).requires_grad_(True) for n in names}

    frame_mask = torch.from_numpy(frame_mask_np)
    x_student, x_teacher = reference_frontend(wave, frame_mask, padding_mask, P, cfg)
    report.compare(case, "x_student", arrays["x_student"], x_student.detach().numpy())
    report.compare(case, "x_teacher", arrays["x_teacher"], x_teacher.detach().numpy())

    d_x_student = torch.from_numpy(arrays["d_x_student"].astype(np.float64))
    (x_student * d_x_student).sum().backward()
    for name in names:
        if name not in grad_names:
            continue
        ref_grad = P[name].grad
        ref_grad = np.zeros(P[name].shape) if ref_grad is None else ref_grad.numpy()
        # backward accumulates: what it added is grad - grad_init
        c_grad = arrays["grad." + name].astype(np.float64) - arrays["grad_init." + name].astype(np.float64)
        report.compare(case, "grad " + name, c_grad, ref_grad)


def main(argv):
    if torch is None:
        print("SKIP: PyTorch is not importable (Debian: apt-get install python3-torch); "
              "the speech front-end cross-check did not run")
        return 77
    if len(argv) < 2:
        print(__doc__)
        return 2
    torch.set_num_threads(1)  # tiny shapes; leave the cores to others
    report = Report()
    print("%-22s %-40s %10s %10s %10s  %s" % ("case", "check", "max|diff|", "max|ref|", "rel err", "status"))
    for path in argv[1:]:
        check_case(path, report)
    print("tolerance: max|C - ref| / max|ref| < %g" % TOLERANCE)
    print("%d passed, %d failed" % (report.passed, report.failed))
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

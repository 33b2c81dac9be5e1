#!/usr/bin/python3
"""Write synthetic cross-check cases to test crosscheck.py itself.

Usage:
    /usr/bin/python3 tests/reference/make_fake_case.py OUTDIR [--float32] [--seed N]

For a few configurations (speech-, image- and text-like objectives) this
draws random weights and inputs, computes the "C outputs" with crosscheck.py's
own reference, and writes OUTDIR/fake_<name>.safetensors in the format the C
side writes. It also writes OUTDIR/fake_<first>_perturbed.safetensors, a copy of
the first case with one gradient scaled by 1.01: crosscheck.py must pass on
the clean cases and fail on the perturbed one.

By default the outputs are computed in float64 and rounded to float32 once, so
the cross-check sees only storage rounding. With --float32 the whole
computation runs in float32 instead, which emulates what the C implementation
can achieve at best and shows whether the tolerance is realistic.
"""

import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crosscheck  # noqa: E402  (the reference under test)

torch = crosscheck.torch

SAFETENSORS_DTYPES = {np.dtype("float32"): "F32", np.dtype("uint8"): "U8",
                      np.dtype("int64"): "I64"}

# Three configurations in the spirit of DESIGN.md §4, shrunk to CPU size.
# Weight decay is far above the paper's so that decaying the wrong tensors
# moves the final weights by more than the tolerance; with the default seed the
# text case's step-0 and step-2 gradient norms (1.7, 1.5) are below clip_norm
# and step 1's (3.1) above it, the image case clips every step.
CASES = {
    "speech": dict(layout="post_ln", layer_norm="instance", final_norm="none",
                   layer_output="ffn", head="linear", loss_beta=0.0, clip_norm=0.0,
                   beta2=0.98, adam_eps=1e-6, weight_decay=0.3, top_k=2),
    "image": dict(layout="pre_ln", layer_norm="none", final_norm="layer",
                  layer_output="block", head="linear", loss_beta=2.0, clip_norm=0.05,
                  beta2=0.999, adam_eps=1e-8, weight_decay=0.5, top_k=3),
    "text": dict(layout="post_ln", layer_norm="layer", final_norm="instance",
                 layer_output="ffn", head="mlp", loss_beta=0.5, clip_norm=2.0,
                 beta2=0.98, adam_eps=1e-6, weight_decay=0.3, top_k=2, loss_scale=1.0),
}
SIZES = dict(dim=16, layers=3, heads=4, ffn=32, batch=2, positions=7, steps=3)


def write_safetensors(path, arrays, metadata):
    """Write name -> numpy array plus string metadata as a safetensors file."""
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    offset = 0
    blobs = []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        data = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": SAFETENSORS_DTYPES[array.dtype],
                        "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)   # align the data section to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


def parameter_shapes(cfg):
    """Student parameter names and shapes (Linear weights (out, in))."""
    D, F = cfg["dim"], cfg["ffn"]
    shapes = {}
    for l in range(cfg["layers"]):
        p = "blocks.%d." % l
        shapes.update({p + "attn.qkv.weight": (3 * D, D), p + "attn.qkv.bias": (3 * D,),
                       p + "attn.proj.weight": (D, D), p + "attn.proj.bias": (D,),
                       p + "ln1.weight": (D,), p + "ln1.bias": (D,),
                       p + "fc1.weight": (F, D), p + "fc1.bias": (F,),
                       p + "fc2.weight": (D, F), p + "fc2.bias": (D,),
                       p + "ln2.weight": (D,), p + "ln2.bias": (D,)})
    shapes.update({"norm.weight": (D,), "norm.bias": (D,), "mask_emb": (D,)})
    if cfg["head"] == "linear":
        shapes.update({"head.fc1.weight": (D, D), "head.fc1.bias": (D,)})
    else:
        shapes.update({"head.fc1.weight": (2 * D, D), "head.fc1.bias": (2 * D,),
                       "head.fc2.weight": (D, 2 * D), "head.fc2.bias": (D,)})
    return shapes


def random_parameter(rng, name, shape):
    """PyTorch-like init, with non-trivial biases and norm affines so every term matters."""
    if name.endswith("weight") and len(shape) == 2:
        bound = 1.0 / np.sqrt(shape[1])
        return rng.uniform(-bound, bound, shape)
    if name.endswith("weight"):                       # layer-norm gains
        return 1.0 + 0.2 * rng.standard_normal(shape)
    if name == "mask_emb":
        return rng.standard_normal(shape)
    return 0.1 * rng.standard_normal(shape)           # biases


def random_case(name, rng):
    """Metadata and inputs (weights, x, masks, pad, lr, tau) of one case."""
    cfg = dict(SIZES, eps=1e-5, beta1=0.9, loss_scale=1.0 / np.sqrt(SIZES["dim"]))
    cfg.update(CASES[name])
    B, N, D, S = cfg["batch"], cfg["positions"], cfg["dim"], cfg["steps"]
    arrays = {}
    for pname, shape in parameter_shapes(cfg).items():
        arrays["init." + pname] = random_parameter(rng, pname, shape)
    # The teacher starts near (not at) the student so a mix-up of the two shows.
    for pname in parameter_shapes(cfg):
        if pname.startswith(("blocks.", "norm.")):
            init = arrays["init." + pname]
            arrays["init_teacher." + pname] = init + 0.05 * rng.standard_normal(init.shape)
    arrays["lr"] = np.array([1e-3, 2e-3, 1.5e-3])[:S]
    arrays["tau"] = np.array([0.9, 0.95, 0.99])[:S]
    pad = np.zeros((B, N), np.uint8)
    pad[1, N - 2:] = 1                                # the second sample is shorter
    arrays["pad"] = pad
    for s in range(S):
        arrays["x.%d" % s] = rng.standard_normal((B, N, D))
        mask = (rng.random((B, N)) < 0.5).astype(np.uint8)
        mask[:, 0] = 1                                # every sample has a loss row
        mask[1, N - 1] = 1                            # a masked padded position
        arrays["mask.%d" % s] = mask
    arrays = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in arrays.items()}
    return cfg, arrays


def fake_outputs(cfg, arrays, dtype):
    """The C outputs, as crosscheck.py's reference computes them (stored as F32)."""
    config = crosscheck.Config({k: str(v) for k, v in cfg.items()})
    outputs = crosscheck.run_reference(config, arrays, dtype)
    return {k: v.detach().to(torch.float32).numpy() for k, v in outputs.items()}


def main(argv):
    if torch is None:
        print("SKIP: python3-torch is not installed")
        return 77
    args = argv[1:]
    float32 = "--float32" in args
    seed = int(args[args.index("--seed") + 1]) if "--seed" in args else 1
    positional = [a for i, a in enumerate(args)
                  if not a.startswith("--") and (i == 0 or args[i - 1] != "--seed")]
    if len(positional) != 1:
        print("\n".join(__doc__.strip().splitlines()[2:4]), file=sys.stderr)
        return 2
    outdir = positional[0]
    os.makedirs(outdir, exist_ok=True)
    dtype = torch.float32 if float32 else torch.float64
    rng = np.random.default_rng(seed)

    for i, name in enumerate(CASES):
        cfg, arrays = random_case(name, rng)
        outputs = fake_outputs(cfg, arrays, dtype)
        path = os.path.join(outdir, "fake_%s.safetensors" % name)
        write_safetensors(path, {**arrays, **outputs}, cfg)
        print("wrote", path)
        if i == 0:
            victim = "grad.blocks.0.fc1.weight"
            outputs[victim] = outputs[victim] * np.float32(1.01)
            path = os.path.join(outdir, "fake_%s_perturbed.safetensors" % name)
            write_safetensors(path, {**arrays, **outputs}, cfg)
            print("wrote", path, "(%s scaled by 1.01)" % victim)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

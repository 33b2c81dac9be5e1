#!/usr/bin/python3
"""Checks a pretraining run's log.jsonl for the end-to-end tests:
    check_run_log.py LOG STEPS                 one line per step 1..STEPS, all finite
    check_run_log.py --same-losses LOG LOG...  every log has the same losses, bit for bit
Exits 1 with the reason on the first failure."""
import json
import math
import sys


def losses(path):
    return [json.loads(line)["loss"] for line in open(path)]


def main():
    if sys.argv[1] == "--same-losses":
        first = losses(sys.argv[2])
        for other in sys.argv[3:]:
            if losses(other) != first:
                sys.exit(f"{other}: losses differ from {sys.argv[2]}: {losses(other)} vs {first}")
        return
    path, steps = sys.argv[1], int(sys.argv[2])
    rows = [json.loads(line) for line in open(path)]
    if [r["step"] for r in rows] != list(range(1, steps + 1)):
        sys.exit(f"{path}: expected steps 1..{steps}, got {[r['step'] for r in rows]}")
    for r in rows:
        for key in ("loss", "target_var", "pred_var", "frontend_var", "grad_norm", "lr", "tau"):
            if not math.isfinite(r[key]):
                sys.exit(f"{path}: step {r['step']}: {key} is {r[key]}")
        if not (r["loss"] > 0 and r["target_var"] > 0 and r["masked"] > 0):
            sys.exit(f"{path}: step {r['step']}: loss, target_var and masked must be positive: {r}")


if __name__ == "__main__":
    main()

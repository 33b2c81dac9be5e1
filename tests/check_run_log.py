#!/usr/bin/python3
"""Checks a pretraining run's log.jsonl for the end-to-end tests:
    check_run_log.py LOG STEPS                 one line per step 1..STEPS, all finite
    check_run_log.py --same-losses LOG LOG...  every log has the same losses, bit for bit
    check_run_log.py --matches REF LOG STEPS   LOG (of a run interrupted and resumed, so
        steps after a checkpoint may be logged twice) logs every step 1..STEPS and each
        of its lines has REF's loss at that step, bit for bit
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
    if sys.argv[1] == "--matches":
        ref, log, steps = sys.argv[2], sys.argv[3], int(sys.argv[4])
        expected = {r["step"]: r["loss"] for r in map(json.loads, open(ref))}
        rows = [json.loads(line) for line in open(log)]
        for r in rows:
            if r["step"] not in expected or r["loss"] != expected[r["step"]]:
                sys.exit(f"{log}: step {r['step']}: loss {r['loss']!r}, the uninterrupted run had "
                         f"{expected.get(r['step'])!r}")
        missing = sorted(set(range(1, steps + 1)) - {r["step"] for r in rows})
        if missing:
            sys.exit(f"{log}: steps never logged: {missing}")
        print(f"{len(rows)} logged steps ({len(rows) - steps} logged twice after a resume) "
              f"match the uninterrupted run bit for bit")
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

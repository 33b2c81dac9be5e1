#!/usr/bin/python3
"""Build in-domain unlabelled pretraining text for the text modality: the
glosses (definitions and quoted usage examples) of WordNet 3.0 synsets, with
every synset that the topic evaluation set may put in its test split left out.

    /usr/bin/python3 scripts/make_text_topic.py --out data/topic
    /usr/bin/python3 scripts/make_text_glosses.py --out data/glosses/glosses.txt [--test data/topic/test.tsv]

Writes one sentence per line (UTF-8, NFC, whitespace collapsed): each kept
synset's definition and, unless --no-examples, each of its usage examples as
lines of their own. No labels and no head words are written, and the lines are
shuffled (a fixed seed), so neither a topic nor WordNet's file order (synsets
sit grouped by topic there) can be read from the file.

Leak-free by construction and by check. make_text_topic.py sends a noun
synset to test when the MD5 bucket of its offset, modulo 100, is below 20;
every noun synset in those buckets is dropped here, whatever its topic (a
superset of the test split). Verb, adjective and adverb offsets number other
files, so they are kept, but any line that contains a test definition
(read from --test) as a substring is dropped, and at the end the whole output
is searched once more for each test definition: the script fails if one is
found. The train definitions are in the output, unlabelled (their synsets are
train synsets). Deterministic. License: the WordNet 3.0 license
(/usr/share/doc/wordnet-base/copyright).
"""
import argparse
import hashlib
import os
import random
import re
import sys
import time
import unicodedata

PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")


def clean(text):
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def md5_bucket(text):
    """The bucket make_text_topic.py splits on (the same arithmetic)."""
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16) % 1000000


def in_test_buckets(offset):
    return md5_bucket(offset) % 100 < 20


def glosses(path, is_noun_file):
    """(offset, definition, [usage examples]) per synset; noun synsets of the test buckets are skipped."""
    skipped = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for record in f:
            if record.startswith("  "):
                continue  # the license text at the top of every data file
            fields, _, gloss = record.partition(" | ")
            offset = fields.split()[0]
            if is_noun_file and in_test_buckets(offset):
                skipped += 1
                continue
            gloss = gloss.strip()
            definition = clean(re.split(r';\s*"', gloss, maxsplit=1)[0].rstrip(";"))
            examples = [clean(e) for e in re.findall(r'"([^"]+)"', gloss)]
            yield offset, definition, examples
    print(f"  {os.path.basename(path)}: {skipped} synsets in the test buckets left out")


def read_test_definitions(path):
    with open(path, encoding="utf-8") as f:
        return [clean(line.split("\t", 1)[1]) for line in f if "\t" in line]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/glosses/glosses.txt", help="the text file to write")
    parser.add_argument("--wordnet", default="/usr/share/wordnet", help="directory with data.noun, data.verb, ...")
    parser.add_argument("--pos", default=",".join(PARTS_OF_SPEECH),
                        help="comma-separated parts of speech to take glosses from (noun,verb,adj,adv)")
    parser.add_argument("--no-examples", action="store_true", help="definitions only, no usage examples")
    parser.add_argument("--test", default="data/topic/test.tsv",
                        help="the topic test split (label<TAB>definition) to check the output against")
    parser.add_argument("--seed", type=int, default=1, help="seed of the line shuffle")
    args = parser.parse_args()
    started = time.time()

    pos = args.pos.split(",")
    unknown = [p for p in pos if p not in PARTS_OF_SPEECH]
    if unknown:
        sys.exit(f"unknown parts of speech {unknown}; choose from {','.join(PARTS_OF_SPEECH)}")
    if not os.path.exists(args.test):
        sys.exit(f"{args.test} not found: build it first (scripts/make_text_topic.py); "
                 "the glosses are checked against it")
    test_definitions = read_test_definitions(args.test)

    lines, seen = [], set()
    for p in pos:
        path = os.path.join(args.wordnet, "data." + p)
        if not os.path.exists(path):
            sys.exit(f"{path} not found: apt-get install -y --no-install-recommends wordnet-base")
        for _, definition, examples in glosses(path, p == "noun"):
            for sentence in [definition] + ([] if args.no_examples else examples):
                if len(sentence.split()) >= 2 and sentence not in seen:
                    seen.add(sentence)
                    lines.append(sentence)
    random.Random(args.seed).shuffle(lines)

    # Drop every line that contains a test definition (a gloss of another
    # part of speech, or a longer gloss quoting a short one).
    text = "\n".join(lines)
    line_starts = [0]
    for line in lines:
        line_starts.append(line_starts[-1] + len(line) + 1)
    dropped = set()
    for definition in test_definitions:
        at = text.find(definition)
        while at >= 0:
            lo, hi = 0, len(lines) - 1  # the line holding position `at`
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if line_starts[mid] <= at:
                    lo = mid
                else:
                    hi = mid - 1
            dropped.add(lo)
            at = text.find(definition, at + 1)
    lines = [line for i, line in enumerate(lines) if i not in dropped]

    text = "\n".join(lines) + "\n"
    leaks = [d for d in test_definitions if d in text]
    if leaks:
        sys.exit(f"leak check failed: {len(leaks)} test definitions in the output, e.g. {leaks[0]!r}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{len(lines)} lines ({len(text.encode()) / 1e6:.1f} MB) -> {args.out}; {len(dropped)} lines that held "
          f"a test definition dropped; none of the {len(test_definitions)} test definitions occurs in the output")
    print(f"done in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()

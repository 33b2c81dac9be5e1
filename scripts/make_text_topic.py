#!/usr/bin/python3
"""Build the topic evaluation set for the text modality: WordNet 3.0 noun
definitions labeled with the lexicographer file of their synset (noun.animal,
noun.food, ...), from Debian's wordnet-base.

    /usr/bin/python3 scripts/make_text_topic.py --out data/topic [--train-per-class 800] [--test-per-class 200]

Writes OUT/train.tsv and OUT/test.tsv, one `label<TAB>definition` per line,
which `d2v eval knn|linear --train OUT/train.tsv --test OUT/test.tsv` reads,
and OUT/classes.txt. A definition is a synset's gloss without its quoted usage
examples; the synset's own words are not part of it, so the topic has to be
read from the description. Which synsets are test (a fifth) is decided by an
MD5 bucket of the synset offset, so the two splits never share a synset;
definitions that occur twice are dropped; each class takes the first N
synsets in bucket order. This is the selection ../shared/data/text_topic.py
makes, so its character n-gram baseline (k-NN 0.76) applies to these files.
Deterministic. License: the WordNet 3.0 license (/usr/share/doc/wordnet-base/copyright).
"""
import argparse
import hashlib
import os
import re
import sys
import time
import unicodedata

# Lexicographer file numbers of the noun files (WordNet's lexnames(5WN)).
NOUN_FILES = {
    4: "act", 5: "animal", 6: "artifact", 7: "attribute", 8: "body", 9: "cognition", 10: "communication",
    11: "event", 12: "feeling", 13: "food", 14: "group", 15: "location", 16: "motive", 17: "object",
    18: "person", 19: "phenomenon", 20: "plant", 21: "possession", 22: "process", 23: "quantity",
    24: "relation", 25: "shape", 26: "state", 27: "substance", 28: "time",
}
TEN_TOPICS = "act,animal,artifact,body,communication,food,location,person,plant,substance"


def clean(text):
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def synsets(path, wanted):
    """(offset, topic, definition) of every noun synset whose file is wanted."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for record in f:
            if record.startswith("  "):
                continue  # the license text at the top of every data file
            fields, _, gloss = record.partition(" | ")
            offset, file_number = fields.split()[:2]
            topic = wanted.get(int(file_number))
            if topic is None:
                continue
            # The gloss is "definition; "usage example"; ...": keep what precedes the first example.
            definition = re.split(r';\s*"', gloss.strip(), maxsplit=1)[0]
            yield offset, topic, clean(definition.rstrip(";"))


def md5_bucket(text):
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16) % 1000000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/topic")
    parser.add_argument("--wordnet", default="/usr/share/wordnet/data.noun")
    parser.add_argument("--classes", default=TEN_TOPICS)
    parser.add_argument("--train-per-class", type=int, default=800)
    parser.add_argument("--test-per-class", type=int, default=200)
    args = parser.parse_args()
    started = time.time()
    if not os.path.exists(args.wordnet):
        sys.exit(f"{args.wordnet} not found: apt-get install -y --no-install-recommends wordnet-base")
    topics = args.classes.split(",")
    unknown = [t for t in topics if t not in NOUN_FILES.values()]
    if unknown:
        sys.exit(f"unknown classes {unknown}; WordNet's noun files are {sorted(NOUN_FILES.values())}")
    wanted = {number: name for number, name in NOUN_FILES.items() if name in topics}

    candidates, occurrences = [], {}
    for offset, topic, definition in synsets(args.wordnet, wanted):
        occurrences[definition] = occurrences.get(definition, 0) + 1
        if len(definition.split()) >= 4:
            candidates.append((md5_bucket(offset), offset, topic, definition))
    candidates.sort()

    quota = {"train": args.train_per_class, "test": args.test_per_class}
    taken = {(split, topic): 0 for split in quota for topic in topics}
    rows = {split: [] for split in quota}
    for bucket, _, topic, definition in candidates:
        if occurrences[definition] > 1:
            continue  # the same words under two synsets (often two topics): ambiguous
        split = "test" if bucket % 100 < 20 else "train"
        if taken[(split, topic)] < quota[split]:
            taken[(split, topic)] += 1
            rows[split].append(f"{topic}\t{definition}\n")

    os.makedirs(args.out, exist_ok=True)
    for split, lines in rows.items():
        with open(os.path.join(args.out, split + ".tsv"), "w", encoding="utf-8") as f:
            f.writelines(lines)
        print(f"{split}.tsv: {len(lines)} definitions ({', '.join(str(taken[(split, t)]) for t in topics)} per class)")
    with open(os.path.join(args.out, "classes.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(topics) + "\n")
    print(f"done in {time.time() - started:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()

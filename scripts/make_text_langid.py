#!/usr/bin/python3
"""Build the language identification set for the text modality: single
sentences in 10 languages from Debian's translated manual pages (a plumbing
check: a random-init subword model already does well on it; judge learning
on make_text_topic.py's set).

    apt-get install -y --no-install-recommends groff-base manpages manpages-de manpages-es manpages-fr \\
        manpages-it manpages-nl manpages-pl manpages-pt-br manpages-ru manpages-cs
    /usr/bin/python3 scripts/make_text_langid.py --out data/langid [--train-per-lang 500] [--test-per-lang 100]

Writes OUT/train.tsv and OUT/test.tsv, one `language<TAB>sentence` per line
(UTF-8, NFC, whitespace collapsed), and OUT/classes.txt. Which pages are test is decided by an MD5
bucket of the page's name (a fifth), the same in every language, so a page and
its translations are all on one side. Sentences are kept when they look like
prose: 30 to 250 characters, at least 5 words, a capital first and final
punctuation last, mostly letters, nothing that looks like a path, an option or
code; in the translations, sentences that are mostly English function words
(left untranslated) are dropped; a sentence already taken is never taken again.
Pages are visited in bucket order until each quota is met. Deterministic.
Licenses: manpages-l10n GPL-3+ (translations), man-pages various free licenses.
"""
import argparse
import gzip
import hashlib
import os
import re
import subprocess
import sys
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor

PACKAGES = {"en": "manpages", "de": "manpages-de", "es": "manpages-es", "fr": "manpages-fr", "it": "manpages-it",
            "nl": "manpages-nl", "pl": "manpages-pl", "pt": "manpages-pt-br", "ru": "manpages-ru",
            "cs": "manpages-cs"}
ENGLISH_FUNCTION_WORDS = set(
    "the a an and or of to in is are was be by for with that this it as on at from not which you your can will "
    "if when all any into than then there these their has have had been its but no".split())
# A sentence ends at . ! ? or an ellipsis, perhaps closed by quotes or a
# bracket, before whitespace and a capital (or an opening quote and a capital).
SENTENCE_END = re.compile(r"(?<=[.!?\u2026])[\"'\u00bb\u201d)]*\s+(?=[\"'\u00ab\u201e\u201c(\u00bf\u00a1]*[^\W\d_])")
CODE_LIKE = re.compile(r"[/\\=<>{}\[\]@_|#$^~*]|--|\w\(\d\)|\.\w|\d{3,}")


def clean(text):
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def package_files(package):
    listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if listing.returncode != 0:
        sys.exit(f"package {package} is missing: apt-get install -y --no-install-recommends {package}")
    return sorted(p for p in listing.stdout.splitlines() if os.path.isfile(p) and not os.path.islink(p))


def page_name(path):
    name = os.path.basename(path)
    return name[:-3] if name.endswith(".gz") else name


def md5_bucket(text, buckets):
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16) % buckets


def paragraphs_of(path):
    """The paragraphs of one man page, rendered by groff without line breaks."""
    raw = open(path, "rb").read()
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    if raw.lstrip().startswith(b".so "):
        return []
    shell = "preconv -e UTF-8 | groff -mandoc -Tutf8 -P-cbou -rLL=10000n -rHY=0 2>/dev/null"
    text = subprocess.run(shell, shell=True, input=raw, capture_output=True).stdout.decode("utf-8", "replace")
    return [clean(line) for line in text.splitlines()[1:-1] if line.startswith(" ") and line.strip()]


def is_good_sentence(sentence, language):
    if not 30 <= len(sentence) <= 250 or len(sentence.split()) < 5:
        return False
    if not sentence[0].isupper() or sentence[-1] not in ".!?\u2026\"'\u00bb\u201d)":
        return False
    if CODE_LIKE.search(sentence):
        return False
    visible = sentence.replace(" ", "")
    if sum(ch.isalpha() for ch in visible) < 0.8 * len(visible):
        return False
    if language != "en":
        words = re.findall(r"\w+", sentence.lower())
        if words and sum(w in ENGLISH_FUNCTION_WORDS for w in words) > 0.2 * len(words):
            return False
    return True


def collect(language, quota, taken, jobs):
    pages = [p for p in package_files(PACKAGES[language])
             if "/man/" in p and "/man2/" not in p and "/man3/" not in p]  # no C API pages
    pages.sort(key=lambda p: (md5_bucket(page_name(p), 1000000), p))
    found = {"train": [], "test": []}
    with ThreadPoolExecutor(jobs) as pool:
        for first in range(0, len(pages), 8):
            batch = pages[first:first + 8]
            for path, paragraphs in zip(batch, pool.map(paragraphs_of, batch)):
                split = "test" if md5_bucket(page_name(path), 100) < 20 else "train"
                for paragraph in paragraphs:
                    for sentence in map(clean, SENTENCE_END.split(paragraph)):
                        if len(found[split]) >= quota[split]:
                            break
                        if sentence not in taken and is_good_sentence(sentence, language):
                            taken.add(sentence)
                            found[split].append(sentence)
            if all(len(found[s]) >= quota[s] for s in found):
                break
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/langid")
    parser.add_argument("--languages", default=",".join(PACKAGES))
    parser.add_argument("--train-per-lang", type=int, default=500)
    parser.add_argument("--test-per-lang", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1, help="groff processes at once")
    args = parser.parse_args()
    started = time.time()
    quota = {"train": args.train_per_lang, "test": args.test_per_lang}
    taken = set()
    rows = {"train": [], "test": []}
    for language in args.languages.split(","):
        if language not in PACKAGES:
            sys.exit(f"unknown language {language!r}; expected some of {','.join(PACKAGES)}")
        found = collect(language, quota, taken, args.jobs)
        for split, sentences in found.items():
            rows[split] += [f"{language}\t{s}\n" for s in sentences]
        print(f"{language}: {len(found['train'])} train, {len(found['test'])} test")
    os.makedirs(args.out, exist_ok=True)
    for split, lines in rows.items():
        with open(os.path.join(args.out, split + ".tsv"), "w", encoding="utf-8") as f:
            f.writelines(lines)
        print(f"{split}.tsv: {len(lines)} sentences")
    with open(os.path.join(args.out, "classes.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(args.languages.split(",")) + "\n")
    print(f"done in {time.time() - started:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()

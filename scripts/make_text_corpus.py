#!/usr/bin/python3
"""Build an English pretraining corpus for the text modality from Debian
packages alone (scripts/install-deps.sh installs them).

    /usr/bin/python3 scripts/make_text_corpus.py --out data/text [--sources kjv,fortunes,jargon,man]

Writes OUT/corpus.txt and OUT/valid.txt in the layout `d2v pretrain` reads:
one paragraph (or verse, or fortune) per line, documents separated by a blank
line, UTF-8 in NFC with runs of whitespace collapsed to one space. A document
is a Bible chapter, a fortune file, a Jargon File entry or a man page, so
data.break_mode=complete_doc never packs unrelated text into one block. A line
seen before anywhere in the corpus is dropped; every document whose hash
bucket falls below --valid-percent goes whole to valid.txt. Deterministic: the
same packages give the same bytes.

Sources:
  kjv       the King James Bible (bible-kjv: the `bible` program and its text)
  fortunes  English fortune cookies (fortunes, fortunes-min), one file one document
  jargon    the Jargon File (jargon-text), one entry one document
  man       English man pages (manpages) rendered by groff, prose paragraphs only

WordNet (make_text_topic.py) is never read here, so the topic evaluation
sentences cannot leak into pretraining.
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

WHITESPACE = re.compile(r"\s+")


def clean(text):
    return WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def package_files(package):
    """Regular files a Debian package installed; exits with the apt command if it is missing."""
    listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if listing.returncode != 0:
        sys.exit(f"package {package} is missing: apt-get install -y --no-install-recommends {package}")
    return sorted(p for p in listing.stdout.splitlines() if os.path.isfile(p) and not os.path.islink(p))


def decode(raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # the older fortune files


def looks_like_prose(paragraph, min_words=6, min_letter_share=0.7):
    words = paragraph.split()
    if len(words) < min_words:
        return False
    visible = paragraph.replace(" ", "")
    return sum(ch.isalpha() for ch in visible) >= min_letter_share * len(visible)


# ---- sources: each yields (document key, [lines]) --------------------------------

def kjv_documents():
    package_files("bible-kjv-text")
    verses = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, check=True).stdout
    reference = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")
    chapter, lines = None, []
    for raw in decode(verses).splitlines():
        match = reference.match(raw)
        if not match:
            continue
        key = f"kjv {match.group(1)} {match.group(2)}"
        if key != chapter and lines:
            yield chapter, lines
            lines = []
        chapter = key
        lines.append(match.group(4))
    if lines:
        yield chapter, lines


def fortune_documents():
    for package in ("fortunes-min", "fortunes"):
        for path in package_files(package):
            name = os.path.basename(path)
            if "/games/fortunes/" not in path or "." in name or "art" in name:
                continue  # .dat indexes, .u8 copies, ASCII art
            with open(path, "rb") as f:
                text = decode(f.read())
            lines = []
            for cookie in re.split(r"^%$", text, flags=re.M):
                # An attribution ("-- Mark Twain") is a trailing line of its own.
                body = re.sub(r"\n\s*--.*\Z", "", cookie.strip(), flags=re.S)
                body = clean(body)
                if len(body) >= 20 and looks_like_prose(body, min_words=4, min_letter_share=0.6):
                    lines.append(body)
            if lines:
                yield f"fortunes {name}", lines


def jargon_documents():
    path = next(p for p in package_files("jargon-text") if p.endswith("jargon.txt.gz"))
    text = decode(gzip.decompress(open(path, "rb").read()))
    # Entries start with an indented ":headword:" line; the glossary proper starts at the first one.
    entries = re.split(r"\n(?= *:[^:\n]+:)", text)
    for entry in entries[1:]:
        head = re.match(r" *:([^:\n]+):", entry)
        paragraphs = []
        for paragraph in re.split(r"\n\s*\n", entry[head.end():]):
            paragraph = clean(paragraph.replace("{", "").replace("}", ""))
            if looks_like_prose(paragraph):
                paragraphs.append(paragraph)
        if paragraphs:
            yield f"jargon {head.group(1)}", paragraphs


def render_man_page(path):
    """The prose paragraphs of one man page, rendered by groff without line breaks."""
    raw = open(path, "rb").read()
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    if raw.lstrip().startswith(b".so "):
        return []  # an alias of another page
    shell = "preconv -e UTF-8 | groff -mandoc -Tutf8 -P-cbou -rLL=10000n -rHY=0 2>/dev/null"
    text = subprocess.run(shell, shell=True, input=raw, capture_output=True).stdout.decode("utf-8", "replace")
    paragraphs = []
    for line in text.splitlines()[1:-1]:  # the running header and footer
        if line.startswith(" ") and looks_like_prose(line.strip()):
            paragraphs.append(clean(line))
    return paragraphs


def man_documents(jobs):
    pages = [p for p in package_files("manpages") if "/man/man" in p]
    with ThreadPoolExecutor(jobs) as pool:
        for path, paragraphs in zip(pages, pool.map(render_man_page, pages)):
            if paragraphs:
                yield "man " + os.path.basename(path), paragraphs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/text")
    parser.add_argument("--sources", default="kjv,fortunes,jargon,man")
    parser.add_argument("--valid-percent", type=float, default=2.0)
    parser.add_argument("--jobs", type=int, default=1, help="groff processes at once (man pages)")
    args = parser.parse_args()
    started = time.time()
    sources = {"kjv": kjv_documents, "fortunes": fortune_documents, "jargon": jargon_documents,
               "man": lambda: man_documents(args.jobs)}
    os.makedirs(args.out, exist_ok=True)
    seen = set()
    outputs = {name: open(os.path.join(args.out, name + ".txt"), "w", encoding="utf-8")
               for name in ("corpus", "valid")}
    written = {name: [0, 0] for name in outputs}  # documents, bytes
    for source in args.sources.split(","):
        if source not in sources:
            sys.exit(f"unknown source {source!r}; expected some of {','.join(sources)}")
        documents = 0
        for key, lines in sources[source]():
            kept = []
            for line in map(clean, lines):
                if line and line not in seen:
                    seen.add(line)
                    kept.append(line)
            if not kept:
                continue
            bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little") % 10000
            split = "valid" if bucket < args.valid_percent * 100 else "corpus"
            block = "\n".join(kept) + "\n"
            if written[split][0]:
                block = "\n" + block
            outputs[split].write(block)
            written[split][0] += 1
            written[split][1] += len(block.encode())
            documents += 1
        print(f"{source}: {documents} documents")
    for f in outputs.values():
        f.close()
    for name, (documents, size) in written.items():
        print(f"{name}.txt: {documents} documents, {size / 1e6:.2f} MB")
    print(f"done in {time.time() - started:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()

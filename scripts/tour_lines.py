#!/usr/bin/python3
"""Keep the line anchors of docs/tour.md true.

Every link to a source line carries, as its Markdown title, a snippet of the
code that must be on that line:

    [line 143](../core/data2vec.c#L143 "a->target_sum[i] += a->tap_norm[i]")
    [lines 145-147](../core/data2vec.c#L145-L147 "const real inv_k")

--check  verifies each such link: the file exists, the snippet occurs exactly
         once in it, and on the anchored line (the first line of a range); a
         visible "line N" / "lines N-M" agrees with the anchor; a #L link
         without a snippet is a problem too. One line per problem; exit 1 if
         there is any.
--fix    moves the anchors and the visible "line N" / "lines N-M" to where
         the snippets are now (ranges keep their length) and says what it
         changed. It changes nothing, and exits 1, when a snippet is missing,
         ambiguous, or absent.

Plain Python 3, standard library only.
"""

import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join("docs", "tour.md")

# [text](destination "title") where the destination has a #L anchor. The
# title is optional here so that a link without one can be reported.
LINK = re.compile(
    r'\[(?P<text>[^\]]*)\]'
    r'\((?P<dest>[^)\s"#]*#L[^)\s"]*)'
    r'(?:\s+"(?P<title>(?:[^"\\]|\\.)*)")?\s*\)')
ANCHOR = re.compile(r'^L(?P<first>\d+)(?:-L(?P<last>\d+))?$')
VISIBLE = re.compile(r'\b(?P<word>lines?) (?P<first>\d+)(?:-(?P<last>\d+))?\b')
ESCAPE = re.compile(r'\\([!-/:-@\[-`{-~])')  # CommonMark: \ before ASCII punctuation


class Link:
    def __init__(self, m, text):
        self.m = m
        self.line = text.count("\n", 0, m.start()) + 1
        self.dest = m.group("dest")
        self.path, _, self.anchor = self.dest.partition("#")
        raw = m.group("title")
        self.snippet = None if raw is None else ESCAPE.sub(r"\1", raw)
        a = ANCHOR.match(self.anchor)
        self.first = int(a.group("first")) if a else None
        self.last = int(a.group("last")) if a and a.group("last") else None
        v = VISIBLE.search(m.group("text"))
        self.visible = v
        self.found = None      # line the snippet is on now, if found once
        self.problem = None    # why the link cannot be checked or fixed

    def where(self):
        return "%s:%d: %s" % (DOC, self.line, self.dest)


def locate(link, doc_dir, cache):
    """Set link.found, or link.problem when the snippet cannot be placed."""
    if link.snippet is None:
        link.problem = "no snippet: give the link a title with the code that must be on the line"
        return
    if not link.snippet.strip():
        link.problem = "empty snippet"
        return
    if "\n" in link.snippet:
        link.problem = "the snippet spans lines; use one line of code"
        return
    if link.first is None or (link.last is not None and link.last < link.first):
        link.problem = "anchor #%s is not #Lnnn or #Lnnn-Lmmm" % link.anchor
        return
    path = os.path.normpath(os.path.join(doc_dir, link.path))
    if path not in cache:
        try:
            with open(path, encoding="utf-8") as f:
                cache[path] = f.read()
        except OSError as e:
            cache[path] = e
    source = cache[path]
    if isinstance(source, OSError):
        link.problem = "cannot read %s: %s" % (os.path.relpath(path, ROOT), source.strerror)
        return
    count = source.count(link.snippet)
    if count == 0:
        link.problem = '"%s" is not in the file' % link.snippet
        return
    if count > 1:
        link.problem = '"%s" occurs %d times in the file; use a longer snippet' % (link.snippet, count)
        return
    link.found = source.count("\n", 0, source.index(link.snippet)) + 1


def span(first, last):
    return "L%d" % first if last is None else "L%d-L%d" % (first, last)


def visible_problem(link):
    """The visible "line N" / "lines N-M" disagreeing with the anchor, or None."""
    v = link.visible
    if v is None or link.first is None:
        return None
    first, last = int(v.group("first")), v.group("last")
    last = int(last) if last else None
    if (first, last) != (link.first, link.last):
        return 'the text says "%s" but the anchor is #%s' % (v.group(0), link.anchor)
    return None


def new_numbers(link):
    first = link.found
    last = None if link.last is None else first + (link.last - link.first)
    return first, last


def rewrite(link):
    """The link's new source text, its anchor and visible numbers moved."""
    first, last = new_numbers(link)
    m = link.m
    whole = m.group(0)
    start = m.start()
    text = m.group("text")
    v = link.visible
    if v is not None:
        label = "%s %d" % (v.group("word"), first)
        if v.group("last"):
            vfirst, vlast = int(v.group("first")), int(v.group("last"))
            label = "%s %d-%d" % (v.group("word"), first, first + (vlast - vfirst))
        text = text[:v.start()] + label + text[v.end():]
    dest = "%s#%s" % (link.path, span(first, last))
    return ("[" + text + "](" + dest + whole[m.end("dest") - start:])


def main():
    ap = argparse.ArgumentParser(description="Check or repair the line anchors of docs/tour.md.")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="report anchors that are wrong (exit 1 if any)")
    mode.add_argument("--fix", action="store_true", help="move anchors to where their snippets are now")
    args = ap.parse_args()

    doc_path = os.path.join(ROOT, DOC)
    with open(doc_path, encoding="utf-8") as f:
        text = f.read()
    links = [Link(m, text) for m in LINK.finditer(text)]
    cache = {}
    for link in links:
        locate(link, os.path.dirname(doc_path), cache)

    if args.check:
        problems = 0
        for link in links:
            msgs = []
            if link.problem:
                msgs.append(link.problem)
            elif link.found != link.first:
                msgs.append('"%s" is now on line %d' % (link.snippet, link.found))
            vp = visible_problem(link)
            if vp:
                msgs.append(vp)
            for msg in msgs:
                print("%s: %s" % (link.where(), msg))
                problems += 1
        if problems:
            print("%d problem(s) in %d line anchors; `/usr/bin/python3 scripts/tour_lines.py --fix` moves "
                  "anchors whose snippet is found once" % (problems, len(links)), file=sys.stderr)
            return 1
        print("%s: %d line anchors, all on their snippets" % (DOC, len(links)))
        return 0

    bad = [link for link in links if link.problem]
    if bad:
        for link in bad:
            print("%s: %s" % (link.where(), link.problem))
        print("nothing changed: fix the snippets above by hand first", file=sys.stderr)
        return 1
    out, pos, changed = [], 0, 0
    for link in links:
        new = rewrite(link)
        out.append(text[pos:link.m.start()])
        out.append(new)
        pos = link.m.end()
        if new != link.m.group(0):
            changed += 1
            first, last = new_numbers(link)
            what = []
            if (first, last) != (link.first, link.last):
                what.append("#%s -> #%s" % (link.anchor, span(first, last)))
            old_label, new_label = VISIBLE.search(link.m.group("text")), VISIBLE.search(new)
            if old_label and old_label.group(0) != new_label.group(0):
                what.append('"%s" -> "%s"' % (old_label.group(0), new_label.group(0)))
            print('%s: %s ("%s")' % (link.where(), ", ".join(what), link.snippet))
    out.append(text[pos:])
    if changed:
        tmp = doc_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(out))
        os.replace(tmp, doc_path)
    print("%s: %d of %d line anchors changed" % (DOC, changed, len(links)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/bin/sh
# End to end on real text: a corpus from the license texts every Debian
# system has, a tokenizer trained on it, 20 pretraining steps, determinism
# and resume, the other break mode and the pre-LN layout, embed, eval knn on
# a small label<TAB>text set, and bad input (ill-formed UTF-8, NUL bytes, an
# empty file, a corrupt vocab.json, a line without a label) named in a
# warning or an error, never a crash.
# usage: e2e_text.sh D2V_BINARY SOURCE_DIR WORK_DIR
set -eu
d2v=$1 src=$2 work=$3
licenses=/usr/share/common-licenses
if [ ! -r "$licenses/GPL-3" ] || [ ! -r "$licenses/Apache-2.0" ]; then
  echo "SKIP: $licenses (Debian's base-files) is missing"
  exit 77
fi
rm -rf "$work"
mkdir -p "$work/corpus"
fail() { echo "FAIL: $*"; exit 1; }
# An error is exit status 1 with its message; a crash exits above 128, a
# sanitizer leak report with 23.
no_crash() { [ "$1" -eq 1 ] || fail "$2: exit status $1, expected 1 (an error, not a crash or a sanitizer report)"; }

# Paragraphs of the license texts, one per line, blank lines between files.
for f in GPL-3 Apache-2.0 LGPL-3 MPL-2.0; do
  [ -r "$licenses/$f" ] || continue
  awk 'BEGIN { RS = ""; ORS = "\n" } { gsub(/[ \t\n]+/, " "); sub(/^ /, ""); print }' "$licenses/$f" \
    > "$work/corpus/$f.txt"
done
"$d2v" tokenizer train --vocab-size 600 --out "$work/tok" "$work/corpus"/*.txt 2> "$work/tok.err" \
  || { cat "$work/tok.err"; fail "tokenizer train"; }

# Two topics, a few sentences each; the test sentences are not in train.
cat > "$work/train.tsv" <<'EOF'
animal	the dog barked at the cat in the garden
animal	a horse and a cow stood in the field
animal	birds and fish and cats are animals
animal	the cat chased a small mouse
animal	a wolf is a wild dog of the forest
software	the program copies the source code of the library
software	you may modify the software and distribute copies
software	compile the source code and run the program
software	the license covers the code of the work
software	a library is code that programs link with
EOF
cat > "$work/test.tsv" <<'EOF'
animal	the cow and the horse ate grass
animal	a small dog ran after the cat
software	distribute the modified source code
software	the library links with the program
EOF

micro="$src/configs/text_micro.ini"
small="--set data.tokenizer=$work/tok --set data.vocab_size=0 --set train.batch_size=4 --set train.log_every=1
  --set train.threads=1"

# shellcheck disable=SC2086
"$d2v" pretrain "$micro" --data "$work/corpus" --run "$work/run" --set train.steps=20 --set train.save_every=10 \
  $small 2> "$work/pretrain.err" || { cat "$work/pretrain.err"; fail "pretrain exited non-zero"; }
[ "$(wc -l < "$work/run/log.jsonl")" -eq 20 ] || fail "log.jsonl should have 20 lines"
/usr/bin/python3 - "$work/run/log.jsonl" <<'PY' || fail "log values"
import json, math, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
assert [r["step"] for r in rows] == list(range(1, 21)), "steps"
for r in rows:
    for key in ("loss", "target_var", "pred_var", "frontend_var", "grad_norm", "lr", "tau"):
        assert math.isfinite(r[key]), (key, r)
    assert r["loss"] > 0 and r["target_var"] > 0 and r["masked"] > 0 and r["skipped"] == 0, r
PY
"$d2v" inspect "$work/run/last.safetensors" > "$work/inspect.out" || fail "inspect"
grep -q "frontend.tokens" "$work/inspect.out" && grep -q "frontend.pos" "$work/inspect.out" \
  && grep -q "head.fc2.weight" "$work/inspect.out" || fail "inspect lacks the embeddings or the MLP head"
! grep -q "frontend.embed_norm.weight" "$work/inspect.out" || fail "post-LN should use the Transformer's input norm, not its own"

# Same seed, same numbers; a resumed run continues the same curve.
# shellcheck disable=SC2086
"$d2v" pretrain "$micro" --data "$work/corpus" --run "$work/run_again" --set train.steps=20 \
  --set train.save_every=10 $small 2>/dev/null || fail "second run"
mkdir "$work/resumed"
cp "$work/run/checkpoint-00000010.safetensors" "$work/resumed/"
ln -s checkpoint-00000010.safetensors "$work/resumed/last.safetensors"
head -10 "$work/run/log.jsonl" > "$work/resumed/log.jsonl"
# shellcheck disable=SC2086
"$d2v" pretrain "$micro" --data "$work/corpus" --run "$work/resumed" --resume --set train.steps=20 \
  --set train.save_every=10 $small 2>/dev/null || fail "resume"
/usr/bin/python3 - "$work/run/log.jsonl" "$work/run_again/log.jsonl" "$work/resumed/log.jsonl" <<'PY' || fail "determinism or resume"
import json, sys
a, b, c = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:4])
assert a == b, ("same seed, different losses", a, b)
assert len(c) == 20 and a == c, ("the resumed run left the curve", a[10:], c[10:])
PY

# Full blocks across documents, BERT's masking (loss at every selected
# token), and the pre-LN layout, whose embedding gets its own layer norm.
# shellcheck disable=SC2086
"$d2v" pretrain "$micro" --data "$work/corpus" --run "$work/run_bert" --set train.steps=4 $small \
  --set data.break_mode=none --set mask.prob=0.15 --set mask.span=1 --set mask.random_prob=0.1 \
  --set mask.keep_prob=0.1 --set mask.loss=selected 2> "$work/bert.err" || { cat "$work/bert.err"; fail "BERT masking"; }
# shellcheck disable=SC2086
"$d2v" pretrain "$micro" --data "$work/corpus" --run "$work/run_preln" --set train.steps=4 $small \
  --set model.layout=pre_ln 2> "$work/preln.err" || { cat "$work/preln.err"; fail "pre-LN"; }
"$d2v" inspect "$work/run_preln/last.safetensors" | grep -q "frontend.embed_norm.weight" \
  || fail "pre-LN lacks the embedding layer norm"

"$d2v" embed --checkpoint "$work/run/last.safetensors" --data "$work/test.tsv" --out "$work/test.npy" 2>/dev/null \
  || fail "embed"
/usr/bin/python3 -c "
import numpy
f = numpy.load('$work/test.npy')
assert f.shape == (4, 128) and f.dtype == numpy.float32 and numpy.isfinite(f).all(), f.shape
rows = open('$work/test.npy.tsv').read().split('\n')
assert rows[1].startswith('0\tanimal\t') and rows[1].endswith('test.tsv:1'), rows[1]
" || fail "features"
"$d2v" eval knn --checkpoint "$work/run/last.safetensors" --train "$work/train.tsv" --test "$work/test.tsv" --k 3 \
  > "$work/knn.out" || fail "eval knn"
grep -q "^d2v eval knn top1=" "$work/knn.out" || fail "eval knn output"
# The config names its tokenizer relative to the working directory: from one
# without it, --random-init says which directory it could not read.
(cd "$work" && "$d2v" eval knn --random-init "$micro" --train train.tsv --test test.tsv --k 3 \
  > /dev/null 2> random.err) && fail "--random-init should need the config's tokenizer"
grep -q "data.tokenizer = data/text/tokenizer-4096" "$work/random.err" || fail "no tokenizer: $(cat "$work/random.err")"

# Bad input: files that are not text are skipped with a warning naming them
# and counted; ill-formed UTF-8 is repaired, kept, and reported by offset.
cp -r "$work/corpus" "$work/bad"
printf 'Some text\nand then bin\000ary\n' > "$work/bad/binary.txt"
: > "$work/bad/empty.txt"
printf 'caf\351 au lait\n' > "$work/bad/latin1.txt"
# shellcheck disable=SC2086
"$d2v" pretrain "$micro" --data "$work/bad" --run "$work/run_bad" --set train.steps=3 $small \
  2> "$work/bad.err" || { cat "$work/bad.err"; fail "bad input stopped the run"; }
grep -q "binary.txt: a NUL byte at byte offset 22 (line 2): not a text file (skipped)" "$work/bad.err" \
  || fail "the NUL byte is not reported: $(cat "$work/bad.err")"
grep -q "empty.txt: no text (an empty file) (skipped)" "$work/bad.err" || fail "the empty file is not reported"
grep -q "latin1.txt: 1 ill-formed UTF-8 sequence replaced by U+FFFD, the first at byte offset 3 (line 1)$" \
  "$work/bad.err" || fail "the ill-formed UTF-8 is not reported as repaired: $(cat "$work/bad.err")"
/usr/bin/python3 -c "
import json
rows = [json.loads(l) for l in open('$work/run_bad/log.jsonl')]
assert rows[0]['skipped'] == 2, rows[0]
" || fail "skipped files are not counted in the log"
# shellcheck disable=SC2086
"$d2v" pretrain "$micro" --data "$work/bad" --run "$work/run_fail" --set train.steps=3 $small \
  --set data.on_error=fail 2> "$work/fail.err" && fail "data.on_error=fail did not stop on a binary file"
grep -q "binary.txt: a NUL byte" "$work/fail.err" || fail "the error does not name the file: $(cat "$work/fail.err")"

set +e
# shellcheck disable=SC2086
"$d2v" pretrain "$micro" --data "$work/bad/empty.txt" --run "$work/run_empty" $small 2> "$work/empty.err"
rc=$?
no_crash $rc "an empty corpus"
[ $rc -ne 0 ] && grep -q "empty.txt: no usable text; the first problem: .*empty.txt: no text" "$work/empty.err" \
  || fail "an empty corpus: $(cat "$work/empty.err")"

cp -r "$work/tok" "$work/tok_bad"
printf '{"<s>": 0, "<pad>": 1, ' > "$work/tok_bad/vocab.json"
"$d2v" pretrain "$micro" --data "$work/corpus" --run "$work/run_vocab" --set data.tokenizer="$work/tok_bad" \
  --set data.vocab_size=0 2> "$work/vocab.err"
rc=$?
no_crash $rc "a corrupt vocab.json"
[ $rc -ne 0 ] && grep -q "tok_bad/vocab.json" "$work/vocab.err" || fail "a corrupt vocab.json: $(cat "$work/vocab.err")"
"$d2v" pretrain "$micro" --data "$work/corpus" --run "$work/run_size" --set data.tokenizer="$work/tok" \
  2> "$work/size.err"
rc=$?
no_crash $rc "a vocabulary size mismatch"
[ $rc -ne 0 ] && grep -q "data.vocab_size = 4096, but the tokenizer in .* has 600 tokens" "$work/size.err" \
  || fail "a vocabulary size mismatch: $(cat "$work/size.err")"

printf 'animal\tthe dog\nno label here\n' > "$work/nolabel.tsv"
"$d2v" eval knn --checkpoint "$work/run/last.safetensors" --train "$work/nolabel.tsv" --test "$work/test.tsv" \
  > /dev/null 2> "$work/nolabel.err"
rc=$?
no_crash $rc "a line without a label"
[ $rc -ne 0 ] && grep -q "nolabel.tsv:2: expected label<TAB>text, found no tab" "$work/nolabel.err" \
  || fail "a line without a label: $(cat "$work/nolabel.err")"
printf 'animal\tthe d\377g\n' > "$work/badlabel.tsv"
"$d2v" embed --checkpoint "$work/run/last.safetensors" --data "$work/badlabel.tsv" --out "$work/bad.npy" \
  2> "$work/badlabel.err"
rc=$?
no_crash $rc "ill-formed UTF-8 in an evaluation set"
[ $rc -ne 0 ] && grep -q "badlabel.tsv:1: ill-formed UTF-8 at byte offset 12" "$work/badlabel.err" \
  || fail "ill-formed UTF-8 in an evaluation set: $(cat "$work/badlabel.err")"
set -e

echo "1 passed, 0 failed"

#!/bin/sh
# Bad input, systematically (issue 7): generates every kind of malformed input
# docs/malformed_inputs.md lists — corrupt, truncated, zero-byte and
# mislabeled JPEG/WAV/FLAC files, wrong sample rates and channel counts,
# invalid UTF-8, NUL bytes, enormous lines, empty directories, unreadable
# files, symlink loops, hostile safetensors headers, broken vocab.json and
# merges.txt, bad configs — and runs the real d2v binary on each. Every case
# must end within 60 s, in bounded memory (ulimit -v 4 GB; under ASan its
# allocation limit instead), with the documented exit status (0: skipped and
# counted, or accepted; 1: stopped), no signal death, no sanitizer report, no
# stderr line over 1000 bytes, and one stderr line naming the file and the
# reason. Prints the Markdown table of cases (also WORK_DIR/table.md) and
# exits non-zero if any case failed, after running them all.
# usage: malformed_inputs.sh D2V_BINARY SOURCE_DIR WORK_DIR
set -u
d2v=$1 src=$2 work=$3
py=/usr/bin/python3
rm -rf "$work"
mkdir -p "$work/runs" "$work/gen"
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
table="$work/table.md"
started=$(date +%s)

# ASan reserves terabytes of address space, so ulimit -v cannot bound it;
# its own allocation limit does (an over-limit malloc is a sanitizer report).
if grep -aq __asan_init "$d2v"; then
  vlimit=
  ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}max_allocation_size_mb=4096"
  export ASAN_OPTIONS
else
  vlimit=4000000  # KiB
fi

# ---------------------------------------------------------------- the data
# Tiny valid datasets: 32x32 JPEGs, 1 s WAVs, a few lines of text; each case
# copies one of them and adds its bad item, so the bad item is drawn in the
# first epoch (2 steps x 2 = 4 draws from 3 files).
$py - "$work/gen" <<'PY' || { echo "FAIL: generating the data"; exit 1; }
import io, json, math, os, struct, sys, wave
import numpy as np
from PIL import Image
out = sys.argv[1]
rng = np.random.default_rng(7)
def path(name):
    os.makedirs(os.path.dirname(os.path.join(out, name)), exist_ok=True)
    return os.path.join(out, name)
def put(name, data):
    with open(path(name), "wb") as f:
        f.write(data)

def jpeg(w=32, h=32):
    b = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(b, "JPEG", quality=90)
    return b.getvalue()
for i in range(2):
    put(f"img/ok{i}.jpg", jpeg())
good = jpeg(64, 64)
put("bad/truncated.jpg", good[:len(good) // 2])
# the entropy-coded data after the SOS header overwritten with 0xFF runs
sos = good.index(b"\xff\xda")
scan = sos + 4 + struct.unpack(">H", good[sos + 2:sos + 4])[0]
put("bad/corrupt.jpg", good[:scan + 20] + b"\xff" * 400 + good[scan + 420:])
put("bad/text.jpg", b"this is a text file, not a JPEG\n")
b = io.BytesIO(); Image.new("RGB", (32, 32), (200, 10, 10)).save(b, "PNG")
put("bad/png.jpg", b.getvalue())
# a JPEG whose SOF0 declares 20000 x 20000 (a decompression bomb)
sof = good.index(b"\xff\xc0")
put("bad/bomb.jpg", good[:sof + 5] + struct.pack(">HH", 20000, 20000) + good[sof + 9:])

def wav(name, x, rate=16000, channels=1, width=2, nframes=None):
    b = io.BytesIO()
    with wave.open(b, "wb") as w:
        w.setnchannels(channels); w.setsampwidth(width); w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    put(name, b.getvalue())
    return b.getvalue()
def tone(n, f=220.0, rate=16000):
    t = np.arange(n) / rate
    return 0.3 * np.sin(2 * math.pi * f * t) + 0.05 * rng.standard_normal(n)
for i in range(2):
    wav(f"wav/ok{i}.wav", tone(16000, 200 + 80 * i))
w = wav("bad/ok.wav", tone(16000, 300))
put("bad/header_only.wav", w[:44])
# the header still claims 16000 frames; 4000 are there
put("bad/truncated.wav", w[:44 + 8000])
put("bad/text.wav", b"not audio at all\n" * 10)
put("bad/jpeg.wav", good)
wav("bad/rate500.wav", tone(500, 50, 500), rate=500)
wav("bad/ten_channels.wav", np.repeat(tone(16000), 10), channels=10)
wav("bad/silent.wav", np.zeros(16000))
wav("bad/stereo44k.wav", np.repeat(tone(44100, 300, 44100), 2), rate=44100, channels=2)
# 32-bit float WAV (WAVE_FORMAT_IEEE_FLOAT) holding NaN and infinity
x = tone(16000).astype("<f4"); x[100] = np.nan; x[200] = np.inf
data = x.tobytes()
fmt = struct.pack("<HHIIHH", 3, 1, 16000, 16000 * 4, 4, 32)
put("bad/nan.wav", b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
    + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)

sentences = ["the cat sat on the mat and looked at the dog",
             "a program copies the source code of the library",
             "birds and fish and cats are animals of the field",
             "you may modify the software and distribute copies"]
text = "".join(s + "\n" + ("\n" if i % 2 else "") for i, s in enumerate(sentences * 6))
put("txt/a.txt", text.encode())
put("txt/b.txt", text[::-1].strip().encode() + b"\n")
put("bad/invalid_utf8.txt", b"the cat \xff\xfe sat \xc3\x28 on \xed\xa0\x80 the mat\nand \xf8\x88\x80\x80\x80 more\n")
put("bad/nul.txt", b"the cat sat\x00 on the mat\n")
put("bad/huge_line.txt", b"abcdefgh " * (700 * 1024))  # 6.3 MB, one line
put("bad/huge_input.txt", b"x" * (8 << 20))  # 8 MB, one "word", no newline

# hostile safetensors files
def st(header, data=b"", length=None):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h) if length is None else length) + h + data
f32 = lambda n: b"\0" * (4 * n)
put("st/short.safetensors", b"\x10\0\0\0\0")
put("st/huge_len.safetensors", st(b"{}", length=2**64 - 1))
put("st/past_end.safetensors", st(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32(1), length=1 << 40))
put("st/not_json.safetensors", st(b"this is not JSON at all", f32(1)))
put("st/out_of_range.safetensors", st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 4096]}}, f32(4)))
put("st/overlap.safetensors", st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                  "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, f32(6)))
put("st/dtype_size.safetensors", st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, f32(2)))
put("st/trailing.safetensors", st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, f32(2) + b"xyz"))
put("st/unknown_dtype.safetensors", st({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, f32(2)))
put("st/shape_overflow.safetensors", st({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, f32(2)))
put("st/newline_name.safetensors", st({"a\nb": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, f32(1)))
PY

# A tokenizer and a valid text checkpoint for the tokenizer, resume and eval
# cases.
"$d2v" tokenizer train --vocab-size 320 --out "$work/gen/tok" "$work/gen/txt/a.txt" 2> "$work/gen/tok.err" \
  || { cat "$work/gen/tok.err"; echo "FAIL: tokenizer train"; exit 1; }
img="$src/configs/image_micro.ini" speech="$src/configs/speech_micro.ini" text="$src/configs/text_micro.ini"
tiny="--set train.steps=2 --set train.batch_size=2 --set train.threads=1 --set train.log_every=1"
ttiny="$tiny --set data.tokenizer=$work/gen/tok --set data.vocab_size=0"

# ----------------------------------------------------------- the harness
n=0 failed=0
printf '| # | input | command | behaviour (exit, message) |\n|---|---|---|---|\n' | tee "$table"
# Every check's directory is $work/c/N; `skipped=1` before a check also asks
# that the run's log.jsonl count a skipped input.
skipped=0 stdout_has=
newcase() { n=$((n + 1)); c="$work/c/$n"; mkdir -p "$c"; }
dataset() {  # dataset KIND: a fresh copy of the good files of KIND in $c/data
  mkdir -p "$c/data"; cp "$work/gen/$1"/* "$c/data/"
}
md() {  # a message as a table cell: WORK for the work directory, | escaped
  printf '%s' "$1" | awk -v w="$work" '{ while ((i = index($0, w)) > 0) $0 = substr($0, 1, i - 1) "WORK" substr($0, i + length(w)); print }' \
    | sed 's/|/\\|/g; s/`/'"'"'/g' | cut -c1-300
}
# check INPUT COMMAND_TEXT EXPECT NAME REASON -- ARGS...
#   EXPECT: 0, 1 or nz (1 to 127); NAME: a fixed string the message line must
#   hold (empty: no message needed); REASON: an extended regex (case
#   insensitive) on that same line.
check() {
  input=$1 what=$2 expect=$3 name=$4 reason=$5; shift 6
  problems=
  (
    # shellcheck disable=SC3045  # dash and bash have ulimit -v
    if [ -n "$vlimit" ]; then ulimit -v "$vlimit"; fi
    exec timeout 60 "$@"
  ) > "$c/stdout" 2> "$c/stderr" < /dev/null
  rc=$?
  case $expect in
    nz) [ "$rc" -ge 1 ] && [ "$rc" -lt 124 ] || problems="$problems exit $rc, expected 1-123;" ;;
    *) [ "$rc" -eq "$expect" ] || problems="$problems exit $rc, expected $expect;" ;;
  esac
  [ "$rc" -eq 124 ] && problems="$problems timed out (60 s);"
  [ "$rc" -ge 125 ] && problems="$problems killed by a signal or failed to run;"
  if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: UndefinedBehaviorSanitizer|Segmentation fault|Aborted' "$c/stderr"; then
    problems="$problems sanitizer report or crash;"
  fi
  if awk 'length($0) > 1000 { bad = 1 } END { exit !bad }' "$c/stderr"; then
    problems="$problems a stderr line over 1000 bytes;"
  fi
  line=
  if [ -n "$name" ] || [ -n "$reason" ]; then
    line=$(grep -F -- "$name" "$c/stderr" | grep -iE -- "$reason" | head -1)
    [ -n "$line" ] || problems="$problems no stderr line names '$name' with /$reason/;"
    # the message is one line: no other line repeats the name (a multi-line
    # message, or a warning printed once per draw)
    if [ -n "$name" ] && [ "$(grep -cF -- "$name" "$c/stderr")" -gt 1 ]; then
      problems="$problems '$name' on $(grep -cF -- "$name" "$c/stderr") stderr lines;"
    fi
  fi
  if [ "$skipped" = 1 ]; then
    $py -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sys.exit(0 if rows and rows[-1]['skipped'] >= 1 else 1)" "$c/run/log.jsonl" 2>/dev/null \
      || problems="$problems the skip is not counted in log.jsonl;"
  fi
  skipped=0
  if [ -n "$stdout_has" ]; then
    grep -qF -- "$stdout_has" "$c/stdout" || problems="$problems stdout lacks '$stdout_has';"
    line=$(grep -F -- "$stdout_has" "$c/stdout" | head -1)
  fi
  stdout_has=
  if [ -z "$problems" ]; then
    verdict="exit $rc"
  else
    verdict="**FAIL**:$problems exit $rc"
    failed=$((failed + 1))
  fi
  [ -n "$line" ] && verdict="$verdict; \`$(md "$line")\`"
  [ -z "$line" ] && [ "$rc" -eq 0 ] && verdict="$verdict; accepted, trained/ran without a message"
  printf '| %d | %s | %s | %s |\n' "$n" "$input" "$what" "$verdict" | tee -a "$table"
  if [ -n "$problems" ]; then sed 's/^/    stderr: /' "$c/stderr" | head -20; fi
}
# pretrain_case CONFIG_PATH EXTRA_SETS... : the usual tiny run on $c/data
skip_set="--set data.on_error=skip"
fail_set="--set data.on_error=fail"

# ---------------------------------------------------------------- images
image_case() {  # image_case INPUT FILE MODE REASON  (the bad file is $c/data/FILE)
  input=$1 file=$2 mode=$3 reason=$4
  if [ "$mode" = skip ]; then
    skipped=1
    # shellcheck disable=SC2086
    check "$input" "pretrain image, on_error=skip" 0 "$file" "$reason" -- \
      "$d2v" pretrain "$img" --data "$c/data" --run "$c/run" $tiny $skip_set
  else
    # shellcheck disable=SC2086
    check "$input" "pretrain image, on_error=fail" 1 "$file" "$reason" -- \
      "$d2v" pretrain "$img" --data "$c/data" --run "$c/run" $tiny $fail_set
  fi
}
newcase; dataset img; : > "$c/data/empty.jpg"
image_case "zero-byte .jpg" empty.jpg skip "empty"
newcase; dataset img; cp "$work/gen/bad/truncated.jpg" "$c/data/"
image_case "truncated JPEG (second half cut)" truncated.jpg skip "truncated|premature"
newcase; dataset img; cp "$work/gen/bad/truncated.jpg" "$c/data/"
image_case "truncated JPEG" truncated.jpg fail "truncated|premature"
newcase; dataset img; cp "$work/gen/bad/corrupt.jpg" "$c/data/"
image_case "corrupt JPEG (0xFF run in the scan)" corrupt.jpg skip "corrupt|invalid|bogus|JPEG"
newcase; dataset img; cp "$work/gen/bad/text.jpg" "$c/data/"
image_case "text file named .jpg" text.jpg skip "not a (valid )?JPEG"
newcase; dataset img; cp "$work/gen/bad/png.jpg" "$c/data/"
image_case "PNG named .jpg (mislabeled)" png.jpg skip "not a JPEG"
newcase; dataset img; cp "$work/gen/bad/ok.wav" "$c/data/wave.jpg"
image_case "WAV named .jpg (mislabeled)" wave.jpg fail "not a JPEG"
newcase; dataset img; cp "$work/gen/bad/bomb.jpg" "$c/data/"
image_case "JPEG header declaring 20000 x 20000 (decompression bomb)" bomb.jpg skip "megapixel"
manifest_case() {  # manifest_case INPUT EXPECT NAME REASON: --data $c/data/list.txt
  [ "$2" = 0 ] && skipped=1
  # shellcheck disable=SC2086
  check "$1" "pretrain image, --data MANIFEST" "$2" "$3" "$4" -- \
    "$d2v" pretrain "$img" --data "$c/data/list.txt" --run "$c/run" $tiny
}
newcase; dataset img; mkfifo "$c/data/fifo.jpg"; printf 'ok0.jpg\nok1.jpg\nfifo.jpg\n' > "$c/data/list.txt"
manifest_case "FIFO named .jpg listed in a manifest (used to block in open())" 0 fifo.jpg "not a regular file"
newcase; dataset img; mkfifo "$c/data/fifo.jpg"
# shellcheck disable=SC2086
check "FIFO named .jpg in a data directory (the scan lists regular files only)" "pretrain image" 0 "" "" -- \
  "$d2v" pretrain "$img" --data "$c/data" --run "$c/run" $tiny
newcase; dataset img; printf 'ok0.jpg\nok1.jpg\ngone.jpg\n' > "$c/data/list.txt"
manifest_case "manifest listing a missing file" 0 gone.jpg "no such file"
newcase; dataset img; printf 'ok0.jpg\nok1\000.jpg\n' > "$c/data/list.txt"
manifest_case "manifest with a NUL byte" 1 "list.txt:2" "NUL"
newcase; dataset img; { echo ok0.jpg; head -c 5000 /dev/zero | tr '\0' a; echo .jpg; } > "$c/data/list.txt"
manifest_case "manifest with a 5000-byte line" 1 "list.txt:2" "long|bytes"
newcase; dataset img; mkdir "$c/data/dir.jpg"; cp "$work/gen/img/ok0.jpg" "$c/data/dir.jpg/inner.jpg"
# a directory with a data extension is searched, not read
# shellcheck disable=SC2086
check "directory named dir.jpg (holding a JPEG)" "pretrain image" 0 "" "" -- \
  "$d2v" pretrain "$img" --data "$c/data" --run "$c/run" $tiny
newcase; dataset img; cp "$work/gen/img/ok0.jpg" "$c/data/locked.jpg"; chmod 000 "$c/data/locked.jpg"
if [ "$(id -u)" -eq 0 ]; then
  # root reads every file: run as nobody, who cannot
  chmod 777 "$c"; chmod -R a+rX "$c/data"; chmod 000 "$c/data/locked.jpg"
  skipped=1
  # shellcheck disable=SC2086
  check "unreadable .jpg (chmod 000; run as nobody)" "pretrain image, on_error=skip" 0 locked.jpg "permission denied" -- \
    setpriv --reuid=65534 --regid=65534 --clear-groups "$d2v" pretrain "$img" --data "$c/data" --run "$c/run" $tiny
else
  image_case "unreadable .jpg (chmod 000)" locked.jpg skip "permission denied"
fi
newcase; dataset img; mkdir -p "$c/data/a"; ln -s .. "$c/data/a/loop"; ln -s loop2 "$c/data/loop1"; ln -s loop1 "$c/data/loop2"
# shellcheck disable=SC2086
check "symlink loops in the data directory (a/loop -> .., loop1 <-> loop2)" "pretrain image" 0 "" "" -- \
  "$d2v" pretrain "$img" --data "$c/data" --run "$c/run" $tiny
newcase; dataset img; ln -s missing.jpg "$c/data/dangling.jpg"
# shellcheck disable=SC2086
check "dangling symlink named .jpg" "pretrain image" 1 "dangling.jpg" "no such file" -- \
  "$d2v" pretrain "$img" --data "$c/data" --run "$c/run" $tiny
newcase; mkdir -p "$c/data/sub"
# shellcheck disable=SC2086
check "empty data directory" "pretrain image" 1 "$c/data" "no .*\.jpg|empty" -- \
  "$d2v" pretrain "$img" --data "$c/data" --run "$c/run" $tiny
newcase; mkdir -p "$c/data"; cp "$work/gen/bad/text.jpg" "$work/gen/bad/png.jpg" "$c/data/"
# shellcheck disable=SC2086
check "every file bad (text.jpg, png.jpg)" "pretrain image, on_error=skip" 1 "png.jpg" "no usable file in the whole dataset" -- \
  "$d2v" pretrain "$img" --data "$c/data" --run "$c/run" $tiny

# ---------------------------------------------------------------- audio
audio_case() {  # audio_case INPUT FILE MODE EXPECT REASON
  input=$1 file=$2 mode=$3 expect=$4 reason=$5
  [ "$mode" = skip ] && [ "$expect" = 0 ] && [ -n "$reason" ] && skipped=1
  # shellcheck disable=SC2086
  check "$input" "pretrain speech, on_error=$mode" "$expect" "${reason:+$file}" "$reason" -- \
    "$d2v" pretrain "$speech" --data "$c/data" --run "$c/run" $tiny --set data.on_error=$mode
}
newcase; dataset wav; : > "$c/data/empty.wav"
audio_case "zero-byte .wav" empty.wav skip 0 "empty file"
newcase; dataset wav; cp "$work/gen/bad/header_only.wav" "$c/data/"
audio_case "WAV header only (44 bytes)" header_only.wav skip 0 "empty"
newcase; mkdir -p "$c/data"; cp "$work/gen/bad/text.wav" "$work/gen/bad/silent.wav" "$c/data/"
# shellcheck disable=SC2086
check "every file bad (text.wav, silent.wav)" "pretrain speech, on_error=skip" 1 "silent.wav" "no usable file in the whole dataset" -- \
  "$d2v" pretrain "$speech" --data "$c/data" --run "$c/run" $tiny
if [ "$(id -u)" -eq 0 ]; then
  newcase; dataset wav; cp "$work/gen/bad/ok.wav" "$c/data/locked.wav"
  chmod 777 "$c"; chmod -R a+rX "$c/data"; chmod 000 "$c/data/locked.wav"
  skipped=1
  # shellcheck disable=SC2086
  check "unreadable .wav (chmod 000; run as nobody)" "pretrain speech, on_error=skip" 0 locked.wav "permission denied" -- \
    setpriv --reuid=65534 --regid=65534 --clear-groups "$d2v" pretrain "$speech" --data "$c/data" --run "$c/run" $tiny
fi
newcase; dataset wav; cp "$work/gen/bad/truncated.wav" "$c/data/"
audio_case "truncated WAV (header claims 16000 frames, 4000 there)" truncated.wav skip 0 ""
newcase; dataset wav; cp "$work/gen/bad/text.wav" "$c/data/"
audio_case "text file named .wav" text.wav skip 0 "cannot open audio"
newcase; dataset wav; cp "$work/gen/bad/jpeg.wav" "$c/data/"
audio_case "JPEG named .wav (mislabeled)" jpeg.wav fail 1 "cannot open audio"
newcase; dataset wav; cp "$work/gen/bad/rate500.wav" "$c/data/"
audio_case "sample rate 500 Hz" rate500.wav skip 0 "sample rate 500"
newcase; dataset wav; cp "$work/gen/bad/rate500.wav" "$c/data/"
audio_case "sample rate 500 Hz" rate500.wav fail 1 "sample rate 500"
newcase; dataset wav; cp "$work/gen/bad/ten_channels.wav" "$c/data/"
audio_case "10 channels" ten_channels.wav skip 0 "10 channels"
newcase; dataset wav; cp "$work/gen/bad/stereo44k.wav" "$c/data/"
audio_case "44.1 kHz stereo WAV (other rate and channel count: resampled, mixed down)" stereo44k.wav skip 0 ""
newcase; dataset wav; cp "$work/gen/bad/silent.wav" "$c/data/"
audio_case "silent WAV (all zeros)" silent.wav skip 0 "silent"
newcase; dataset wav; cp "$work/gen/bad/nan.wav" "$c/data/"
audio_case "float WAV holding NaN and infinity" nan.wav skip 0 "NaN|infinite"
if command -v sox > /dev/null; then
  sox "$work/gen/bad/ok.wav" "$work/gen/bad/ok.flac"
  newcase; dataset wav; head -c 3000 "$work/gen/bad/ok.flac" > "$c/data/truncated.flac"
  audio_case "truncated FLAC (first 3000 bytes)" truncated.flac skip 0 ""
  newcase; dataset wav
  $py -c "import sys; d = bytearray(open(sys.argv[1], 'rb').read()); d[200:] = bytes(len(d) - 200); open(sys.argv[2], 'wb').write(d)" \
    "$work/gen/bad/ok.flac" "$c/data/corrupt.flac"
  audio_case "corrupt FLAC (frames zeroed after byte 200)" corrupt.flac skip 0 "corrupt|empty|silent|cannot|error|decod"
  newcase; dataset wav; head -c 40 "$work/gen/bad/ok.flac" > "$c/data/header.flac"
  audio_case "FLAC cut inside STREAMINFO (40 bytes)" header.flac fail 1 "cannot open audio|empty"
  newcase; dataset wav; cp "$work/gen/bad/ok.flac" "$c/data/flac.wav"
  audio_case "FLAC named .wav (mislabeled; the format is probed from the content)" flac.wav fail 0 ""
fi

# ---------------------------------------------------------------- text
text_case() {  # text_case INPUT FILE MODE EXPECT REASON
  input=$1 file=$2 mode=$3 expect=$4 reason=$5
  [ "$mode" = skip ] && [ "$expect" = 0 ] && skipped=${6:-1}
  # shellcheck disable=SC2086
  check "$input" "pretrain text, on_error=$mode" "$expect" "${reason:+$file}" "$reason" -- \
    "$d2v" pretrain "$text" --data "$c/data" --run "$c/run" $ttiny --set data.on_error=$mode
}
newcase; dataset txt; cp "$work/gen/bad/invalid_utf8.txt" "$c/data/"
text_case "invalid UTF-8 (0xFF, overlong, surrogate, 5-byte form) in a .txt" invalid_utf8.txt skip 0 "UTF-8.*byte|byte.*UTF-8" 0
newcase; dataset txt; cp "$work/gen/bad/nul.txt" "$c/data/"
text_case "NUL byte in a .txt" nul.txt skip 0 "NUL"
newcase; dataset txt; cp "$work/gen/bad/nul.txt" "$c/data/"
text_case "NUL byte in a .txt" nul.txt fail 1 "NUL"
newcase; dataset txt; : > "$c/data/empty.txt"
text_case "zero-byte .txt" empty.txt skip 0 "empty"
newcase; dataset txt; cp "$work/gen/bad/huge_line.txt" "$c/data/"
text_case "6 MB line (700k words, no newline)" huge_line.txt skip 0 "" 0
newcase; mkdir -p "$c/data"; cp "$work/gen/bad/nul.txt" "$c/data/"; : > "$c/data/empty.txt"
# shellcheck disable=SC2086
check "every file bad (nul.txt, empty.txt)" "pretrain text, on_error=skip" 1 "" "no (usable|text)|every|all" -- \
  "$d2v" pretrain "$text" --data "$c/data" --run "$c/run" $ttiny
newcase; mkdir -p "$c/data"
# shellcheck disable=SC2086
check "empty text directory" "pretrain text" 1 "$c/data" "no .*\.txt|empty" -- \
  "$d2v" pretrain "$text" --data "$c/data" --run "$c/run" $ttiny

# ------------------------------------------------------------- tokenizer
tok() {  # a copy of the good tokenizer in $c/tok
  mkdir -p "$c/tok"; cp "$work/gen/tok"/* "$c/tok/"
}
tok_case() {  # tok_case INPUT FILE REASON
  check "$1" "tokenizer encode --tokenizer DIR" 1 "$2" "$3" -- \
    "$d2v" tokenizer encode --tokenizer "$c/tok" "$work/gen/txt/a.txt"
}
newcase; tok; head -c 100 "$work/gen/tok/vocab.json" > "$c/tok/vocab.json"
tok_case "vocab.json truncated (first 100 bytes)" vocab.json "json|end of|truncated"
newcase; tok; echo '["a", "b"]' > "$c/tok/vocab.json"
tok_case "vocab.json an array, not an object" vocab.json "object"
newcase; tok; : > "$c/tok/vocab.json"
tok_case "vocab.json zero bytes" vocab.json "empty|json"
newcase; tok; $py -c "
import sys; p = sys.argv[1]; s = open(p, encoding='utf-8').read().rstrip().rstrip('}')
open(p, 'w', encoding='utf-8').write(s + ', \"zzz-dup\": 5}\n')" "$c/tok/vocab.json"
tok_case "vocab.json with a duplicate id" vocab.json "duplicate|twice|both"
newcase; tok; $py -c "
import sys; p = sys.argv[1]; s = open(p, encoding='utf-8').read().rstrip().rstrip('}')
open(p, 'w', encoding='utf-8').write(s + ', \"zzz-big\": 99999999}\n')" "$c/tok/vocab.json"
tok_case "vocab.json with an id out of range" vocab.json "range|id|gap"
newcase; tok; rm "$c/tok/vocab.json"
tok_case "vocab.json missing" vocab.json "no such file"
newcase; tok; printf '#version: 0.2\na b c\n' > "$c/tok/merges.txt"
tok_case "merges.txt line with three parts" "merges.txt:2" "two|parts|expected"
newcase; tok; printf '#version: 0.2\na \000b\n' > "$c/tok/merges.txt"
tok_case "merges.txt with a NUL byte" "merges.txt" "NUL"
newcase; tok; { echo '#version: 0.2'; head -c 20000 /dev/zero | tr '\0' a; echo ' b'; } > "$c/tok/merges.txt"
tok_case "merges.txt with a 20000-byte line" "merges.txt:2" "long|bytes"
newcase; tok; printf '#version: 0.2\nqqqqq zzzzz\n' > "$c/tok/merges.txt"
tok_case "merges.txt naming a token not in vocab.json" "merges.txt:2" "unknown|not in|vocab"
newcase; tok
check "invalid UTF-8 input to encode" "tokenizer encode --tokenizer DIR" 0 "invalid_utf8.txt" "UTF-8" -- \
  "$d2v" tokenizer encode --tokenizer "$c/tok" "$work/gen/bad/invalid_utf8.txt"
newcase; tok
check "NUL bytes in the input to encode" "tokenizer encode --tokenizer DIR" 0 "" "" -- \
  "$d2v" tokenizer encode --tokenizer "$c/tok" "$work/gen/bad/nul.txt"
newcase; tok
check "8 MB input without a space or newline" "tokenizer encode --tokenizer DIR --count-only" 0 "" "" -- \
  "$d2v" tokenizer encode --tokenizer "$c/tok" --count-only "$work/gen/bad/huge_input.txt"

# ----------------------------------------------------------- safetensors
st_case() {  # st_case INPUT FILE REASON
  check "$1" "inspect FILE" 1 "$2" "$3" -- "$d2v" inspect "$work/gen/st/$2"
}
newcase; : > "$work/gen/st/empty.safetensors"
st_case "zero-byte .safetensors" empty.safetensors "too short|empty|0 bytes"
newcase; st_case "5-byte .safetensors" short.safetensors "too short|5 bytes"
newcase; st_case "header length 2^64 - 1" huge_len.safetensors "header"
newcase; st_case "header length 2^40, past the end of the file" past_end.safetensors "header|end|bytes"
newcase; st_case "header not JSON" not_json.safetensors "JSON"
newcase; st_case "data_offsets out of range" out_of_range.safetensors "4096|range|end|beyond"
newcase; st_case "overlapping data_offsets" overlap.safetensors "overlap"
newcase; st_case "wrong size for the dtype (F32 [4] in 8 bytes)" dtype_size.safetensors "8|16|size"
newcase; st_case "3 trailing bytes" trailing.safetensors "trailing"
newcase; st_case "unknown dtype Q7" unknown_dtype.safetensors "dtype"
newcase; st_case "shape 2^40 x 2^40 (overflows 64 bits)" shape_overflow.safetensors "overflow"
newcase; stdout_has="  a?b "
check "tensor name holding a newline (valid safetensors)" "inspect FILE" 0 "" "" -- \
  "$d2v" inspect "$work/gen/st/newline_name.safetensors"
newcase; mkfifo "$c/fifo.safetensors"
check "FIFO given as a checkpoint" "inspect FILE" 1 "fifo.safetensors" "pipe|regular" -- \
  "$d2v" inspect "$c/fifo.safetensors"
newcase; mkdir -p "$c/run"; cp "$work/gen/st/not_json.safetensors" "$c/run/checkpoint-00000002.safetensors"
ln -s checkpoint-00000002.safetensors "$c/run/last.safetensors"
# shellcheck disable=SC2086
check "--resume onto a checkpoint whose header is not JSON" "pretrain image --resume" 1 "checkpoint-00000002.safetensors" "JSON" -- \
  "$d2v" pretrain "$img" --data "$work/gen/img" --run "$c/run" --resume $tiny
newcase; mkdir -p "$c/train/a" "$c/train/b"; cp "$work/gen/img/ok0.jpg" "$c/train/a/"; cp "$work/gen/img/ok1.jpg" "$c/train/b/"
check "eval with an overlapping-offsets checkpoint" "eval knn --checkpoint FILE" 1 "overlap.safetensors" "overlap" -- \
  "$d2v" eval knn --checkpoint "$work/gen/st/overlap.safetensors" --train "$c/train" --test "$c/train"

# ---------------------------------------------------------------- configs
conf_case() {  # conf_case INPUT SED_SCRIPT APPEND NAME REASON
  sed "$2" "$img" > "$c/bad.ini"
  [ -n "$3" ] && printf '%b' "$3" >> "$c/bad.ini"
  # shellcheck disable=SC2086
  check "$1" "pretrain bad.ini" 1 "$4" "$5" -- \
    "$d2v" pretrain "$c/bad.ini" --data "$work/gen/img" --run "$c/run" $tiny
}
newcase; conf_case "unknown key dimm" 's/^dim = 128$/dimm = 128/' "" "bad.ini:" "unknown key.*dimm"
newcase; conf_case "unknown section [modle]" 's/^x//' '\n[modle]\ndim = 64\n' "bad.ini:" "unknown.*modle"
newcase; conf_case "duplicate key (a second [model] block setting dim)" 's/^x//' '\n[model]\ndim = 64\n' "bad.ini:" "duplicate.*dim"
newcase; conf_case "wrong type: dim = abc" 's/^dim = 128$/dim = abc/' "" "bad.ini:" "integer"
newcase; conf_case "wrong type: lr = nan" 's/^lr = 0.001$/lr = nan/' "" "bad.ini:" "number|expected"
newcase; conf_case "wrong choice: on_error = maybe" 's/^on_error = skip$/on_error = maybe/' "" "bad.ini:" "skip.*fail|fail.*skip|expected"
newcase; conf_case "out of range: dim = 4" 's/^dim = 128$/dim = 4/' "" "bad.ini:" "\[8, 65536\]|range"
newcase; conf_case "inconsistent: heads = 5 with dim = 128" 's/^heads = 4$/heads = 5/' "" "heads" "divisible|multiple"
newcase; conf_case "a 10000-byte line" 's/^x//' "\n[model]\ndim = $(printf '%010000d' 1)\n" "bad.ini:" "long|bytes|line"
newcase; conf_case "NUL byte in a line" 's/^x//' '\n[model]\nfoo\000 = 1\n' "bad.ini:" "NUL|unknown|expected|key"
newcase; conf_case "text that is not key = value" 's/^x//' '\n[model]\njust some words\n' "bad.ini:" "expected|key|value"
newcase
# shellcheck disable=SC2086
check "--set train.threads=1025 (out of range)" "pretrain --set" 1 "train.threads" "range|\[|expected" -- \
  "$d2v" pretrain "$img" --data "$work/gen/img" --run "$c/run" $tiny --set train.threads=1025
newcase
# shellcheck disable=SC2086
check "--set train.steps (no =)" "pretrain --set" 1 "train.steps" "section.key=value|=" -- \
  "$d2v" pretrain "$img" --data "$work/gen/img" --run "$c/run" $tiny --set train.steps
newcase
# shellcheck disable=SC2086
check "config file missing" "pretrain missing.ini" 1 "missing.ini" "no such file" -- \
  "$d2v" pretrain "$c/missing.ini" --data "$work/gen/img" --run "$c/run" $tiny

elapsed=$(( $(date +%s) - started ))
echo
echo "$n cases, $failed failed, ${elapsed} s"
[ "$n" -ge 35 ] || { echo "FAIL: only $n cases"; exit 1; }
[ "$failed" -eq 0 ]

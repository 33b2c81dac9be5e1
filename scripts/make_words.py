#!/usr/bin/python3
"""Build the speech demo set: short spoken words synthesised by espeak-ng,
written as OUT/{train,test}/<word>/NNNN.wav (16 kHz, mono, 16-bit PCM, 1 s),
with OUT/train.tsv, OUT/test.tsv and OUT/classes.txt beside them.

    /usr/bin/python3 scripts/make_words.py --out data/words
    /usr/bin/python3 scripts/make_words.py --out data/words20 --vocab digits+commands

Why it looks like this
----------------------
The set exists to check that a data2vec speech encoder learns something that
transfers, so a frozen-feature k-NN on it must not be trivially easy:

* Only Debian packages (espeak-ng, sox, numpy) are used, so CI and every
  developer machine can rebuild it from nothing; no recordings are shipped.
* A formant synthesiser says a word almost identically every time, so each
  clip varies what a real recording would: the "speaker" (an English accent
  voice joined to one of espeak-ng's voice variants, e.g. en-gb-x-rp+f3),
  speaking rate, base pitch, where in the second the word falls, background
  noise level and loudness.
* The test speakers are new in two ways: their accents are not used in
  training at all, and neither are their voice variants. An encoder that
  merely memorises voices therefore gains nothing on the test split.
* Every clip is 1 s at 16 kHz, the format of the Speech Commands set, so a
  batch needs no padding and the same front end serves real recordings later.
* Every random draw for a clip comes from its own generator, seeded with
  "seed:split:word:n", so changing one count does not reshuffle the speakers,
  rates or noise of the other clips. Rebuilding with the same options gives
  bit-identical files because espeak-ng is always called in the same order:
  the synthesiser keeps internal state from one word to the next (the same
  call twice gives slightly different samples, and re-initialising does not
  reset it), so a clip's samples shift a little if the clips before it change.

espeak-ng is called through libespeak-ng.so.1 with ctypes rather than once per
clip as a program, which is what makes the default 1500 clips take seconds.
sox does the one step numpy has no good tool for: band-limited resampling from
espeak-ng's 22050 Hz to 16 kHz; many clips go through one sox process at once.

TSV columns: relative path, label, speaker, rate (wpm), pitch (0-100),
noise (SNR in dB, or "clean").
Licences: espeak-ng is GPL-3+, sox GPL-2+; the generated audio carries neither.
"""
import argparse
import ctypes
import os
import random
import re
import shutil
import subprocess
import sys
import time
import wave
import zlib

import numpy as np

VOCABULARIES = {
    "digits": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "commands": ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"],
}
VOCABULARIES["digits+commands"] = VOCABULARIES["digits"] + VOCABULARIES["commands"]

# English accents built into espeak-ng (no mbrola voices: those need extra packages).
TRAIN_ACCENTS = ["en-us", "en", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc"]
TEST_ACCENTS = ["en-gb-scotland", "en-029"]
VARIANT_DIR = "/usr/lib/x86_64-linux-gnu/espeak-ng-data/voices/!v"

RATE_WPM = (130, 210)
PITCH = (20, 80)
SNR_DB = (10.0, 40.0)
CLEAN_FRACTION = 0.2          # some clips with no added noise at all
GAIN_DB = (-12.0, 0.0)
OUT_RATE = 16000
CLIP_SECONDS = 1
CLIPS_PER_SOX_CALL = 400      # bounds the memory a single sox pipe holds
INSTALL_HINT = "apt-get install espeak-ng sox"


def die(message):
    sys.exit(f"make_words.py: {message}")


def is_test_variant(name):
    # Hashing the name instead of using its position in the listing keeps
    # each variant on the same side even if a newer espeak-ng adds variants.
    return zlib.crc32(name.encode()) % 4 == 0


class Synth:
    """espeak-ng's C API, synchronous mode: espeak_Synth returns once the
    callback has received every sample, so one thread gives a fixed order of
    calls, which reproducible audio depends on (see the module docstring)."""

    AUDIO_OUTPUT_SYNCHRONOUS = 2
    INITIALIZE_DONT_EXIT = 0x8000
    PARAM_RATE, PARAM_PITCH = 1, 3
    POS_CHARACTER = 1
    CHARS_UTF8 = 1

    def __init__(self):
        try:
            lib = ctypes.CDLL("libespeak-ng.so.1")
        except OSError:
            die(f"libespeak-ng.so.1 not found: {INSTALL_HINT}")
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.lib = lib
        self.chunks = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short),
                                         ctypes.c_int, ctypes.c_void_p)
        # Held on self: if ctypes freed the thunk, espeak-ng would call freed memory.
        self.callback = callback_type(self._collect)
        self.rate = lib.espeak_Initialize(self.AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                          self.INITIALIZE_DONT_EXIT)
        if self.rate <= 0:
            die(f"espeak-ng could not start (no espeak-ng-data?): {INSTALL_HINT}")
        lib.espeak_SetSynthCallback(self.callback)

    def _collect(self, samples, count, events):
        if samples and count > 0:
            self.chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0

    def has_voice(self, voice):
        return self.lib.espeak_SetVoiceByName(voice.encode()) == 0

    def say(self, word, voice, rate, pitch):
        """The word as float32 samples in [-1, 1) at self.rate."""
        if not self.has_voice(voice):
            die(f"espeak-ng has no voice {voice}")
        # Set after the voice: choosing a voice resets rate and pitch.
        self.lib.espeak_SetParameter(self.PARAM_RATE, rate, 0)
        self.lib.espeak_SetParameter(self.PARAM_PITCH, pitch, 0)
        self.chunks = []
        text = word.encode()
        self.lib.espeak_Synth(text, len(text) + 1, 0, self.POS_CHARACTER, 0, self.CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if not self.chunks:
            die(f"espeak-ng produced no audio for {word!r} with {voice}")
        return np.concatenate(self.chunks).astype(np.float32) / 32768.0


def speaker_pools(synth):
    """(train speakers, test speakers): accent+variant names, disjoint in both parts."""
    if not os.path.isdir(VARIANT_DIR):
        die(f"{VARIANT_DIR} missing: {INSTALL_HINT}")
    variants = sorted(os.listdir(VARIANT_DIR))
    # Skip names with a space ("Mr serious") so a speaker id is one token
    # for tools that split the TSV columns on whitespace. (No check that a
    # variant loads: espeak-ng silently falls back to the plain accent.)
    usable = [v for v in variants if " " not in v]
    pools = {"train": [], "test": []}
    for split, accents in (("train", TRAIN_ACCENTS), ("test", TEST_ACCENTS)):
        for accent in accents:
            if not synth.has_voice(accent):
                die(f"espeak-ng has no voice {accent}: {INSTALL_HINT}")
            pools[split] += [f"{accent}+{v}" for v in usable if is_test_variant(v) == (split == "test")]
    return pools["train"], pools["test"]


def trim_silence(x, rate, floor_db=-35.0):
    """Cut leading and trailing silence: espeak-ng pads words unevenly, and the
    padding would otherwise eat into the room for a random placement."""
    block = rate // 200                        # 5 ms
    n = len(x) // block
    if n == 0:
        return x
    level = np.abs(x[:n * block]).reshape(n, block).max(axis=1)
    loud = np.flatnonzero(level >= level.max() * 10 ** (floor_db / 20))
    return x[loud[0] * block:(loud[-1] + 1) * block]


def resample(windows, rate_in):
    """Resample equal-length windows with sox in a few large calls. Each window
    is a whole number of seconds, so it maps to exactly OUT_RATE samples per
    second and the output can be cut back into clips by position."""
    if rate_in == OUT_RATE:
        return list(windows)
    raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1"]
    out = []
    for start in range(0, len(windows), CLIPS_PER_SOX_CALL):
        batch = np.concatenate(windows[start:start + CLIPS_PER_SOX_CALL]).astype("<f4")
        # -R fixes sox's own random seeds, -D turns dither off: both for reproducible output.
        cmd = ["sox", "-R", "-D", "-q", *raw, "-r", str(rate_in), "-", *raw, "-r", str(OUT_RATE), "-"]
        done = subprocess.run(cmd, input=batch.tobytes(), stdout=subprocess.PIPE, check=True)
        y = np.frombuffer(done.stdout, "<f4")
        per_clip = OUT_RATE * CLIP_SECONDS
        count = min(CLIPS_PER_SOX_CALL, len(windows) - start)
        y = np.pad(y, (0, max(0, per_clip * count - len(y))))
        out += [y[i * per_clip:(i + 1) * per_clip].copy() for i in range(count)]
    return out


def place(word_audio, rate, rng):
    """The word, peak-normalised, at a random offset in a CLIP_SECONDS window.
    A 20 ms margin at each end keeps resampler ringing from wrapping into the
    neighbouring clip of the same sox batch. Returns (window, was_cut)."""
    length = rate * CLIP_SECONDS
    margin = rate // 50
    room = length - 2 * margin
    cut = len(word_audio) > room
    word_audio = word_audio[:room]
    window = np.zeros(length, np.float32)
    start = rng.randint(margin, length - margin - len(word_audio))
    peak = float(np.abs(word_audio).max()) or 1.0
    window[start:start + len(word_audio)] = word_audio * (0.7 / peak)
    return window, cut


def degrade(y, rng):
    """White noise at a random SNR (relative to the speech, not the window,
    so a short word and a long one are equally hard to hear), then a random
    gain. Returns (samples, noise label for the TSV)."""
    label = "clean"
    if rng.random() >= CLEAN_FRACTION:
        snr = rng.uniform(*SNR_DB)
        speech = y[np.abs(y) > 0.01]
        power = float(np.mean(speech ** 2)) if len(speech) else 1e-4
        noise = np.random.default_rng(rng.getrandbits(64)).standard_normal(len(y))
        y = y + (noise * np.sqrt(power / 10 ** (snr / 10))).astype(np.float32)
        label = f"{snr:.1f}"
    y = y * 10 ** (rng.uniform(*GAIN_DB) / 20)
    return y, label


def write_wav(path, y):
    pcm = np.clip(np.round(y * 32767), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(OUT_RATE)
        f.writeframes(pcm.tobytes())


def build_split(out, split, words, per_class, speakers, seed, synth):
    split_dir = os.path.join(out, split)
    # A rebuild with fewer clips or other words must not leave old ones behind.
    if os.path.isdir(split_dir):
        for name in os.listdir(split_dir):
            sub = os.path.join(split_dir, name)
            if os.path.isdir(sub) and all(re.fullmatch(r"\d{4}\.wav", f) for f in os.listdir(sub)):
                shutil.rmtree(sub)
    clips, windows, truncated = [], [], 0
    for word in words:
        os.makedirs(os.path.join(split_dir, word), exist_ok=True)
        for n in range(per_class):
            rng = random.Random(f"{seed}:{split}:{word}:{n}")
            speaker = rng.choice(speakers)
            rate, pitch = rng.randint(*RATE_WPM), rng.randint(*PITCH)
            audio = trim_silence(synth.say(word, speaker, rate, pitch), synth.rate)
            window, cut = place(audio, synth.rate, rng)
            truncated += cut
            windows.append(window)
            clips.append((f"{split}/{word}/{n:04d}.wav", word, speaker, rate, pitch, rng))
    rows = []
    for (rel, word, speaker, rate, pitch, rng), y in zip(clips, resample(windows, synth.rate)):
        y, noise = degrade(y, rng)
        write_wav(os.path.join(out, rel), y)
        rows.append(f"{rel}\t{word}\t{speaker}\t{rate}\t{pitch}\t{noise}\n")
    with open(os.path.join(out, f"{split}.tsv"), "w", encoding="utf-8") as f:
        f.writelines(rows)
    heard = len({c[2] for c in clips})
    print(f"{split}: {len(rows)} clips, {len(words)} words, {heard} of {len(speakers)} speakers used"
          + (f", {truncated} cut short to fit {CLIP_SECONDS} s" if truncated else ""))


def main():
    parser = argparse.ArgumentParser(
        description="Synthesise a speaker-disjoint spoken-words set with espeak-ng and sox.")
    parser.add_argument("--out", default="data/words", help="output directory (default data/words)")
    parser.add_argument("--vocab", choices=["digits", "digits+commands"], default="digits")
    parser.add_argument("--train-per-class", type=int, default=120)
    parser.add_argument("--test-per-class", type=int, default=30)
    parser.add_argument("--seed", default="d2v", help="any string; same seed, same files")
    args = parser.parse_args()
    if args.train_per_class < 0 or args.test_per_class < 0:
        die("clip counts must not be negative")
    missing = [p for p in ("espeak-ng", "sox") if shutil.which(p) is None]
    if missing:
        die(f"{' and '.join(missing)} not found: {INSTALL_HINT}")

    started = time.time()
    words = VOCABULARIES[args.vocab]
    synth = Synth()
    train_speakers, test_speakers = speaker_pools(synth)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "classes.txt"), "w", encoding="utf-8") as f:
        f.write("".join(w + "\n" for w in words))
    build_split(args.out, "train", words, args.train_per_class, train_speakers, args.seed, synth)
    build_split(args.out, "test", words, args.test_per_class, test_speakers, args.seed, synth)
    print(f"wrote {args.out} in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()

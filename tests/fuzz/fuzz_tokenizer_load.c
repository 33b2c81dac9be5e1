/* fuzz_tokenizer_load.c — loading a tokenizer directory (vocab.json,
 * merges.txt, optionally d2v_tokenizer.json) from arbitrary files. The input
 * is the files' contents separated by lines "=====" (see the corpus). A
 * tokenizer that loads must encode and decode consistently
 * (decode(encode(x)) == normalize(x) on a fixed text and on the input) and
 * survive save -> load with the same vocabulary and merges. */
#include "fuzz.h"
#include "tokenizer.h"

static const char separator[] = "\n=====\n";

static void write_part(const char *dir, const char *name, const uint8_t *data, size_t size)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (data)
        fuzz_write_file(path, data, size);
    else
        unlink(path);
}

static const uint8_t *find_separator(const uint8_t *p, const uint8_t *end)
{
    const size_t n = sizeof separator - 1;
    for (; p + n <= end; p++)
        if (memcmp(p, separator, n) == 0)
            return p;
    return NULL;
}

static void check_round_trip(Tokenizer *t, const char *text, size_t len)
{
    D2vError err;
    Utf8Report report;
    const TokOptions o = tokenizer_options(t);
    char *normalized = NULL;
    size_t normalized_len = 0;
    FUZZ_CHECK(tok_normalize(&o, text, len, &normalized, &normalized_len, &report, &err) == 0, "normalize: %s",
               err.msg);
    TokIds ids = {0};
    FUZZ_CHECK(tokenizer_encode(t, text, len, &ids, &report, &err) == 0, "encode: %s", err.msg);
    char *decoded = NULL;
    size_t decoded_len = 0;
    FUZZ_CHECK(tokenizer_decode(t, ids.ids, ids.n, 0, &decoded, &decoded_len, &err) == 0, "decode: %s", err.msg);
    FUZZ_CHECK(decoded_len == normalized_len && memcmp(decoded, normalized, decoded_len) == 0,
               "a loaded tokenizer breaks decode(encode(x)) == normalize(x)");
    free(decoded);
    free(normalized);
    tok_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *dir = fuzz_temp_dir();
    const uint8_t *end = data + size, *parts[3] = {NULL, NULL, NULL};
    size_t sizes[3] = {0, 0, 0};
    const uint8_t *p = data;
    for (int i = 0; i < 3 && p; i++) {
        const uint8_t *cut = i < 2 ? find_separator(p, end) : NULL;
        parts[i] = p;
        sizes[i] = (size_t)((cut ? cut : end) - p);
        p = cut ? cut + sizeof separator - 1 : NULL;
    }
    write_part(dir, "vocab.json", parts[0], sizes[0]);
    write_part(dir, "merges.txt", parts[1], sizes[1]);
    write_part(dir, "d2v_tokenizer.json", parts[2], sizes[2]);

    Tokenizer *t = NULL;
    D2vError err;
    if (tokenizer_load(dir, &t, &err) != 0) {
        FUZZ_CHECK(strlen(err.msg) > 0 && strchr(err.msg, '\n') == NULL, "an error must be one line: %s", err.msg);
        return 0;
    }
    static const char fixed[] = "Hello, world! It's a test: 123 café ﬁ 東京 \xff\xfe bytes.";
    check_round_trip(t, fixed, sizeof fixed - 1);
    check_round_trip(t, (const char *)data, size);

    char saved[256];
    snprintf(saved, sizeof saved, "%s/saved", dir);
    FUZZ_CHECK(tokenizer_save(t, saved, &err) == 0, "save: %s", err.msg);
    Tokenizer *again = NULL;
    FUZZ_CHECK(tokenizer_load(saved, &again, &err) == 0, "a saved tokenizer does not load: %s", err.msg);
    FUZZ_CHECK(tokenizer_vocab_size(again) == tokenizer_vocab_size(t) &&
               tokenizer_n_merges(again) == tokenizer_n_merges(t), "save -> load changed the sizes");
    for (int r = 0; r < tokenizer_n_merges(t); r++) {
        int32_t a[3], b[3];
        tokenizer_merge(t, r, &a[0], &a[1], &a[2]);
        tokenizer_merge(again, r, &b[0], &b[1], &b[2]);
        FUZZ_CHECK(memcmp(a, b, sizeof a) == 0, "merge %d changed", r);
    }
    tokenizer_free(again);
    tokenizer_free(t);
    return 0;
}

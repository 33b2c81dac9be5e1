/* fuzz_tokenizer.c — normalization, pre-tokenization and BPE encoding on
 * arbitrary bytes, with the properties tokenizer.h promises:
 *   - the pieces of tok_split concatenate to its input;
 *   - decode(encode(x)) == normalize(x), byte for byte;
 *   - every id is in the vocabulary and none is a special token.
 * Three small tokenizers are trained once at start-up on fixed text (NFKC
 * with contractions, NFC, none without contractions); the input's first
 * byte picks one. */
#include "fuzz.h"
#include "tokenizer.h"

static Tokenizer *tokenizers[3];

static const char training_text[] =
    "The quick brown fox jumps over the lazy dog. It's 12:30 and we'll be there, won't we?\n"
    "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ and ligatures ﬁ ﬂ, café naïve Ångström, 東京 ＴＯＫＹＯ 123 ４５６\n"
    "Привет мир! Γειά σου κόσμε. مرحبا بالعالم. שלום עולם. नमस्ते दुनिया 🙂🙃 tabs\tand  spaces   \r\n"
    "the the the then there these those that this thin thing think thought through threw";

static int train_one(TokNormalization norm, int contractions, Tokenizer **out)
{
    TokOptions o = tok_default_options();
    o.normalization = norm;
    o.contractions = contractions;
    TokCounter *c = NULL;
    D2vError err;
    Utf8Report report;
    TokTrainOptions to = {.vocab_size = 400, .min_frequency = 1};
    TokTrainStats stats;
    if (tok_counter_create(&o, &c, &err) != 0 ||
        tok_counter_add_text(c, training_text, sizeof training_text - 1, &report, &err) != 0 ||
        tokenizer_train_counts(c, &to, out, &stats, &err) != 0) {
        fprintf(stderr, "training the fuzz tokenizer: %s\n", err.msg);
        abort();
    }
    tok_counter_free(c);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    train_one(TOK_NORM_NFKC, 1, &tokenizers[0]);
    train_one(TOK_NORM_NFC, 1, &tokenizers[1]);
    train_one(TOK_NORM_NONE, 0, &tokenizers[2]);
    return 0;
}

typedef struct {
    const uint8_t *text;
    size_t len, at;
} Concat;

static int check_piece(void *ctx, const uint8_t *piece, size_t len, D2vError *err)
{
    (void)err;
    Concat *c = ctx;
    FUZZ_CHECK(len > 0, "empty piece at %zu", c->at);
    FUZZ_CHECK(c->at + len <= c->len && memcmp(c->text + c->at, piece, len) == 0,
               "pieces do not concatenate to the input at byte %zu", c->at);
    c->at += len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    Tokenizer *t = tokenizers[data[0] % 3];
    const TokOptions o = tokenizer_options(t);
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    D2vError err;
    Utf8Report report;

    char *normalized = NULL;
    size_t normalized_len = 0;
    FUZZ_CHECK(tok_normalize(&o, text, len, &normalized, &normalized_len, &report, &err) == 0, "normalize: %s",
               err.msg);
    FUZZ_CHECK((report.count == 0) == (report.first_offset == -1), "report: count %lld, first offset %lld",
               (long long)report.count, (long long)report.first_offset);

    Concat c = {(const uint8_t *)normalized, normalized_len, 0};
    FUZZ_CHECK(tok_split(&o, normalized, normalized_len, check_piece, &c, &err) == 0, "split: %s", err.msg);
    FUZZ_CHECK(c.at == normalized_len, "pieces cover %zu of %zu bytes", c.at, normalized_len);

    TokIds ids = {0};
    FUZZ_CHECK(tokenizer_encode(t, text, len, &ids, &report, &err) == 0, "encode: %s", err.msg);
    for (size_t i = 0; i < ids.n; i++)
        FUZZ_CHECK(ids.ids[i] >= 0 && ids.ids[i] < tokenizer_vocab_size(t) && !tokenizer_is_special(t, ids.ids[i]),
                   "id %d at %zu", ids.ids[i], i);
    char *decoded = NULL;
    size_t decoded_len = 0;
    FUZZ_CHECK(tokenizer_decode(t, ids.ids, ids.n, 0, &decoded, &decoded_len, &err) == 0, "decode: %s", err.msg);
    FUZZ_CHECK(decoded_len == normalized_len && memcmp(decoded, normalized, decoded_len) == 0,
               "decode(encode(x)) != normalize(x): %zu vs %zu bytes", decoded_len, normalized_len);
    free(decoded);
    free(normalized);
    tok_ids_free(&ids);
    return 0;
}

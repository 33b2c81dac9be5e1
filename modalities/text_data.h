/* text_data.h — the text modality's datasets (DESIGN §5, issue 5): plain
 * UTF-8 text for pretraining, `label<TAB>text` lines for evaluation, read
 * once and tokenized into one token array, as fairseq binarizes a corpus
 * before training.
 *
 * Pretraining text follows fairseq's masked_lm input: each non-blank line is
 * a sentence and gets </s> after it; blank lines (and file ends) separate
 * documents; the sentence stream is cut into blocks of at most max_tokens
 * tokens as TokenBlockDataset does (the batch puts <s> in front, as
 * PrependTokenDataset):
 *   complete_doc  whole sentences, never across a document (the data2vec
 *                 text recipe's sample_break_mode)
 *   complete      whole sentences, across documents
 *   none          fill every block, across sentences and documents
 *   eos           one sentence per block
 * A sentence longer than a block is cut into block-sized pieces (fairseq
 * would make an over-long block and drop it). Leading and trailing ASCII
 * whitespace of a line is not text.
 *
 * Evaluation sets (labeled) are `label<TAB>text` lines; one item per line,
 * its text truncated to max_tokens - 1 tokens and followed by </s>; blank
 * lines are skipped; labels are sorted by name into class numbers.
 *
 * A path is one file (any name) or a directory searched recursively for
 * *.txt (pretraining) or *.tsv (labeled) files, in sorted order. Bad input
 * never stops the read by itself: a file with a NUL byte (binary, not text),
 * an empty or unreadable file is left out, and ill-formed UTF-8 is replaced
 * by U+FFFD (the tokenizer's repair) and kept; each is recorded as a problem
 * naming the file, line and byte offset, for the caller to report or to fail
 * on. Labeled sets are strict instead: every such problem, and a line
 * without a label, is an error. Memory: the tokens (4 bytes each) and the
 * 1 MiB read buffers; a line is tokenized in pieces of at most 1 MiB, cut
 * where the tokenizer's own chunking would cut (before ASCII whitespace), so
 * even a single 100 MB line is read in bounded memory. */
#ifndef D2V_TEXT_DATA_H
#define D2V_TEXT_DATA_H

#include "common.h"
#include "tokenizer.h"

#include <stdint.h>

typedef enum { TEXT_BREAK_COMPLETE_DOC, TEXT_BREAK_COMPLETE, TEXT_BREAK_NONE, TEXT_BREAK_EOS } TextBreakMode;

/* "complete_doc" | "complete" | "none" | "eos"; -1 for anything else. */
int text_break_mode_parse(const char *name, TextBreakMode *out);

typedef struct {
    int64_t start;  /* first token in TextCorpus.tokens */
    int32_t length; /* tokens, without the <s> a batch puts in front */
    int32_t file;   /* index into TextCorpus.paths */
    int64_t line;   /* 1-based line of its first token */
    int32_t label;  /* class number; -1 when unlabeled */
} TextItem;

typedef struct {
    char message[D2V_ERR_LEN];
    int skipped; /* 1: the file was left out; 0: it was repaired and kept */
} TextProblem;

typedef struct {
    char **paths;
    int n_files;
    TokIds tokens;
    TextItem *items;
    int n_items;
    char **class_names; /* sorted; labeled sets only */
    int n_classes;
    TextProblem *problems;
    int n_problems;
} TextCorpus;

typedef struct {
    int labeled;
    int max_tokens; /* the longest item without <s>: data.seq_len - 1, at least 2 */
    TextBreakMode break_mode;
} TextReadOptions;

/* Reads and tokenizes path with tok (used on the calling thread only). Fails
 * when nothing usable is left (the message says why, with the first
 * problem), on a labeled set's first problem, or out of memory. */
int text_corpus_read(TextCorpus *c, const char *path, Tokenizer *tok, const TextReadOptions *o, D2vError *err);
void text_corpus_free(TextCorpus *c);

#endif

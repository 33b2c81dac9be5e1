/* token_mask.h — BERT-style token masking for text (DESIGN §3 step 2, §4),
 * fairseq's MaskTokensDataset with mask_multiple_length (spans):
 *
 *   1. per row, of its m maskable tokens, int(prob * m / span + U[0,1))
 *      distinct span starts are drawn uniformly among them (the uniform
 *      rounds up with probability equal to the fractional part, so the
 *      expected count is exactly prob * m / span);
 *   2. each start selects `span` consecutive positions from itself on (those
 *      past the row's end or not maskable are left alone; spans may overlap,
 *      so the selected share comes out a little under prob when span > 1);
 *   3. each selected position becomes, independently, a random token with
 *      probability random_prob, stays unchanged with probability keep_prob,
 *      and otherwise becomes <mask> (BERT's 80/10/10 is random_prob =
 *      keep_prob = 0.1);
 *   4. the loss goes to every selected position, or only to those whose
 *      input is now <mask> (fairseq data2vec_text: src_tokens.eq(mask_idx)).
 *
 * Which positions are maskable is the caller's: special tokens and padding
 * never are. Random replacements come uniformly from a caller's list (the
 * vocabulary without its special tokens; fairseq zeroes the specials'
 * weights). The row length m, not fairseq's item length with <s> and </s>,
 * sets the count; draws are made in a fixed order from one Rng, so a seed
 * gives one mask. Shapes: B rows, T positions per row. */
#ifndef D2V_TOKEN_MASK_H
#define D2V_TOKEN_MASK_H

#include "rng.h"

#include <stdint.h>

typedef struct {
    double prob;        /* fairseq mask_prob: share of maskable tokens selected (before overlaps) */
    int span;           /* fairseq mask_multiple_length, >= 1 */
    double random_prob; /* fairseq random_token_prob */
    double keep_prob;   /* fairseq leave_unmasked_prob; random_prob + keep_prob <= 1 */
    int loss_on_selected; /* 1: loss at every selected position; 0: only where the input is <mask> */
} TokenMaskSpec;

typedef struct {
    int32_t mask_id;
    const int32_t *random_ids; /* candidates for random replacement */
    int n_random;              /* >= 1 when random_prob > 0 */
} TokenMaskVocab;

/* ids (B,T) in; maskable (B,T) 1 where a token may be selected. Writes
 * out_ids (B,T), the student's input (ids outside selections unchanged),
 * loss (B,T) 1 where the loss goes, and selected (B,T) if non-NULL. scratch
 * holds T ints. Returns the number of loss positions, or -1 on a bad spec. */
int token_mask(int32_t *out_ids, uint8_t *loss, uint8_t *selected, const int32_t *ids, const uint8_t *maskable,
               int B, int T, const TokenMaskSpec *spec, const TokenMaskVocab *vocab, int *scratch, Rng *rng);

/* Why a spec is unusable, or NULL if it is fine. */
const char *token_mask_spec_problem(const TokenMaskSpec *spec);

#endif

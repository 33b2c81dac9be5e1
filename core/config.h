/* config.h — typed INI configuration (DESIGN §5).
 *
 * A config is described by tables of ConfigKey: section, key, type, where the
 * value lives (an offset into a struct), its default and its allowed range.
 * Core owns one table (D2vConfig below); each modality plug-in owns another
 * for its own [frontend]/[mask]/[data] keys, so core never learns about a
 * modality's keys. Parsing checks a file against the union of the tables it
 * is given: an unknown key, a duplicate key, or a bad value is an error
 * naming the file, the line, the key and what is allowed. */
#ifndef D2V_CONFIG_H
#define D2V_CONFIG_H

#include "common.h"

#define CONFIG_STR_LEN 256

typedef enum { CK_INT, CK_FLOAT, CK_BOOL, CK_STRING, CK_CHOICE } ConfigKeyType;

typedef struct {
    const char *section;
    const char *key;
    ConfigKeyType type;
    size_t offset;       /* CK_INT: int64_t; CK_FLOAT: double; CK_BOOL: int;
                            CK_STRING and CK_CHOICE: char[CONFIG_STR_LEN] */
    const char *def;     /* default, as it would be written in the file */
    double min, max;     /* inclusive range for CK_INT and CK_FLOAT */
    const char *choices; /* CK_CHOICE: allowed values, "a|b|c" */
    const char *help;    /* one line, shown by --help and in errors */
} ConfigKey;

typedef struct {
    const ConfigKey *keys;
    int n_keys;
    void *base; /* the struct the offsets point into */
} ConfigTable;

/* Writes every key's default into its struct. */
int config_defaults(const ConfigTable *tables, int n_tables, D2vError *err);
/* Parses an INI file (inih) over the current values. Errors name
 * "PATH:LINE: key section.key: ..." */
int config_load_file(const ConfigTable *tables, int n_tables, const char *path, D2vError *err);
/* Same for INI text held in memory (a checkpoint's embedded config); `what`
 * names it in errors. */
int config_load_string(const ConfigTable *tables, int n_tables, const char *text, const char *what, D2vError *err);
/* Applies one "section.key=value" from --set. */
int config_set(const ConfigTable *tables, int n_tables, const char *assignment, D2vError *err);
/* The resolved config as INI text (every key, sections in table order);
 * caller frees. NULL on out-of-memory. */
char *config_dump(const ConfigTable *tables, int n_tables);
/* Reads one raw value (e.g. "model.modality") from a file and overrides
 * without validating anything else: how cli/ learns which modality's table
 * to add before the real parse. Returns 0 and fills out (empty if absent). */
int config_peek(const char *path, int n_sets, char *const *sets, const char *section_key,
                char *out, size_t out_len, D2vError *err);
/* What a key accepts, e.g. "an integer in [8, 65536]" or "one of a|b" (for
 * --help and error messages). */
void config_describe_allowed(const ConfigKey *key, char *out, size_t out_len);
/* A key's current value in base as it would be written in a file. */
void config_format_value(const ConfigKey *key, const void *base, char *out, size_t out_len);

/* ---- the core table: keys every config has -------------------------------- */

typedef struct {
    struct {
        char modality[CONFIG_STR_LEN]; /* image | speech | text (cli/ checks) */
        int64_t dim, layers, heads, ffn_dim;
        char layout[CONFIG_STR_LEN];   /* post_ln | pre_ln */
        double dropout, attention_dropout, activation_dropout;
        double layer_norm_eps;
        char init[CONFIG_STR_LEN];     /* bert | torch */
        double init_std;
    } model;
    struct {
        int64_t top_k;
        char layer_norm[CONFIG_STR_LEN];   /* instance | layer | none */
        char final_norm[CONFIG_STR_LEN];   /* none | layer | instance */
        char layer_output[CONFIG_STR_LEN]; /* ffn | block */
    } target;
    struct {
        double beta;  /* Smooth L1 beta; 0 = squared error */
        double scale; /* 0 = 1/sqrt(dim) */
        char head[CONFIG_STR_LEN]; /* linear | mlp */
    } loss;
    struct {
        double lr, beta1, beta2, eps, weight_decay, clip_norm;
        char schedule[CONFIG_STR_LEN]; /* cosine | tri_stage | constant */
        int64_t warmup_steps;
        double warmup_ratio, hold_ratio, decay_ratio;
        double init_lr_scale, final_lr_scale, min_lr;
    } optim;
    struct {
        double decay, end_decay;
        int64_t anneal_steps;
    } ema;
    struct {
        int64_t steps, batch_size, seed, threads, log_every, save_every, keep_last;
        double min_target_var, min_pred_var, min_frontend_var;
        int64_t var_check_after;
        char on_nonfinite[CONFIG_STR_LEN]; /* stop | skip */
        int64_t update_freq;     /* micro-batches accumulated per update */
        int64_t sync_check_every; /* steps between cross-rank parameter checks */
        double dist_timeout;     /* seconds a collective may wait */
        double attention_memory_mb; /* budget for kept attention probabilities and outputs (transformer.h) */
    } train;
    struct {
        char on_error[CONFIG_STR_LEN]; /* skip | fail */
    } data;
    struct {
        int64_t every;                 /* k-NN every this many updates; 0 = off */
        char train[CONFIG_STR_LEN];    /* labeled sets, as `d2v eval knn --train/--test` */
        char test[CONFIG_STR_LEN];
        int64_t k, batch;              /* as `d2v eval knn --k/--batch` */
        char pool[CONFIG_STR_LEN];     /* mean | cls | topk, as --pool */
    } eval;
} D2vConfig;

/* The table describing D2vConfig, bound to cfg. */
ConfigTable d2v_config_table(D2vConfig *cfg);

/* Checks between keys that one key's range cannot express (dim divisible by
 * heads, top_k <= layers, ...). */
int d2v_config_validate(const D2vConfig *cfg, D2vError *err);

#endif

/* setup.h — what every model-using command does first: read a config (a
 * file plus --set overrides, or a checkpoint's embedded text), find its
 * modality, validate, and keep the resolved text for checkpoints. */
#ifndef D2V_CLI_SETUP_H
#define D2V_CLI_SETUP_H

#include "config.h"
#include "evaluate.h"
#include "modality.h"

typedef struct {
    D2vConfig cfg;
    const Modality *mod;
    void *mcfg;       /* the modality's config struct */
    char *text;       /* resolved config, INI */
} Setup;

/* From a config file and --set assignments. */
int setup_from_file(Setup *s, const char *path, int n_sets, char *const *sets, D2vError *err);
/* From the config embedded in a checkpoint, with optional --set overrides. */
int setup_from_checkpoint(Setup *s, const char *checkpoint, int n_sets, char *const *sets, D2vError *err);
void setup_free(Setup *s);

/* A model ready to compute features: from a checkpoint (its embedded
 * config and weights), or, with random_init_config, the same architecture
 * freshly initialised (the baseline a probe compares against). */
int setup_model(Setup *s, Model *m, const char *checkpoint, const char *random_init_config, int batch_size,
                D2vError *err);

/* Features of every item under path (labeled: class subdirectories), one
 * row per item (core/evaluate.h); the dataset stays open for names
 * (feature_set_free closes it). */
int setup_features(Setup *s, Model *m, const char *path, int labeled, Pool pool, int batch_size, FeatureSet *out,
                   D2vError *err);

/* Prints a one-line error in the d2v style and returns the exit status. */
int fail(const char *command, const D2vError *err);

#endif

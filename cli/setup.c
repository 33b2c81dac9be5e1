#include "setup.h"

#include "checkpoint.h"
#include "registry.h"
#include "train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fail(const char *command, const D2vError *err)
{
    fprintf(stderr, "d2v %s: %s\n", command, err->msg);
    return 1;
}

/* Two tables: core's keys and the modality's. */
static int bind_tables(Setup *s, const char *modality, ConfigTable tables[2], D2vError *err)
{
    s->mod = modality_find(modality);
    if (!s->mod)
        return d2v_fail(err, "model.modality = \"%s\": expected one of %s", modality, modality_names());
    s->mcfg = d2v_calloc(1, s->mod->config_size, err);
    if (!s->mcfg)
        return -1;
    tables[0] = d2v_config_table(&s->cfg);
    tables[1] = (ConfigTable){s->mod->keys, s->mod->n_keys, s->mcfg};
    return config_defaults(tables, 2, err);
}

static int finish(Setup *s, ConfigTable tables[2], int n_sets, char *const *sets, D2vError *err)
{
    for (int i = 0; i < n_sets; i++)
        if (config_set(tables, 2, sets[i], err) < 0)
            return -1;
    if (d2v_config_validate(&s->cfg, err) < 0)
        return -1;
    s->text = config_dump(tables, 2);
    return s->text ? 0 : d2v_fail(err, "out of memory");
}

int setup_from_file(Setup *s, const char *path, int n_sets, char *const *sets, D2vError *err)
{
    memset(s, 0, sizeof *s);
    char modality[CONFIG_STR_LEN];
    if (config_peek(path, n_sets, sets, "model.modality", modality, sizeof modality, err) < 0)
        return -1;
    if (!modality[0])
        return d2v_fail(err, "%s: model.modality is not set (expected one of %s)", path, modality_names());
    ConfigTable tables[2];
    if (bind_tables(s, modality, tables, err) < 0 || config_load_file(tables, 2, path, err) < 0)
        return -1;
    return finish(s, tables, n_sets, sets, err);
}

/* The value of `key` in INI text, without validating anything. */
static void peek_text(const char *text, const char *section, const char *key, char *out, size_t len)
{
    out[0] = 0;
    char current[CONFIG_STR_LEN] = "";
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        char buf[512];
        snprintf(buf, sizeof buf, "%.*s", (int)(n < sizeof buf - 1 ? n : sizeof buf - 1), line);
        char name[CONFIG_STR_LEN], value[CONFIG_STR_LEN];
        if (sscanf(buf, " [%255[^]]]", name) == 1)
            snprintf(current, sizeof current, "%s", name);
        else if (strcmp(current, section) == 0 && sscanf(buf, " %255[^ =] = %255[^\n]", name, value) == 2 &&
                 strcmp(name, key) == 0)
            snprintf(out, len, "%s", value);
        line = end ? end + 1 : NULL;
    }
}

int setup_from_checkpoint(Setup *s, const char *checkpoint, int n_sets, char *const *sets, D2vError *err)
{
    memset(s, 0, sizeof *s);
    char *text = NULL;
    if (checkpoint_read_config(checkpoint, &text, err) < 0)
        return -1;
    char modality[CONFIG_STR_LEN];
    peek_text(text, "model", "modality", modality, sizeof modality);
    ConfigTable tables[2];
    char what[4200];
    snprintf(what, sizeof what, "%s (embedded config)", checkpoint);
    int rc = bind_tables(s, modality, tables, err) < 0 || config_load_string(tables, 2, text, what, err) < 0 ? -1 : 0;
    free(text);
    return rc < 0 ? -1 : finish(s, tables, n_sets, sets, err);
}

void setup_free(Setup *s)
{
    free(s->mcfg);
    free(s->text);
    memset(s, 0, sizeof *s);
}

int setup_model(Setup *s, Model *m, const char *checkpoint, const char *random_init_config, int batch_size,
                D2vError *err)
{
    memset(m, 0, sizeof *m);
    if (random_init_config) {
        if (setup_from_file(s, random_init_config, 0, NULL, err) < 0)
            return -1;
    } else if (setup_from_checkpoint(s, checkpoint, 0, NULL, err) < 0) {
        return -1;
    }
    const int threads = train_set_threads(s->cfg.train.threads);
    if (model_build(m, &s->cfg, s->mod, s->mcfg, batch_size, threads, err) < 0)
        return -1;
    return random_init_config ? 0 : checkpoint_load(checkpoint, &m->ps, NULL, err);
}

int setup_features(Setup *s, Model *m, const char *path, int labeled, Pool pool, int batch_size, FeatureSet *out,
                   D2vError *err)
{
    return feature_set_open(out, s->mod, s->mcfg, path, labeled, m->d2v.encoder.dim, err) < 0 ||
                   feature_set_embed(out, m, s->mcfg, pool, batch_size, err) < 0
               ? -1
               : 0;
}

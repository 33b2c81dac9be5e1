/* fixture.h — a small model config for the numerical tests: the objective
 * with every switch a parameter, sizes small enough to check by brute force. */
#ifndef D2V_TEST_FIXTURE_H
#define D2V_TEST_FIXTURE_H

#include "config.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *layout, *layer_norm, *final_norm, *tap, *head;
    double beta, dropout;
} ObjectiveCase;

static inline D2vConfig fixture_config(ObjectiveCase oc, int dim, int layers, int heads, int ffn, int top_k)
{
    D2vConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.model.modality, CONFIG_STR_LEN, "test");
    cfg.model.dim = dim;
    cfg.model.layers = layers;
    cfg.model.heads = heads;
    cfg.model.ffn_dim = ffn;
    snprintf(cfg.model.layout, CONFIG_STR_LEN, "%s", oc.layout);
    cfg.model.dropout = oc.dropout;
    cfg.model.attention_dropout = oc.dropout;
    cfg.model.activation_dropout = oc.dropout;
    cfg.model.layer_norm_eps = 1e-5;
    snprintf(cfg.model.init, CONFIG_STR_LEN, "bert");
    cfg.model.init_std = 0.3; /* large, so every path carries signal */
    cfg.target.top_k = top_k;
    snprintf(cfg.target.layer_norm, CONFIG_STR_LEN, "%s", oc.layer_norm);
    snprintf(cfg.target.final_norm, CONFIG_STR_LEN, "%s", oc.final_norm);
    snprintf(cfg.target.layer_output, CONFIG_STR_LEN, "%s", oc.tap);
    cfg.loss.beta = oc.beta;
    cfg.train.attention_memory_mb = 96; /* the default: small models keep their attention probabilities */
    snprintf(cfg.loss.head, CONFIG_STR_LEN, "%s", oc.head);
    return cfg;
}

#endif

#include "model.h"

#include "loader.h"

#include <string.h>

int model_build(Model *m, const D2vConfig *cfg, const Modality *mod, const void *mcfg, int B, int threads,
                D2vError *err)
{
    memset(m, 0, sizeof *m);
    m->mod = mod;
    if (d2v_register(&m->d2v, &m->ps, cfg, err) < 0)
        return -1;
    m->frontend = mod->create(cfg, mcfg, &m->ps, err);
    if (!m->frontend || params_alloc(&m->ps, err) < 0)
        return -1;
    d2v_bind(&m->d2v, &m->ps);
    mod->bind(m->frontend, &m->ps);
    Rng init;
    rng_init(&init, (uint64_t)cfg->train.seed, rng_stream(STREAM_INIT, 0));
    params_init(&m->ps, &init);

    m->B = B;
    m->N = mod->max_positions(m->frontend);
    /* Measure the layout, allocate once, lay it out for real (arena.h).
     * The front-end's scratch overlays the encoder's activations, which
     * d2v_layout puts last: the front-end runs before the teacher and after
     * the student's backward, when they hold nothing (issue 6: peak
     * memory). Pass 0 learns where they start. */
    size_t encoder_at = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            size_t need = m->arena.used;
            m->arena.used = 0;
            if (arena_alloc(&m->arena, need, err) < 0)
                return d2v_fail(err, "out of memory: activations for batches of %d need %zu MiB "
                                "(lower train.batch_size or use a smaller config)", B, need >> 20);
        }
        Arena scratch = {0};
        if (pass == 1)
            scratch = (Arena){m->arena.base + encoder_at, 0, m->arena.capacity - encoder_at, NULL};
        mod->layout(m->frontend, &m->arena, &scratch, B, threads);
        m->d_x = arena_take(&m->arena, (size_t)B * m->N * m->d2v.encoder.dim);
        encoder_at = d2v_layout(&m->acts, &m->arena, &m->d2v, B, m->N, threads);
        if (m->arena.used < encoder_at + scratch.used)
            m->arena.used = encoder_at + scratch.used;
    }
    return 0;
}

void model_free(Model *m)
{
    if (m->frontend)
        m->mod->destroy(m->frontend);
    params_free(&m->ps);
    arena_free(&m->arena);
    memset(m, 0, sizeof *m);
}

#include "checkpoint.h"

#include "safetensors.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef D2V_DOUBLE
#error "checkpoints store float32; the double build is for gradient checks only"
#endif

/* The names of a tensor's four roles; a fixed table so save and load agree. */
static const char *const role_prefix[] = {"", "teacher.", "optim.m.", "optim.v."};
enum { ROLE_VALUE, ROLE_TEACHER, ROLE_ADAM_M, ROLE_ADAM_V, ROLES };

static real *role_buffer(const ParamStore *ps, int role, const Param *p)
{
    switch (role) {
    case ROLE_VALUE: return ps->value + p->offset;
    case ROLE_TEACHER: return p->in_teacher ? ps->teacher + p->offset : NULL;
    case ROLE_ADAM_M: return ps->adam_m + p->offset;
    default: return ps->adam_v + p->offset;
    }
}

static void format_rng(char *out, size_t len, const Rng *r)
{
    snprintf(out, len, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %d %" PRIu32 " %" PRIu32 " %" PRIu32 " %" PRIu32,
             r->seed, r->stream, r->position, r->used, r->buffer[0], r->buffer[1], r->buffer[2], r->buffer[3]);
}

static int parse_rng(const char *text, Rng *r)
{
    int consumed = 0;
    if (sscanf(text, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %d %" SCNu32 " %" SCNu32 " %" SCNu32 " %" SCNu32 "%n",
               &r->seed, &r->stream, &r->position, &r->used, &r->buffer[0], &r->buffer[1], &r->buffer[2],
               &r->buffer[3], &consumed) != 8 || text[consumed] != 0 || r->used < 0 || r->used > 4)
        return -1;
    return 0;
}

int checkpoint_save(const char *path, const ParamStore *ps, const TrainState *state, const char *config_text,
                    D2vError *err)
{
    StWriter w;
    st_writer_init(&w);
    int n_names = ps->count * ROLES;
    char **names = d2v_calloc((size_t)n_names, sizeof *names, err);
    int rc = names ? 0 : -1;
    for (int role = 0; role < ROLES && rc == 0; role++)
        for (int i = 0; i < ps->count && rc == 0; i++) {
            const Param *p = &ps->params[i];
            const real *data = role_buffer(ps, role, p);
            if (!data)
                continue;
            size_t len = strlen(role_prefix[role]) + strlen(p->name) + 1;
            char *name = names[role * ps->count + i] = malloc(len);
            if (!name) {
                rc = d2v_fail(err, "out of memory saving %s", path);
                break;
            }
            snprintf(name, len, "%s%s", role_prefix[role], p->name);
            rc = st_writer_add(&w, name, ST_F32, p->ndim, p->shape, data, err);
        }
    char step[32], version[16], rng[256], world[16], best[40], best_step[32];
    snprintf(step, sizeof step, "%" PRId64, state->step);
    snprintf(world, sizeof world, "%d", state->world > 0 ? state->world : 1);
    snprintf(best, sizeof best, "%.17g", state->best_knn); /* round-trips a double exactly */
    snprintf(best_step, sizeof best_step, "%" PRId64, state->best_knn_step);
    snprintf(version, sizeof version, "%d", CHECKPOINT_VERSION);
    format_rng(rng, sizeof rng, &state->rng);
    if (rc == 0)
        rc = st_writer_meta(&w, "format", CHECKPOINT_FORMAT, err) || st_writer_meta(&w, "format_version", version, err) ||
             st_writer_meta(&w, "step", step, err) || st_writer_meta(&w, "rng", rng, err) ||
             st_writer_meta(&w, "world_size", world, err) || st_writer_meta(&w, "d2v_version", D2V_VERSION, err) ||
             st_writer_meta(&w, "config", config_text ? config_text : "", err) ? -1 : 0;
    if (rc == 0 && state->best_knn_step > 0)
        rc = st_writer_meta(&w, "best_knn", best, err) || st_writer_meta(&w, "best_knn_step", best_step, err) ? -1 : 0;
    if (rc == 0)
        rc = st_writer_save(&w, path, err);
    st_writer_free(&w);
    if (names)
        for (int i = 0; i < n_names; i++)
            free(names[i]);
    free(names);
    return rc;
}

/* Checks the metadata that says "this is a d2v checkpoint we can read". */
static int check_format(const StFile *f, const char *path, D2vError *err)
{
    const char *format = st_meta(f, "format"), *version = st_meta(f, "format_version");
    if (!format || strcmp(format, CHECKPOINT_FORMAT) != 0)
        return d2v_fail(err, "%s: not a d2v checkpoint (metadata \"format\" is %s%s%s, expected \"%s\")", path,
                        format ? "\"" : "", format ? format : "missing", format ? "\"" : "", CHECKPOINT_FORMAT);
    if (!version || atoi(version) != CHECKPOINT_VERSION)
        return d2v_fail(err, "%s: checkpoint format_version %s, this d2v reads version %d", path,
                        version ? version : "missing", CHECKPOINT_VERSION);
    return 0;
}

int checkpoint_read_config(const char *path, char **config_text, D2vError *err)
{
    StFile f;
    if (st_read(path, &f, err) < 0)
        return -1;
    int rc = check_format(&f, path, err);
    const char *config = st_meta(&f, "config");
    if (rc == 0 && (!config || !*config))
        rc = d2v_fail(err, "%s: checkpoint has no embedded config (metadata \"config\")", path);
    if (rc == 0 && !(*config_text = strdup(config)))
        rc = d2v_fail(err, "out of memory reading %s", path);
    st_free(&f);
    return rc;
}

/* step and rng are required; best_knn and best_knn_step come together or
 * not at all (a run without periodic evaluation has neither). */
static int parse_state(const StFile *f, const char *path, TrainState *state, D2vError *err)
{
    const char *step = st_meta(f, "step"), *rng = st_meta(f, "rng");
    const char *best = st_meta(f, "best_knn"), *best_step = st_meta(f, "best_knn_step");
    char *end = NULL;
    state->step = step ? strtoll(step, &end, 10) : -1;
    if (!step || *end || state->step < 0)
        return d2v_fail(err, "%s: metadata \"step\" is %s, expected a non-negative integer", path,
                        step ? step : "missing");
    if (!rng || parse_rng(rng, &state->rng) < 0)
        return d2v_fail(err, "%s: metadata \"rng\" is malformed", path);
    const char *world = st_meta(f, "world_size");
    state->world = world ? atoi(world) : 0;
    state->best_knn = 0;
    state->best_knn_step = 0;
    if (!best && !best_step)
        return 0;
    char *end2 = NULL;
    end = NULL;
    state->best_knn = best ? strtod(best, &end) : -1;
    state->best_knn_step = best_step ? strtoll(best_step, &end2, 10) : -1;
    if (!best || !best_step || *end || *end2 || !(state->best_knn >= 0 && state->best_knn <= 1) ||
        state->best_knn_step < 1 || state->best_knn_step > state->step)
        return d2v_fail(err, "%s: metadata \"best_knn\" = %s, \"best_knn_step\" = %s: expected a top-1 in [0, 1] "
                        "and a step in [1, %lld]", path, best ? best : "missing", best_step ? best_step : "missing",
                        (long long)state->step);
    return 0;
}

int checkpoint_read_state(const char *path, TrainState *state, D2vError *err)
{
    StFile f;
    if (st_read(path, &f, err) < 0)
        return -1;
    int rc = check_format(&f, path, err);
    if (rc == 0)
        rc = parse_state(&f, path, state, err);
    st_free(&f);
    return rc;
}

int checkpoint_load(const char *path, ParamStore *ps, TrainState *state, D2vError *err)
{
    StFile f;
    if (st_read(path, &f, err) < 0)
        return -1;
    int rc = check_format(&f, path, err);
    int matched = 0;
    for (int role = 0; role < ROLES && rc == 0; role++)
        for (int i = 0; i < ps->count && rc == 0; i++) {
            const Param *p = &ps->params[i];
            real *dst = role_buffer(ps, role, p);
            if (!dst)
                continue;
            char name[PARAM_NAME_LEN + 16];
            snprintf(name, sizeof name, "%s%s", role_prefix[role], p->name);
            const StTensor *t = st_find(&f, name);
            if (!t) {
                rc = d2v_fail(err, "%s: tensor %s is missing (is this a checkpoint of another model?)", path, name);
                break;
            }
            int same_shape = t->ndim == p->ndim;
            for (int d = 0; same_shape && d < p->ndim; d++)
                same_shape = t->shape[d] == p->shape[d];
            if (t->dtype != ST_F32 || !same_shape) {
                char want[64] = "", got[64] = "";
                for (int d = 0; d < p->ndim; d++)
                    snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "," : "",
                             (long long)p->shape[d]);
                for (int d = 0; d < t->ndim; d++)
                    snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "," : "",
                             (long long)t->shape[d]);
                rc = d2v_fail(err, "%s: tensor %s is %s (%s), the model expects F32 (%s)", path, name,
                              st_dtype_name(t->dtype), got, want);
                break;
            }
            memcpy(dst, f.data + t->begin, p->numel * sizeof(real));
            matched++;
        }
    if (rc == 0 && matched != f.n_tensors) {
        for (int j = 0; j < f.n_tensors; j++) {
            const char *n = f.tensors[j].name;
            const char *base = n;
            for (int role = 1; role < ROLES; role++)
                if (strncmp(n, role_prefix[role], strlen(role_prefix[role])) == 0)
                    base = n + strlen(role_prefix[role]);
            if (params_find(ps, base) < 0) {
                rc = d2v_fail(err, "%s: tensor %s is not part of this model", path, n);
                break;
            }
        }
    }
    if (rc == 0 && state)
        rc = parse_state(&f, path, state, err);
    st_free(&f);
    return rc;
}

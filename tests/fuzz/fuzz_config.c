/* fuzz_config.c — the INI config parser (inih under our own line reader) on
 * arbitrary text: the core key table plus a small one holding a key of every
 * type. Text it accepts must survive dump -> parse -> dump unchanged; text
 * it refuses gets a one-line message. The first byte picks the entry point:
 * a whole file (config_load_string) or one --set assignment (config_set). */
#include "config.h"
#include "fuzz.h"

#include <stddef.h>

typedef struct {
    int flag;
    char name[CONFIG_STR_LEN], mode[CONFIG_STR_LEN];
    int64_t count;
    double ratio;
} Extra;

static const ConfigKey extra_keys[] = {
    {"extra", "flag", CK_BOOL, offsetof(Extra, flag), "false", 0, 0, NULL, "a boolean"},
    {"extra", "name", CK_STRING, offsetof(Extra, name), "x", 0, 0, NULL, "a string"},
    {"extra", "mode", CK_CHOICE, offsetof(Extra, mode), "a", 0, 0, "a|bb|ccc", "a choice"},
    {"extra", "count", CK_INT, offsetof(Extra, count), "3", -5, 1e12, NULL, "an integer"},
    {"extra", "ratio", CK_FLOAT, offsetof(Extra, ratio), "0.5", -1, 1, NULL, "a float"},
};

static void bind(D2vConfig *cfg, Extra *extra, ConfigTable tables[2])
{
    memset(cfg, 0, sizeof *cfg);
    memset(extra, 0, sizeof *extra);
    tables[0] = d2v_config_table(cfg);
    tables[1] = (ConfigTable){extra_keys, (int)(sizeof extra_keys / sizeof extra_keys[0]), extra};
    D2vError err;
    FUZZ_CHECK(config_defaults(tables, 2, &err) == 0, "defaults: %s", err.msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const int as_assignment = data[0] & 1;
    char *text = malloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;

    D2vConfig cfg;
    Extra extra;
    ConfigTable tables[2];
    bind(&cfg, &extra, tables);
    D2vError err;
    int rc = as_assignment ? config_set(tables, 2, text, &err) : config_load_string(tables, 2, text, "fuzz.ini", &err);
    if (rc != 0) {
        FUZZ_CHECK(strlen(err.msg) > 0 && strchr(err.msg, '\n') == NULL, "an error must be one line: %s", err.msg);
    } else {
        d2v_config_validate(&cfg, &err); /* must not crash either way */
        char *dump = config_dump(tables, 2);
        FUZZ_CHECK(dump, "dump");
        D2vConfig cfg2;
        Extra extra2;
        ConfigTable tables2[2];
        bind(&cfg2, &extra2, tables2);
        FUZZ_CHECK(config_load_string(tables2, 2, dump, "dump", &err) == 0, "the dump does not parse: %s\n%s",
                   err.msg, dump);
        char *again = config_dump(tables2, 2);
        FUZZ_CHECK(again && strcmp(dump, again) == 0, "dump -> parse -> dump changed:\n%s\n----\n%s", dump, again);
        free(again);
        free(dump);
    }
    free(text);
    return 0;
}

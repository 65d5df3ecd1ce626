/* Reading diffusers / transformers config.json files with diffusers' defaults for absent keys.
 *
 * A config reader carries the file name and the first error met, so a loader reads every key it
 * needs in a row and checks once at the end:
 *
 *     sd_cfg c;
 *     SD_TRY(cfg_open(&c, path));
 *     int ch = cfg_int(&c, "in_channels", 4);
 *     ...
 *     sd_status st = cfg_status(&c);
 *     cfg_close(&c);
 *
 * An absent key, or one set to null, takes the default (this is what diffusers' register_to_config
 * does); a key of the wrong JSON type is an error naming the file and the key. */
#ifndef SD_CONFIG_H
#define SD_CONFIG_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "error.h"

typedef struct {
    cJSON *root;
    char *path; /* for messages */
    bool owned; /* root is freed by cfg_close */
    sd_status status;
} sd_cfg;

/* Parses a JSON file (bad JSON: an SD_ERR_FORMAT naming the file and the position). */
sd_status cfg_open(sd_cfg *c, const char *path);
/* Wraps an existing object (not freed by cfg_close); `name` is used in messages. */
void cfg_wrap(sd_cfg *c, cJSON *obj, const char *name);
void cfg_close(sd_cfg *c);
sd_status cfg_status(const sd_cfg *c);

/* Parses JSON text with the same error reporting (name is used in messages). */
sd_status sd_json_parse(const char *text, const char *name, cJSON **out);
/* Whether text (len bytes, or up to a NUL) nests arrays/objects deeper than cJSON parses
 * (CJSON_NESTING_LIMIT): for messages that tell this apart from a syntax error. */
bool sd_json_nested_too_deep(const char *text, size_t len);

bool cfg_has(const sd_cfg *c, const char *key); /* present and not null */
int cfg_int(sd_cfg *c, const char *key, int def);
double cfg_num(sd_cfg *c, const char *key, double def);
bool cfg_bool(sd_cfg *c, const char *key, bool def);
/* The returned string lives as long as the config. */
const char *cfg_str(sd_cfg *c, const char *key, const char *def);
/* An int array; returns its length (at most max entries stored), or -1 when absent/null. */
int cfg_int_list(sd_cfg *c, const char *key, int *out, int max);
/* Same for numbers. */
int cfg_num_list(sd_cfg *c, const char *key, double *out, int max);
/* A string array (pointers into the config); returns its length or -1 when absent/null. */
int cfg_str_list(sd_cfg *c, const char *key, const char **out, int max);
/* A key that is either an int (broadcast to all n entries) or a list of exactly n ints
 * (transformer_layers_per_block, attention_head_dim, ...). Absent: every entry is def. */
void cfg_int_or_list(sd_cfg *c, const char *key, int *out, int n, int def);

/* SD_OK when lo <= v <= hi, else an SD_ERR_CONFIG naming `file` and `key` with the range. For
 * values read (or derived) from a config, checked before they size anything. */
sd_status cfg_check_range(const char *file, const char *key, long v, long lo, long hi);

#endif

#include "model_index.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"

sd_status model_index_load(model_index *mi, const char *dir) {
    memset(mi, 0, sizeof *mi);
    if (!sd_dir_exists(dir))
        return sd_set_error(SD_ERR_IO, "%s: no such model folder (expected a diffusers folder with "
                            "model_index.json)", dir);
    char *path = sd_path_join(dir, "model_index.json");
    if (!path) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (!sd_file_exists(path)) {
        sd_status st = sd_set_error(SD_ERR_IO, "%s: not found: %s is not a diffusers model folder",
                                    path, dir);
        free(path);
        return st;
    }
    sd_cfg c;
    sd_status st = cfg_open(&c, path);
    free(path);
    if (st != SD_OK) return st;
    mi->dir = strdup(dir);
    const char *cls = cfg_str(&c, "_class_name", NULL);
    if (!cls) st = sd_set_error(SD_ERR_CONFIG, "%s: missing key '_class_name'", c.path);
    if (st == SD_OK) {
        snprintf(mi->class_name, sizeof mi->class_name, "%s", cls);
        for (const cJSON *it = c.root->child; it && st == SD_OK; it = it->next) {
            if (it->string[0] == '_' || !cJSON_IsArray(it)) continue; /* _class_name, flags */
            if (cJSON_GetArraySize(it) != 2) {
                st = sd_set_error(SD_ERR_CONFIG, "%s: component '%s' should be [library, class]",
                                  c.path, it->string);
                break;
            }
            if (mi->n == MI_MAX_COMPONENTS) {
                st = sd_set_error(SD_ERR_CONFIG, "%s: too many components", c.path);
                break;
            }
            const cJSON *lib = cJSON_GetArrayItem(it, 0), *kls = cJSON_GetArrayItem(it, 1);
            mi_component *comp = &mi->comps[mi->n++];
            snprintf(comp->name, sizeof comp->name, "%s", it->string);
            if (cJSON_IsString(lib) && cJSON_IsString(kls)) {
                snprintf(comp->library, sizeof comp->library, "%s", lib->valuestring);
                snprintf(comp->cls, sizeof comp->cls, "%s", kls->valuestring);
                comp->present = true;
            } else if (!cJSON_IsNull(lib) || !cJSON_IsNull(kls)) {
                st = sd_set_error(SD_ERR_CONFIG, "%s: component '%s' should be [library, class] "
                                  "strings or [null, null]", c.path, it->string);
            }
        }
    }
    cfg_close(&c);
    if (st != SD_OK) model_index_free(mi);
    return st;
}

void model_index_free(model_index *mi) {
    free(mi->dir);
    memset(mi, 0, sizeof *mi);
}

const mi_component *model_index_get(const model_index *mi, const char *name) {
    for (int i = 0; i < mi->n; i++)
        if (!strcmp(mi->comps[i].name, name)) return mi->comps[i].present ? &mi->comps[i] : NULL;
    return NULL;
}

char *model_index_path(const model_index *mi, const char *name) {
    return sd_path_join(mi->dir, name);
}

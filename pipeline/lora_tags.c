/* A1111 prompt tags "<lora:NAME:SCALE>": parsed out of the prompt text and resolved to files of a
 * LoRA folder, for a caller that then loads the pipeline with them (sd.h,
 * sd_prompt_extract_loras). In the library rather than the CLI so that every front end (gen, a
 * server) reads tags the same way. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../core/fileutil.h"
#include "../include/sd.h"

static const char tag_open[] = "<lora:";

/* ", a.safetensors, b.safetensors" of the folder, for the unknown-name error (truncated). */
static void list_dir(const char *dir, char *buf, size_t size) {
    buf[0] = '\0';
    DIR *d = opendir(dir);
    if (!d) return;
    size_t used = 0;
    for (struct dirent *e; (e = readdir(d)) && used + 1 < size;) {
        const size_t len = strlen(e->d_name), ext = strlen(".safetensors");
        if (len <= ext || strcmp(e->d_name + len - ext, ".safetensors")) continue;
        used += (size_t)snprintf(buf + used, size - used, "%s%.*s", used ? ", " : "",
                                 (int)(len - ext), e->d_name);
    }
    closedir(d);
}

/* One tag's inside, "NAME" or "NAME:SCALE", into a resolved sd_lora. */
static sd_status parse_tag(const char *body, size_t len, const char *lora_dir, sd_lora *out) {
    char spec[512];
    if (len >= sizeof spec)
        return sd_set_error(SD_ERR_ARG, "prompt: LoRA tag '<lora:%.40s...>' is too long", body);
    memcpy(spec, body, len);
    spec[len] = '\0';
    float scale = 1.0f;
    char *colon = strchr(spec, ':');
    if (colon) {
        *colon = '\0';
        char *end;
        errno = 0;
        const double v = strtod(colon + 1, &end);
        if (end == colon + 1 || *end || errno || !isfinite(v))
            return sd_set_error(SD_ERR_ARG, "prompt: in '<lora:%.*s>', '%s' is not a scale "
                                "(<lora:NAME> or <lora:NAME:SCALE>, e.g. <lora:%s:0.8>)", (int)len,
                                body, colon + 1, spec);
        scale = (float)v;
    }
    if (!spec[0] || strchr(spec, '/'))
        return sd_set_error(SD_ERR_ARG, "prompt: '<lora:%.*s>' does not name a file of the LoRA "
                            "folder", (int)len, body);
    if (!lora_dir)
        return sd_set_error(SD_ERR_ARG, "prompt: tag '<lora:%.*s>' needs a LoRA folder "
                            "(--lora-dir) to find %s.safetensors in", (int)len, body, spec);
    char *name = sd_strfmt("%s.safetensors", spec);
    char *path = name ? sd_path_join(lora_dir, name) : NULL;
    free(name);
    if (!path) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (!sd_file_exists(path)) {
        char have[1024];
        list_dir(lora_dir, have, sizeof have);
        sd_status st = sd_set_error(SD_ERR_IO, "prompt: no LoRA '%s' (%s); %s has: %s", spec, path,
                                    lora_dir, have[0] ? have : "no .safetensors files");
        free(path);
        return st;
    }
    *out = (sd_lora){path, scale};
    return SD_OK;
}

void sd_loras_free(sd_lora *loras, int n) {
    for (int i = 0; loras && i < n; i++) free((char *)loras[i].path);
    free(loras);
}

sd_status sd_prompt_extract_loras(const char *prompt, const char *lora_dir, char **text,
                                  sd_lora **loras, int *n_loras) {
    *text = NULL;
    *loras = NULL;
    *n_loras = 0;
    if (!prompt) prompt = "";
    char *clean = malloc(strlen(prompt) + 1);
    if (!clean) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    size_t used = 0;
    sd_lora *list = NULL;
    int n = 0;
    sd_status st = SD_OK;
    for (const char *at = prompt; *at && st == SD_OK;) {
        const char *tag = strstr(at, tag_open);
        if (!tag) tag = at + strlen(at);
        memcpy(clean + used, at, (size_t)(tag - at));
        used += (size_t)(tag - at);
        if (!*tag) break;
        const char *body = tag + strlen(tag_open), *close = strchr(body, '>');
        if (!close) {
            st = sd_set_error(SD_ERR_ARG, "prompt: '%.40s' has no closing '>'", tag);
            break;
        }
        sd_lora *grown = realloc(list, (size_t)(n + 1) * sizeof *grown);
        if (!grown) {
            st = sd_set_error(SD_ERR_NOMEM, "out of memory");
            break;
        }
        list = grown;
        st = parse_tag(body, (size_t)(close - body), lora_dir, &list[n]);
        if (st == SD_OK) n++;
        at = close + 1;
    }
    clean[used] = '\0';
    if (st != SD_OK) {
        free(clean);
        sd_loras_free(list, n);
        return st;
    }
    *text = clean;
    *loras = list;
    *n_loras = n;
    return SD_OK;
}

/* Writes a full-size diffusers model folder with random weights, for benchmarks.
 *
 *   build/bench/make_model SRC DST [--dtype f32|f16|bf16] [--seed N] [--force]
 *
 * SRC holds the release's configs (model_index.json and one folder per component, as in
 * bench/models/sd15/) and tensors.json: {"components": {"unet": {"tensors": {name: shape}}}}
 * (the manifest format of ../shared/manifests). DST gets a copy of every config file and, per
 * component of the list, its weights: text encoders as model.safetensors (transformers' name),
 * the rest as diffusion_pytorch_model.safetensors. Weights are streamed to disk a chunk at a time,
 * so writing the 3.4 GB UNet needs no more than a few MB of memory.
 *
 * Values are what a trained model could hold, so activations keep a plausible range through every
 * layer (no overflow, no denormals that would distort timings): weights uniform with variance
 * 1/fan_in, biases within +-0.02, norm weights 1 +- 0.1, embedding tables within +-0.035 (std 0.02
 * as CLIP's init). Every value depends only on the seed, the tensor's name and its index, so the
 * same command always writes the same files.
 *
 * DST/bench_model.json is written last and records the seed and dtype: when it is there and
 * matches, the folder is complete and nothing is done (the cache is made once and reused). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/fileutil.h"
#include "../core/safetensors.h"

static uint64_t mix64(uint64_t z) { /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t hash_name(const char *s, uint64_t seed) {
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return mix64(h);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* value = offset + amp * u, u uniform in [-1, 1) */
static void value_law(const char *name, int ndim, const int64_t *shape, float *amp, float *offset) {
    int64_t fan_in = 1;
    for (int d = 1; d < ndim; d++) fan_in *= shape[d];
    *offset = 0.0f;
    if (strstr(name, "embedding.weight") && ndim == 2 && !strstr(name, "time_embedding"))
        *amp = 0.02f * sqrtf(3.0f); /* token / position tables */
    else if (ends_with(name, ".bias"))
        *amp = 0.02f;
    else if (ndim == 1) /* group, layer norm weights */
        *amp = 0.1f, *offset = 1.0f;
    else
        *amp = sqrtf(3.0f / (float)fan_in);
}

static int parse_dtype(const char *s, st_dtype *out) {
    if (!strcmp(s, "f32")) *out = ST_F32;
    else if (!strcmp(s, "f16")) *out = ST_F16;
    else if (!strcmp(s, "bf16")) *out = ST_BF16;
    else return 0;
    return 1;
}

/* One safetensors file holding every tensor of `tensors` ({name: shape}), values streamed. */
static sd_status write_component(const char *path, const cJSON *tensors, st_dtype dtype,
                                 uint64_t seed) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    const size_t esize = st_dtype_size(dtype);
    uint64_t offset = 0;
    for (const cJSON *t = tensors->child; t; t = t->next) {
        cJSON *item = cJSON_AddObjectToObject(root, t->string);
        cJSON_AddStringToObject(item, "dtype", st_dtype_name(dtype));
        cJSON *shape = cJSON_AddArrayToObject(item, "shape");
        uint64_t numel = 1;
        for (const cJSON *d = t->child; d; d = d->next) {
            if (!cJSON_IsNumber(d) || d->valuedouble < 0) {
                cJSON_Delete(root);
                return sd_set_error(SD_ERR_FORMAT, "%s: bad shape in the tensor list", t->string);
            }
            cJSON_AddItemToArray(shape, cJSON_CreateNumber(d->valuedouble));
            numel *= (uint64_t)d->valuedouble;
        }
        cJSON *offs = cJSON_AddArrayToObject(item, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(offset + numel * esize)));
        offset += numel * esize;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    const size_t jlen = strlen(json), padded = (jlen + 7) & ~(size_t)7;

    enum { CHUNK = 1 << 18 };
    float *vals = malloc(CHUNK * sizeof *vals);
    uint16_t *half = malloc(CHUNK * sizeof *half);
    sd_file_writer w;
    sd_status st = vals && half ? sd_writer_open(&w, path)
                                : sd_set_error(SD_ERR_NOMEM, "%s: out of memory", path);
    if (st == SD_OK) {
        uint8_t len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
        sd_writer_put(&w, len8, 8);
        sd_writer_put(&w, json, jlen);
        for (size_t i = jlen; i < padded; i++) sd_writer_put(&w, " ", 1);
        for (const cJSON *t = tensors->child; t; t = t->next) {
            int64_t shape[ST_MAX_DIMS];
            int ndim = 0;
            uint64_t numel = 1;
            for (const cJSON *d = t->child; d && ndim < ST_MAX_DIMS; d = d->next)
                numel *= (uint64_t)(shape[ndim++] = (int64_t)d->valuedouble);
            float amp, off;
            value_law(t->string, ndim, shape, &amp, &off);
            const uint64_t key = hash_name(t->string, seed);
            for (uint64_t i0 = 0; i0 < numel; i0 += CHUNK) {
                const long n = numel - i0 < CHUNK ? (long)(numel - i0) : CHUNK;
#pragma omp parallel for schedule(static)
                for (long i = 0; i < n; i++) {
                    const uint64_t r = mix64(key + (i0 + (uint64_t)i) * 0x9e3779b97f4a7c15ull);
                    vals[i] = off + amp * (float)((double)(r >> 40) * (2.0 / 16777216.0) - 1.0);
                }
                if (dtype == ST_F32) {
                    sd_writer_put(&w, vals, (size_t)n * sizeof *vals);
                    continue;
                }
                for (long i = 0; i < n; i++)
                    half[i] = dtype == ST_F16 ? st_f32_to_f16(vals[i]) : st_f32_to_bf16(vals[i]);
                sd_writer_put(&w, half, (size_t)n * sizeof *half);
            }
        }
        st = sd_writer_commit(&w);
    }
    free(vals);
    free(half);
    free(json);
    return st;
}

static sd_status make_dir(const char *path) {
    if (mkdir(path, 0755) && errno != EEXIST)
        return sd_set_error(SD_ERR_IO, "%s: cannot create the folder: %s", path, strerror(errno));
    return SD_OK;
}

static sd_status copy_file(const char *from, const char *to) {
    char *text = NULL;
    size_t len = 0;
    SD_TRY(sd_read_file(from, &text, &len));
    sd_file_writer w;
    sd_status st = sd_writer_open(&w, to);
    if (st == SD_OK) {
        sd_writer_put(&w, text, len);
        st = sd_writer_commit(&w);
    }
    free(text);
    return st;
}

/* Copies the regular files of src into dst, and one level of subfolders, skipping tensors.json. */
static sd_status copy_tree(const char *src, const char *dst, int depth) {
    SD_TRY(make_dir(dst));
    DIR *d = opendir(src);
    if (!d) return sd_set_error(SD_ERR_IO, "%s: cannot open the folder: %s", src, strerror(errno));
    sd_status st = SD_OK;
    for (struct dirent *e; st == SD_OK && (e = readdir(d));) {
        if (e->d_name[0] == '.' || (depth == 0 && !strcmp(e->d_name, "tensors.json"))) continue;
        char *from = sd_path_join(src, e->d_name), *to = sd_path_join(dst, e->d_name);
        if (!from || !to) st = sd_set_error(SD_ERR_NOMEM, "out of memory");
        else if (sd_file_exists(from)) st = copy_file(from, to);
        else if (sd_dir_exists(from) && depth == 0) st = copy_tree(from, to, 1);
        free(from);
        free(to);
    }
    closedir(d);
    return st;
}

/* True when dst/bench_model.json records the same seed and dtype. */
static bool up_to_date(const char *stamp_path, const char *stamp) {
    char *text = NULL;
    if (sd_read_file(stamp_path, &text, NULL) != SD_OK) return false;
    const bool same = !strcmp(text, stamp);
    free(text);
    return same;
}

static sd_status make_model(const char *src, const char *dst, st_dtype dtype, uint64_t seed,
                            bool force) {
    char stamp[160];
    snprintf(stamp, sizeof stamp, "{\"generator\": \"bench/make_model\", \"seed\": %llu, \"dtype\": \"%s\"}\n",
             (unsigned long long)seed, st_dtype_name(dtype));
    char *stamp_path = sd_path_join(dst, "bench_model.json");
    if (!stamp_path) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (!force && up_to_date(stamp_path, stamp)) {
        printf("make_model: %s is up to date\n", dst);
        free(stamp_path);
        return SD_OK;
    }
    remove(stamp_path);
    char *list_path = sd_path_join(src, "tensors.json"), *text = NULL;
    cJSON *list = NULL;
    sd_status st = list_path ? sd_read_file(list_path, &text, NULL) : sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st == SD_OK && !(list = cJSON_Parse(text)))
        st = sd_set_error(SD_ERR_FORMAT, "%s: bad JSON", list_path);
    const cJSON *comps = list ? cJSON_GetObjectItemCaseSensitive(list, "components") : NULL;
    if (st == SD_OK && !cJSON_IsObject(comps))
        st = sd_set_error(SD_ERR_FORMAT, "%s: no \"components\" object", list_path);
    if (st == SD_OK) st = copy_tree(src, dst, 0);
    for (const cJSON *c = comps ? comps->child : NULL; c && st == SD_OK; c = c->next) {
        const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(c, "tensors");
        if (!cJSON_IsObject(tensors)) {
            st = sd_set_error(SD_ERR_FORMAT, "%s: component '%s' has no tensors", list_path, c->string);
            break;
        }
        const bool transformers = !strncmp(c->string, "text_encoder", 12);
        char *dir = sd_path_join(dst, c->string);
        char *path = dir ? sd_path_join(dir, transformers ? "model.safetensors"
                                                          : "diffusion_pytorch_model.safetensors")
                         : NULL;
        if (!path) st = sd_set_error(SD_ERR_NOMEM, "out of memory");
        if (st == SD_OK) st = make_dir(dir);
        if (st == SD_OK) {
            printf("make_model: writing %s (%d tensors)\n", path, cJSON_GetArraySize(tensors));
            fflush(stdout);
            st = write_component(path, tensors, dtype, seed);
        }
        free(dir);
        free(path);
    }
    if (st == SD_OK) {
        sd_file_writer w;
        st = sd_writer_open(&w, stamp_path);
        if (st == SD_OK) {
            sd_writer_put(&w, stamp, strlen(stamp));
            st = sd_writer_commit(&w);
        }
    }
    cJSON_Delete(list);
    free(text);
    free(list_path);
    free(stamp_path);
    return st;
}

int main(int argc, char **argv) {
    const char *src = NULL, *dst = NULL;
    st_dtype dtype = ST_F32;
    uint64_t seed = 1;
    bool force = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            if (!parse_dtype(argv[++i], &dtype)) {
                fprintf(stderr, "make_model: --dtype must be f32, f16 or bf16, not '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--force")) {
            force = true;
        } else if (argv[i][0] != '-' && !src) {
            src = argv[i];
        } else if (argv[i][0] != '-' && !dst) {
            dst = argv[i];
        } else {
            fprintf(stderr, "make_model: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!src || !dst) {
        fprintf(stderr, "usage: make_model SRC DST [--dtype f32|f16|bf16] [--seed N] [--force]\n");
        return 2;
    }
    if (make_model(src, dst, dtype, seed, force) != SD_OK) {
        fprintf(stderr, "make_model: %s\n", sd_last_error());
        return 1;
    }
    return 0;
}

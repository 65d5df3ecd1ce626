/* Full-size SDXL-Turbo through the public API, on random FP16 weights: a diffusers folder built
 * from the release's configs and tensor lists (tests/fixtures/full/sdxl-turbo/, copied from the
 * shared configs and manifest) plus the real CLIP tokenizers of sdxl-tiny, with every component's
 * weights written as the fp16 variant (<stem>.fp16.safetensors, 3.47 B parameters, 6.9 GB),
 * loaded by sd_pipeline_load and run for one 512x512 step at guidance 0 (turbo: no CFG batch).
 * Checks the run succeeds with finite latents; prints times and peak memory (getrusage).
 * Not part of `make test`: `make test-full`. Measured on the 2-core development machine (shared
 * with other jobs): 7 GB written in 2.5 min; load 73 s CPU; the step and the decode 72 s CPU;
 * peak resident 18.6 GB (14.5 GB of float32 weights and activations, the rest the mapped FP16
 * checkpoint while it is converted).
 *
 * Environment: SDXL_FULL_DIR (default /tmp/sdxl_full_turbo) holds the folder; weight files of the
 * right size are reused; the folder is deleted at the end unless SDXL_FULL_KEEP is set. */
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "../include/sd.h"
#include "test.h"

#define FULL_DIR "full/sdxl-turbo"
enum { CHUNK = 1 << 24 }; /* fp16 values generated and written at a time (32 MB) */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1) from a counter: chunks fill in parallel and the same file comes out again. */
static float uniform_at(uint64_t seed, uint64_t i) {
    uint64_t s = seed ^ (i * 0xD1B54A32D192ED03ull);
    return (float)((double)(splitmix(&s) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
    int64_t numel;
} tensor_spec;

/* Ranges a trained checkpoint has, so activations stay finite through 70 transformer blocks:
 * Linear and conv weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch's default init), biases
 * small, norm weights near 1. */
static void tensor_law(const tensor_spec *t, float *scale, float *offset) {
    const size_t len = strlen(t->name);
    int64_t fan_in = 1;
    for (int d = 1; d < t->ndim; d++) fan_in *= t->shape[d];
    *offset = 0.0f;
    if (t->ndim >= 2)
        *scale = (float)(1.0 / sqrt((double)fan_in));
    else if (len > 5 && !strcmp(t->name + len - 5, ".bias"))
        *scale = 0.02f;
    else
        *scale = 0.1f, *offset = 1.0f;
}

/* A component's tensor list (name -> shape, in file order). */
static tensor_spec *read_specs(const char *component, int *n_out, cJSON **root_out) {
    char rel[128], *text = NULL;
    snprintf(rel, sizeof rel, FULL_DIR "/%s_tensors.json", component);
    *n_out = 0;
    *root_out = NULL;
    if (sd_read_file(fixture(rel), &text, NULL) != SD_OK) {
        CHECK(0, "%s", sd_last_error());
        return NULL;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *list = root ? cJSON_GetObjectItem(root, "tensors") : NULL;
    if (!list) {
        CHECK(0, "%s: no 'tensors' object", rel);
        cJSON_Delete(root);
        return NULL;
    }
    const int n = cJSON_GetArraySize(list);
    tensor_spec *specs = calloc((size_t)n, sizeof *specs);
    int i = 0;
    for (const cJSON *t = list->child; t; t = t->next, i++) {
        specs[i].name = t->string;
        specs[i].ndim = cJSON_GetArraySize(t);
        specs[i].numel = 1;
        for (int d = 0; d < specs[i].ndim && d < 4; d++) {
            specs[i].shape[d] = (int64_t)cJSON_GetArrayItem(t, d)->valuedouble;
            specs[i].numel *= specs[i].shape[d];
        }
    }
    *n_out = n;
    *root_out = root;
    return specs;
}

/* The safetensors header (8-byte length + JSON padded to 8 bytes) for all-F16 tensors. */
static char *make_header(const tensor_spec *specs, int n, uint64_t *header_len, uint64_t *data_len) {
    cJSON *h = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(h, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *t = cJSON_AddObjectToObject(h, specs[i].name);
        cJSON_AddStringToObject(t, "dtype", "F16");
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < specs[i].ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)specs[i].shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        off += (uint64_t)specs[i].numel * 2;
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
    }
    char *json = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    const size_t len = strlen(json), padded = (len + 7) / 8 * 8;
    char *buf = malloc(8 + padded);
    uint64_t hl = padded;
    memcpy(buf, &hl, 8); /* little-endian host */
    memcpy(buf + 8, json, len);
    memset(buf + 8 + len, ' ', padded - len);
    free(json);
    *header_len = 8 + padded;
    *data_len = off;
    return buf;
}

/* Streams random F16 weights for `component` into path (a file of the right size is reused). */
static int write_weights(const char *component, const char *path, uint64_t seed, int64_t *params) {
    int n = 0;
    cJSON *root = NULL;
    tensor_spec *specs = read_specs(component, &n, &root);
    if (!specs) return 0;
    *params = 0;
    for (int i = 0; i < n; i++) *params += specs[i].numel;
    uint64_t header_len, data_len;
    char *header = make_header(specs, n, &header_len, &data_len);
    struct stat sb;
    int ok = 1;
    if (stat(path, &sb) == 0 && (uint64_t)sb.st_size == header_len + data_len) {
        printf("reusing %s (%.2f GB)\n", path, (double)sb.st_size / 1e9);
        goto done;
    }
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        CHECK(0, "cannot write %s", path);
        ok = 0;
        goto done;
    }
    ok = fwrite(header, 1, header_len, fp) == header_len;
    uint16_t *buf = malloc((size_t)CHUNK * sizeof *buf);
    const double t0 = now();
    for (int i = 0; ok && i < n; i++) {
        float scale, offset;
        tensor_law(&specs[i], &scale, &offset);
        for (int64_t c0 = 0; ok && c0 < specs[i].numel; c0 += CHUNK) {
            const int64_t len = specs[i].numel - c0 < CHUNK ? specs[i].numel - c0 : CHUNK;
#pragma omp parallel for schedule(static)
            for (int64_t j = 0; j < len; j++)
                buf[j] = st_f32_to_f16(offset + scale * uniform_at(seed * 100003u + (uint64_t)i, c0 + j));
            ok = fwrite(buf, 2, (size_t)len, fp) == (size_t)len;
        }
    }
    free(buf);
    ok = (fclose(fp) == 0) && ok;
    CHECK(ok, "writing %s failed (disk full?)", path);
    printf("wrote %s: %d tensors, %.3f B parameters, %.2f GB in %.0f s\n", path, n, *params / 1e9,
           (double)(header_len + data_len) / 1e9, now() - t0);
done:
    free(header);
    free(specs);
    cJSON_Delete(root);
    return ok;
}

static int copy_file(const char *from, const char *to) {
    char *text = NULL;
    size_t len = 0;
    if (sd_read_file(from, &text, &len) != SD_OK) {
        CHECK(0, "%s", sd_last_error());
        return 0;
    }
    sd_file_writer w;
    sd_status st = sd_writer_open(&w, to);
    if (st == SD_OK) {
        sd_writer_put(&w, text, len);
        st = sd_writer_commit(&w);
    }
    free(text);
    CHECK(st == SD_OK, "writing %s: %s", to, sd_last_error());
    return st == SD_OK;
}

/* Copies fixture `src_rel`/<file> to dir/<component>/<file>, remembering it for the cleanup. */
static int place(const char *dir, const char *component, const char *file, const char *src_rel,
                 char **made, int *n_made) {
    char *sub = sd_path_join(dir, component);
    mkdir(sub, 0700);
    char src[512];
    snprintf(src, sizeof src, "%s/%s", src_rel, file);
    char *dst = sd_path_join(sub, file);
    int ok = copy_file(fixture(src), dst);
    made[(*n_made)++] = dst;
    free(sub);
    return ok;
}

static void print_memory(const char *when) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long rss_kb = 0;
    FILE *fp = fopen("/proc/self/statm", "r");
    if (fp) {
        long pages, resident;
        if (fscanf(fp, "%ld %ld", &pages, &resident) == 2) rss_kb = resident * (sysconf(_SC_PAGESIZE) / 1024);
        fclose(fp);
    }
    printf("memory %s: peak (ru_maxrss) %.2f GB, resident now %.2f GB\n", when,
           ru.ru_maxrss / 1048576.0, rss_kb / 1048576.0);
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

int main(void) {
    const char *dir = getenv("SDXL_FULL_DIR") ? getenv("SDXL_FULL_DIR") : "/tmp/sdxl_full_turbo";
    mkdir(dir, 0700);
    char *made[32];
    int n_made = 0, ok = 1;
    /* Configs of the release; tokenizers: the real CLIP vocabulary of sdxl-tiny (tokenizer_2 pads
     * with "!", as SDXL's does). */
    char *mi = sd_path_join(dir, "model_index.json");
    ok &= copy_file(fixture(FULL_DIR "/model_index.json"), mi);
    made[n_made++] = mi;
    ok &= place(dir, "scheduler", "scheduler_config.json", FULL_DIR "/scheduler", made, &n_made);
    static const char *const with_config[] = {"text_encoder", "text_encoder_2", "unet", "vae"};
    for (int k = 0; k < 4; k++) {
        char src[128];
        snprintf(src, sizeof src, FULL_DIR "/%s", with_config[k]);
        ok &= place(dir, with_config[k], "config.json", src, made, &n_made);
    }
    static const char *const tok_files[] = {"vocab.json", "merges.txt", "tokenizer_config.json"};
    for (int k = 0; k < 3; k++) {
        ok &= place(dir, "tokenizer", tok_files[k], "sdxl-tiny/pipeline/tokenizer", made, &n_made);
        ok &= place(dir, "tokenizer_2", tok_files[k], "sdxl-tiny/pipeline/tokenizer_2", made, &n_made);
    }
    int64_t total = 0;
    for (int k = 0; k < 4 && ok; k++) {
        const char *stem = k < 2 ? "model.fp16.safetensors" : "diffusion_pytorch_model.fp16.safetensors";
        char *sub = sd_path_join(dir, with_config[k]);
        char *path = sd_path_join(sub, stem);
        int64_t params = 0;
        ok &= write_weights(with_config[k], path, (uint64_t)k + 1, &params);
        total += params;
        made[n_made++] = path;
        free(sub);
    }
    printf("SDXL-Turbo: %.3f B parameters in FP16\n", total / 1e9);

    sd_pipeline *p = NULL;
    if (ok) {
        double t0 = now(), c0 = cpu_seconds();
        CHECK_OK(sd_pipeline_load(&p, dir, NULL));
        printf("sd_pipeline_load: %.1f s wall, %.1f s CPU (%d threads)\n", now() - t0,
               cpu_seconds() - c0, omp_get_max_threads());
        print_memory("after load");
    }
    if (p) {
        int w = 0, h = 0;
        sd_pipeline_default_size(p, &w, &h);
        CHECK(sd_pipeline_family(p) == SD_FAMILY_SDXL && w == 512 && h == 512,
              "SDXL family, default size 64 * 8 = 512 (got %dx%d)", w, h);
        sd_gen_params g;
        sd_gen_params_init(&g);
        g.prompt = "a cinematic photo of a red fox in the snow";
        g.steps = 1;
        g.guidance = 0.0;
        g.seed = 1;
        sd_result r;
        double t0 = now(), c0 = cpu_seconds();
        sd_status st = sd_generate(p, &g, &r);
        CHECK(st == SD_OK, "sd_generate: %s", sd_last_error());
        printf("one 512x512 step, guidance 0: %.1f s wall, %.1f s CPU\n", now() - t0, cpu_seconds() - c0);
        print_memory("after generation");
        if (st == SD_OK) {
            size_t n = (size_t)r.latent_shape[0] * r.latent_shape[1] * r.latent_shape[2] * r.latent_shape[3];
            size_t bad = 0;
            double sum2 = 0;
            for (size_t i = 0; i < n; i++) {
                if (!isfinite(r.latents[i])) bad++;
                else sum2 += (double)r.latents[i] * r.latents[i];
            }
            printf("latents %dx%dx%dx%d: rms %.4g, %zu not finite; %d model call(s), scheduler %s\n",
                   r.latent_shape[0], r.latent_shape[1], r.latent_shape[2], r.latent_shape[3],
                   sqrt(sum2 / (double)n), bad, r.model_calls, r.scheduler_class);
            CHECK(bad == 0 && n == 4 * 64 * 64, "%zu of %zu latents not finite", bad, n);
            CHECK(r.model_calls == 1 && r.n_images == 1 && r.images[0].width == 512 &&
                      r.images[0].height == 512, "one call, one 512x512 image");
            sd_result_free(&r);
        }
        sd_pipeline_free(p);
    }
    for (int i = n_made - 1; i >= 0; i--) {
        if (!getenv("SDXL_FULL_KEEP")) unlink(made[i]);
        free(made[i]);
    }
    if (!getenv("SDXL_FULL_KEEP")) {
        static const char *const subs[] = {"scheduler", "text_encoder", "text_encoder_2", "unet",
                                           "vae", "tokenizer", "tokenizer_2"};
        for (int k = 0; k < 7; k++) {
            char *sub = sd_path_join(dir, subs[k]);
            rmdir(sub);
            free(sub);
        }
        rmdir(dir);
    }
    return test_summary();
}

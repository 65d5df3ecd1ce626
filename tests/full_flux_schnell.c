/* Full-size FLUX.1-schnell transformer (12B parameters, 23.8 GB in BF16) on random BF16 weights:
 * writes a checkpoint with the release's tensor list and config (tests/fixtures/full/), loads it
 * (the BF16 weights stay in the file mapping: a float32 copy would take 47 GB) and runs one
 * 512x512 step: 1024 image tokens and 512 text tokens (or
 * argv[1]). Checks that the output is finite and not degenerate; prints times and memory.
 * Not part of `make test` (minutes of compute, 24 GB of disk): `make test-full`.
 *
 * Environment: FLUX_FULL_DIR (default /tmp/flux_full_schnell) holds the checkpoint; an existing
 * one of the right size is reused; it is deleted at the end unless FLUX_FULL_KEEP is set.
 * FLUX_FULL_MODE=low-memory loads with the low-memory policy (default: stored). */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "../dit/flux.h"
#include "test.h"

#define FULL_DIR "full/flux1-schnell"
enum { CHUNK = 1 << 24 }; /* bf16 values generated and written at a time (32 MB) */

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

/* Uniform in [-1, 1) from a counter, so chunks can be filled in parallel and reproducibly. */
static float uniform_at(uint64_t seed, uint64_t i) {
    uint64_t s = seed ^ (i * 0xD1B54A32D192ED03ull);
    return (float)((double)(splitmix(&s) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Values like a trained checkpoint's ranges: Linear weights U(-1/sqrt(in), 1/sqrt(in)) (torch's
 * default init), biases small, RMS norm weights near 1. */
static void tensor_law(const char *name, const int64_t *shape, int ndim, float *scale,
                       float *offset) {
    const size_t len = strlen(name);
    const int is_bias = len > 5 && !strcmp(name + len - 5, ".bias");
    if (ndim == 2) {
        *scale = (float)(1.0 / sqrt((double)shape[1]));
        *offset = 0.0f;
    } else if (is_bias) {
        *scale = 0.02f;
        *offset = 0.0f;
    } else {
        *scale = 0.1f;
        *offset = 1.0f;
    }
}

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
    int64_t numel;
} tensor_spec;

/* The tensor list of tests/fixtures/full (name -> shape), in file order. */
static tensor_spec *read_specs(int *n_out, cJSON **root_out) {
    char *text = NULL;
    *n_out = 0;
    *root_out = NULL;
    if (sd_read_file(fixture(FULL_DIR "/transformer_tensors.json"), &text, NULL) != SD_OK) {
        CHECK(0, "%s", sd_last_error());
        return NULL;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *list = root ? cJSON_GetObjectItem(root, "tensors") : NULL;
    if (!list) {
        CHECK(0, "transformer_tensors.json: no 'tensors' object");
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

/* The safetensors header (8-byte length + JSON padded to 8 bytes) for all-BF16 tensors. */
static char *make_header(const tensor_spec *specs, int n, uint64_t *header_len,
                         uint64_t *data_len) {
    cJSON *h = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(h, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *t = cJSON_AddObjectToObject(h, specs[i].name);
        cJSON_AddStringToObject(t, "dtype", "BF16");
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

static int write_checkpoint(const char *path, const tensor_spec *specs, int n) {
    uint64_t header_len, data_len;
    char *header = make_header(specs, n, &header_len, &data_len);
    struct stat sb;
    if (stat(path, &sb) == 0 && (uint64_t)sb.st_size == header_len + data_len) {
        printf("reusing %s (%.1f GB)\n", path, (double)sb.st_size / 1e9);
        free(header);
        return 1;
    }
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        CHECK(0, "cannot write %s", path);
        free(header);
        return 0;
    }
    int ok = fwrite(header, 1, header_len, fp) == header_len;
    free(header);
    uint16_t *buf = malloc((size_t)CHUNK * sizeof *buf);
    const double t0 = now();
    for (int i = 0; ok && i < n; i++) {
        float scale, offset;
        tensor_law(specs[i].name, specs[i].shape, specs[i].ndim, &scale, &offset);
        for (int64_t c0 = 0; ok && c0 < specs[i].numel; c0 += CHUNK) {
            const int64_t len = specs[i].numel - c0 < CHUNK ? specs[i].numel - c0 : CHUNK;
#pragma omp parallel for schedule(static)
            for (int64_t j = 0; j < len; j++)
                buf[j] = st_f32_to_bf16(offset + scale * uniform_at((uint64_t)i + 1, c0 + j));
            ok = fwrite(buf, 2, (size_t)len, fp) == (size_t)len;
        }
    }
    free(buf);
    ok = (fclose(fp) == 0) && ok;
    CHECK(ok, "writing %s failed (disk full?)", path);
    printf("wrote %s: %.1f GB in %.0f s\n", path, (double)(header_len + data_len) / 1e9,
           now() - t0);
    return ok;
}

/* Peak and current resident memory; RssFile is the mapped checkpoint (page cache the kernel can
 * drop), RssAnon what the process allocated. /proc files report size 0, hence line reads. */
static void print_memory(const char *when) {
    FILE *fp = fopen("/proc/self/status", "r");
    if (!fp) return;
    char line[256];
    printf("memory %s:", when);
    while (fgets(line, sizeof line, fp)) {
        long kb;
        char key[32];
        if (sscanf(line, "%31s %ld", key, &kb) == 2 &&
            (!strcmp(key, "VmHWM:") || !strcmp(key, "RssAnon:") || !strcmp(key, "RssFile:")))
            printf(" %s %.2f GB", key, kb / 1048576.0);
    }
    printf("\n");
    fclose(fp);
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static int copy_config(const char *dir) {
    char *text = NULL, *path = sd_path_join(dir, "config.json");
    int ok = sd_read_file(fixture(FULL_DIR "/transformer/config.json"), &text, NULL) == SD_OK;
    FILE *fp = ok ? fopen(path, "w") : NULL;
    ok = fp && fputs(text, fp) >= 0;
    if (fp) ok = (fclose(fp) == 0) && ok;
    CHECK(ok, "writing %s", path);
    free(text);
    free(path);
    return ok;
}

int main(int argc, char **argv) {
    const int txt = argc > 1 ? atoi(argv[1]) : 512, gh = 32, gw = 32, img = gh * gw;
    const char *dir = getenv("FLUX_FULL_DIR") ? getenv("FLUX_FULL_DIR") : "/tmp/flux_full_schnell";
    mkdir(dir, 0700);
    char *st_path = sd_path_join(dir, "diffusion_pytorch_model.safetensors");
    int n = 0;
    cJSON *root = NULL;
    tensor_spec *specs = read_specs(&n, &root);
    int64_t params = 0;
    for (int i = 0; i < n; i++) params += specs[i].numel;
    printf("FLUX.1-schnell transformer: %d tensors, %.3f B parameters\n", n, params / 1e9);
    if (!specs || !copy_config(dir) || !write_checkpoint(st_path, specs, n)) goto done;

    /* FLUX_FULL_MODE: stored (default: the BF16 weights stay in the mapping, widened per call)
     * or low-memory (also paged out after each layer). */
    const char *mode_name = getenv("FLUX_FULL_MODE") ? getenv("FLUX_FULL_MODE") : "stored";
    const weights_policy policy = {.low_memory = !strcmp(mode_name, "low-memory")};
    double t0 = now();
    flux_model *m = NULL;
    CHECK_OK(flux_load(&m, dir, &policy));
    if (!m) goto done;
    const flux_config *c = flux_get_config(m);
    printf("loaded in %.1f s: %d double + %d single blocks, dim %d, weights %s\n", now() - t0,
           c->num_layers, c->num_single_layers, c->inner_dim,
           policy.low_memory ? "in the mapping, paged out per layer" : "in the mapping (BF16)");
    print_memory("after load");

    /* Inputs at the scale the pipeline produces: unit-variance noise latents, T5 and CLIP
     * embeddings of order 0.1-1. */
    float *x = malloc((size_t)img * c->in_channels * sizeof *x);
    float *ctx = malloc((size_t)txt * c->joint_attention_dim * sizeof *ctx);
    float *pooled = malloc((size_t)c->pooled_projection_dim * sizeof *pooled);
    float *img_ids = malloc((size_t)img * 3 * sizeof *img_ids);
    float *txt_ids = calloc((size_t)txt * 3, sizeof *txt_ids);
    const size_t n_out = (size_t)img * c->out_channels;
    float *out = malloc(n_out * sizeof *out);
    fill_random(x, (size_t)img * c->in_channels, 1);
    fill_random(ctx, (size_t)txt * c->joint_attention_dim, 2);
    fill_random(pooled, (size_t)c->pooled_projection_dim, 3);
    for (size_t i = 0; i < (size_t)img * c->in_channels; i++) x[i] *= 1.7f;
    for (size_t i = 0; i < (size_t)txt * c->joint_attention_dim; i++) ctx[i] *= 0.3f;
    flux_image_ids(gh, gw, img_ids);

    /* Schnell's first step: sigma 1 (the pipeline passes t / 1000), no guidance embedding. */
    t0 = now();
    const double c0 = cpu_seconds();
    CHECK_OK(flux_forward(m, x, 1, img, img_ids, ctx, txt, txt_ids, 1.0f, NAN, pooled, out));
    const double t_fwd = now() - t0, c_fwd = cpu_seconds() - c0;
    size_t bad = 0;
    double sum2 = 0.0;
    for (size_t i = 0; i < n_out; i++) {
        if (!isfinite(out[i]))
            bad++;
        else
            sum2 += (double)out[i] * out[i];
    }
    const double rms = sqrt(sum2 / (double)n_out);
    printf("forward (1024 image + %d text tokens, %d threads): %.1f s wall, %.1f s CPU; output rms "
           "%.4g, first %.6g %.6g %.6g\n",
           txt, omp_get_max_threads(), t_fwd, c_fwd, rms, out[0], out[1], out[2]);
    print_memory("after forward");
    CHECK(bad == 0, "%zu of %zu outputs are not finite", bad, n_out);
    CHECK(rms > 1e-3 && rms < 1e3, "output rms %.4g is degenerate", rms);
    free(x);
    free(ctx);
    free(pooled);
    free(img_ids);
    free(txt_ids);
    free(out);
    flux_free(m);

done:
    if (!getenv("FLUX_FULL_KEEP")) {
        char *cfg = sd_path_join(dir, "config.json");
        unlink(st_path);
        unlink(cfg);
        rmdir(dir);
        free(cfg);
    }
    free(st_path);
    free(specs);
    cJSON_Delete(root);
    return test_summary();
}

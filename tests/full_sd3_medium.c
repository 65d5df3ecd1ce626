/* Full-size check, not part of `make test` (it writes a 4 GB file, needs ~13 GB of memory and runs
 * for minutes): an SD3-medium transformer (config and tensor list of the release, copied into
 * tests/fixtures/full/sd3-medium/) with random BF16 weights written to a safetensors file in /tmp,
 * loaded by sd3_load and run for one 512x512 CFG step: batch 2, 64x64 latents (1024 image tokens)
 * and 333 text tokens (77 CLIP + 256 T5). Checks the output is finite and reports the times. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "../dit/sd3.h"
#include "test.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_now(void) { /* all threads of the process: the work done, whatever the load */
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* Values a trained model could have, so activations stay in range through 24 blocks: Linear and
 * conv weights uniform with variance 1/fan_in, biases small, norm weights near 1, the position
 * table in [-1, 1] like the sin-cos one. */
static void fill_tensor(const char *name, int ndim, const int64_t *shape, uint16_t *out,
                        uint64_t seed) {
    int64_t n = 1, fan_in = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    for (int d = 1; d < ndim; d++) fan_in *= shape[d];
    float amp = 1.0f, offset = 0.0f;
    if (!strcmp(name, "pos_embed.pos_embed"))
        amp = 1.0f;
    else if (ends_with(name, ".bias"))
        amp = 0.02f;
    else if (ndim == 1) /* RMS q/k norm weights */
        amp = 0.1f, offset = 1.0f;
    else
        amp = sqrtf(3.0f / (float)fan_in);
    enum { CHUNK = 1 << 16 };
    static float buf[CHUNK];
    for (int64_t i = 0; i < n; i += CHUNK) {
        int64_t m = n - i < CHUNK ? n - i : CHUNK;
        fill_random(buf, (size_t)m, seed * 1000003u + (uint64_t)(i / CHUNK));
        for (int64_t j = 0; j < m; j++) out[i + j] = st_f32_to_bf16(offset + amp * buf[j]);
    }
}

/* Writes dir/diffusion_pytorch_model.safetensors with every tensor of the list. */
static sd_status write_random_weights(const char *list_path, const char *dir) {
    char *text = NULL;
    SD_TRY(sd_read_file(list_path, &text, NULL));
    cJSON *list = cJSON_Parse(text);
    free(text);
    if (!list) return sd_set_error(SD_ERR_FORMAT, "%s: bad JSON", list_path);
    int n = cJSON_GetArraySize(list);
    st_entry *ents = calloc((size_t)n, sizeof *ents);
    uint16_t **data = calloc((size_t)n, sizeof *data);
    sd_status st = ents && data ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    int i = 0;
    for (cJSON *it = list->child; it && st == SD_OK; it = it->next, i++) {
        st_entry *e = &ents[i];
        e->name = it->string;
        e->dtype = ST_BF16;
        e->ndim = cJSON_GetArraySize(it);
        int64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            e->shape[d] = (int64_t)cJSON_GetArrayItem(it, d)->valuedouble;
            numel *= e->shape[d];
        }
        data[i] = malloc((size_t)numel * sizeof **data);
        if (!data[i]) {
            st = sd_set_error(SD_ERR_NOMEM, "out of memory for '%s'", e->name);
            break;
        }
        fill_tensor(e->name, e->ndim, e->shape, data[i], (uint64_t)i + 1);
        e->data = data[i];
    }
    if (st == SD_OK) {
        char *path = sd_path_join(dir, "diffusion_pytorch_model.safetensors");
        st = st_write(path, ents, n, NULL, 0);
        free(path);
    }
    for (int j = 0; j < n && data; j++) free(data[j]);
    free(data);
    free(ents);
    cJSON_Delete(list);
    return st;
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

int main(void) {
    enum { B = 2, H = 64, W = 64, C = 16, CTX = 333, JD = 4096, PD = 2048 };
    char dir[] = "/tmp/full_sd3_medium_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp failed");
        return test_summary();
    }
    char *cfg_path = sd_path_join(dir, "config.json");
    char *st_path = sd_path_join(dir, "diffusion_pytorch_model.safetensors");
    double t0 = now();
    CHECK_OK(copy_file(fixture("full/sd3-medium/transformer/config.json"), cfg_path));
    CHECK_OK(write_random_weights(fixture("full/sd3-medium/transformer_tensors.json"), dir));
    double t1 = now();
    printf("wrote random BF16 weights in %.1f s\n", t1 - t0);

    sd3_model *m = NULL;
    CHECK_OK(sd3_load(&m, dir));
    double t2 = now();
    printf("sd3_load: %.1f s\n", t2 - t1);
    if (m) {
        const sd3_config *c = sd3_get_config(m);
        printf("config: %d layers, dim %d, %d heads, pos_embed_max_size %d\n", c->num_layers,
               c->inner_dim, c->num_attention_heads, c->pos_embed_max_size);
        float *x = malloc(sizeof(float) * B * H * W * C);
        float *ctx = malloc(sizeof(float) * B * CTX * JD);
        float *pooled = malloc(sizeof(float) * B * PD);
        float *out = malloc(sizeof(float) * B * H * W * C);
        fill_random(x, (size_t)B * H * W * C, 11);
        fill_random(ctx, (size_t)B * CTX * JD, 12);
        fill_random(pooled, (size_t)B * PD, 13);
        /* T5 absent: its 256 rows are zeros, as the pipeline passes them */
        for (int b = 0; b < B; b++)
            memset(ctx + ((size_t)b * CTX + 77) * JD, 0, sizeof(float) * 256 * JD);
        for (int pass = 0; pass < 2; pass++) {
            double s = now(), cs = cpu_now();
            sd_status st = sd3_forward(m, x, B, H, W, 1000.0f, ctx, CTX, pooled, out);
            double e = now(), ce = cpu_now();
            CHECK(st == SD_OK, "sd3_forward: %s", sd_last_error());
            size_t bad = 0;
            double sum = 0.0, mx = 0.0;
            for (size_t i = 0; i < (size_t)B * H * W * C; i++) {
                if (!isfinite(out[i])) bad++;
                sum += fabs(out[i]);
                if (fabs(out[i]) > mx) mx = fabs(out[i]);
            }
            CHECK(bad == 0, "%zu non-finite output values", bad);
            printf(
                "forward pass %d (batch %d, %d image + %d text tokens): %.1f s wall, %.1f s CPU; "
                "output mean |x| %.4g, max |x| %.4g, %zu non-finite\n",
                pass + 1, B, (H / 2) * (W / 2), CTX, e - s, ce - cs, sum / ((double)B * H * W * C),
                mx, bad);
        }
        free(x), free(ctx), free(pooled), free(out);
        sd3_free(m);
    }
    unlink(cfg_path);
    unlink(st_path);
    rmdir(dir);
    free(cfg_path);
    free(st_path);
    return test_summary();
}

/* Times the tiny autoencoder (vae/vae_tiny.c) at the released taesd shape (64 channels, blocks
 * (1, 3, 3, 3) / (3, 3, 3, 1)): a 512x512 decode (64x64 latent) and encode, at 1 and 2 threads,
 * the median of --runs runs after a warm-up. Random weights, written once to CACHE/taesd-full.
 *
 *   build/bench/tiny_vae_bench [--cache DIR] [--size N] [--runs N] [--threads 1,2]
 *
 * The goal: a 512x512 decode "well under a second". Prints a table and a line
 * `BENCH_TINY {json}`: wall seconds, and the process CPU seconds of the same run (on a busy
 * machine the wall time grows while the CPU time stays near the quiet machine's wall time x
 * threads). Numbers of the image are meaningless; only the time matters. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "../core/threads.h"
#include "../vae/vae_tiny.h"

enum { C = 64, MAX_TENSORS = 256 };

typedef struct {
    st_entry e[MAX_TENSORS];
    int n;
    unsigned long long seed;
} tensors;

static float rnd(tensors *t) {
    t->seed = t->seed * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((t->seed >> 40) / 16777216.0 * 2.0 - 1.0);
}

/* nn.Conv2d's default init range, uniform in +-1/sqrt(fan_in). */
static void conv(tensors *t, int cout, int cin, int bias, const char *fmt, int idx, int sub) {
    char name[128];
    const int n = cout * cin * 9;
    for (int part = 0; part < 1 + bias; part++) {
        st_entry *e = &t->e[t->n++];
        if (sub >= 0)
            snprintf(name, sizeof name, fmt, idx, sub);
        else
            snprintf(name, sizeof name, fmt, idx);
        strcat(name, part ? ".bias" : ".weight");
        e->name = strdup(name);
        e->dtype = ST_F32;
        e->ndim = part ? 1 : 4;
        e->shape[0] = cout;
        if (!part) e->shape[1] = cin, e->shape[2] = e->shape[3] = 3;
        const int k = part ? cout : n;
        float *d = malloc((size_t)k * sizeof *d);
        for (int i = 0; i < k; i++) d[i] = rnd(t) / sqrtf((float)(cin * 9));
        e->data = d;
    }
}

static void blocks(tensors *t, const char *part, int *idx, int n) {
    char fmt[64];
    snprintf(fmt, sizeof fmt, "%s.layers.%%d.conv.%%d", part);
    for (int b = 0; b < n; b++, (*idx)++)
        for (int k = 0; k < 3; k++) conv(t, C, C, 1, fmt, *idx, 2 * k);
}

static int write_model(const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    struct stat s;
    if (stat(path, &s) == 0) return 0;
    mkdir(dir, 0755);
    tensors t = {.seed = 1};
    static const int enc[4] = {1, 3, 3, 3}, dec[4] = {3, 3, 3, 1};
    int idx = 0;
    for (int i = 0; i < 4; i++) {
        conv(&t, C, i ? C : 3, i == 0, "encoder.layers.%d", idx++, -1);
        blocks(&t, "encoder", &idx, enc[i]);
    }
    conv(&t, 4, C, 1, "encoder.layers.%d", idx, -1);
    conv(&t, C, 4, 1, "decoder.layers.%d", 0, -1);
    idx = 2;
    for (int i = 0; i < 4; i++) {
        blocks(&t, "decoder", &idx, dec[i]);
        if (i < 3) idx++;
        conv(&t, i < 3 ? C : 3, C, i == 3, "decoder.layers.%d", idx++, -1);
    }
    const sd_status st = st_write(path, t.e, t.n, NULL, 0);
    for (int i = 0; i < t.n; i++) free((void *)t.e[i].name), free((void *)t.e[i].data);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (st != SD_OK || !f) {
        fprintf(stderr, "tiny_vae_bench: cannot write %s: %s\n", dir, sd_last_error());
        if (f) fclose(f);
        return 1;
    }
    fputs(
        "{\"_class_name\": \"AutoencoderTiny\", \"latent_channels\": 4, \"scaling_factor\": 1.0}\n",
        f);
    fclose(f);
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const char *cache = "bench/cache", *threads = "1,2";
    int size = 512, runs = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--cache"))
            cache = argv[i + 1];
        else if (!strcmp(argv[i], "--size"))
            size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--runs"))
            runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = argv[i + 1];
    }
    if (size < 8 || size % 8 || runs < 1 || runs > 99) {
        fprintf(stderr, "usage: tiny_vae_bench [--cache DIR] [--size N (multiple of 8)] [--runs N] "
                        "[--threads 1,2]\n");
        return 2;
    }
    char dir[512];
    snprintf(dir, sizeof dir, "%s/taesd-full", cache);
    mkdir(cache, 0755);
    if (write_model(dir)) return 1;
    vae_tiny *m;
    if (vae_tiny_load(&m, dir, true, NULL) != SD_OK) {
        fprintf(stderr, "tiny_vae_bench: %s\n", sd_last_error());
        return 1;
    }
    const int l = size / 8;
    float *z = malloc((size_t)l * l * 4 * sizeof *z),
          *img = malloc((size_t)size * size * 3 * sizeof *img);
    tensors r = {.seed = 7};
    for (int i = 0; i < l * l * 4; i++) z[i] = 2 * rnd(&r);
    printf("tiny VAE (taesd shape, 64 channels), %dx%d image, median of %d after a warm-up\n", size,
           size, runs);
    printf("threads | decode (wall, CPU)  | encode (wall, CPU)\n");
    char json[512] = "";
    for (const char *p = threads; *p;) {
        const int n = atoi(p);
        sd_set_threads(n);
        double td[100], te[100], cd[100], ce[100];
        sd_status st = vae_tiny_decode(m, z, 1, l, l, img); /* warm-up: scratch, packing */
        for (int i = 0; i < runs && st == SD_OK; i++) {
            double t0 = now(), c0 = cpu_now();
            st = vae_tiny_decode(m, z, 1, l, l, img);
            td[i] = now() - t0, cd[i] = cpu_now() - c0;
        }
        if (st == SD_OK) st = vae_tiny_encode(m, img, 1, size, size, z);
        for (int i = 0; i < runs && st == SD_OK; i++) {
            double t0 = now(), c0 = cpu_now();
            st = vae_tiny_encode(m, img, 1, size, size, z);
            te[i] = now() - t0, ce[i] = cpu_now() - c0;
        }
        if (st != SD_OK) {
            fprintf(stderr, "tiny_vae_bench: %s\n", sd_last_error());
            return 1;
        }
        qsort(td, (size_t)runs, sizeof *td, cmp);
        qsort(te, (size_t)runs, sizeof *te, cmp);
        qsort(cd, (size_t)runs, sizeof *cd, cmp);
        qsort(ce, (size_t)runs, sizeof *ce, cmp);
        const int k = runs / 2;
        printf("%7d | %.3f s, %.3f s   | %.3f s, %.3f s\n", n, td[k], cd[k], te[k], ce[k]);
        snprintf(json + strlen(json), sizeof json - strlen(json),
                 "%s\"t%d\": {\"decode_s\": %.4f, "
                 "\"decode_cpu_s\": %.4f, \"encode_s\": %.4f, \"encode_cpu_s\": %.4f}",
                 *json ? ", " : "", n, td[k], cd[k], te[k], ce[k]);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    printf("BENCH_TINY {\"size\": %d, %s}\n", size, json);
    free(z), free(img);
    vae_tiny_free(m);
    return 0;
}

/* Times vae_decode / vae_encode, untiled or tiled, on random weights of a given AutoencoderKL
 * shape, and prints the scratch the library computes for the run and the process's peak RSS.
 *
 *   make build/libsd.a && gcc -std=c11 -O2 -fopenmp -D_GNU_SOURCE -I/usr/include/cjson \
 *       bench/vae_bench.c build/libsd.a -lopenblas -lcjson -lpng -ljpeg -lm -o build/vae_bench
 *   build/vae_bench sd15 64 64      # SD1.5 channels [128, 256, 512, 512], 64x64 latent -> 512x512
 *   build/vae_bench tiny 64 64      # the fixtures' [8, 16, 16, 16]
 *   build/vae_bench sd15 256 256 1 86 2560 dec   # 2048x2048 decode in tiles of 86 latent pixels
 *                                                # (overlap 21) storing up to 2560 MB; tile 0:
 *                                                # untiled, -1: the automatic choice; dec, enc
 *                                                # or both (default)
 *
 * The weights (uniform, scaled by 1/sqrt(fan_in); norms near 1) are written once to
 * bench/cache/vae-<name>/ and reused. Numbers are meaningless; only the time and memory matter.
 * Run one measurement per process: the peak RSS is the process's. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "../vae/vae_tiled.h"

typedef struct {
    st_entry *e;
    int n, cap;
    unsigned long long seed;
} tensor_list;

static float rnd(tensor_list *t) {
    t->seed = t->seed * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((t->seed >> 40) / 16777216.0 * 2.0 - 1.0);
}

static void add(tensor_list *t, int ndim, const int64_t *shape, float scale, float offset,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void add(tensor_list *t, int ndim, const int64_t *shape, float scale, float offset,
                const char *fmt, ...) {
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 256;
        t->e = realloc(t->e, (size_t)t->cap * sizeof *t->e);
    }
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    size_t n = 1;
    st_entry *e = &t->e[t->n++];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    e->dtype = ST_F32;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) n *= (size_t)(e->shape[i] = shape[i]);
    float *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = offset + scale * rnd(t);
    e->data = d;
}

static void conv(tensor_list *t, int cout, int cin, int k, const char *prefix) {
    const int64_t w[4] = {cout, cin, k, k}, b[1] = {cout};
    add(t, 4, w, 1.0f / sqrtf((float)(cin * k * k)), 0, "%s.weight", prefix);
    add(t, 1, b, 0.02f, 0, "%s.bias", prefix);
}

static void norm(tensor_list *t, int c, const char *prefix) {
    const int64_t s[1] = {c};
    add(t, 1, s, 0.1f, 1.0f, "%s.weight", prefix);
    add(t, 1, s, 0.1f, 0.0f, "%s.bias", prefix);
}

static void resnet(tensor_list *t, int cin, int cout, const char *prefix) {
    char p[200];
    snprintf(p, sizeof p, "%s.norm1", prefix), norm(t, cin, p);
    snprintf(p, sizeof p, "%s.conv1", prefix), conv(t, cout, cin, 3, p);
    snprintf(p, sizeof p, "%s.norm2", prefix), norm(t, cout, p);
    snprintf(p, sizeof p, "%s.conv2", prefix), conv(t, cout, cout, 3, p);
    if (cin != cout) snprintf(p, sizeof p, "%s.conv_shortcut", prefix), conv(t, cout, cin, 1, p);
}

static void mid(tensor_list *t, int c, const char *prefix) {
    char p[200];
    const int64_t w[2] = {c, c}, b[1] = {c};
    static const char *proj[] = {"to_q", "to_k", "to_v", "to_out.0"};
    for (int i = 0; i < 2; i++) snprintf(p, sizeof p, "%s.resnets.%d", prefix, i), resnet(t, c, c, p);
    snprintf(p, sizeof p, "%s.attentions.0.group_norm", prefix), norm(t, c, p);
    for (int i = 0; i < 4; i++) {
        add(t, 2, w, 1.0f / sqrtf((float)c), 0, "%s.attentions.0.%s.weight", prefix, proj[i]);
        add(t, 1, b, 0.02f, 0, "%s.attentions.0.%s.bias", prefix, proj[i]);
    }
}

static int make_model(const char *dir, const int *boc, int nb, int lpb, int groups, int lat) {
    char path[512], p[200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (sd_file_exists(path)) return 0;
    mkdir("bench/cache", 0755);
    mkdir(dir, 0755);
    tensor_list t = {0};
    t.seed = 1234;
    conv(&t, boc[0], 3, 3, "encoder.conv_in");
    int prev = boc[0];
    for (int i = 0; i < nb; i++) {
        for (int j = 0; j < lpb; j++) {
            snprintf(p, sizeof p, "encoder.down_blocks.%d.resnets.%d", i, j);
            resnet(&t, j ? boc[i] : prev, boc[i], p);
        }
        if (i < nb - 1) snprintf(p, sizeof p, "encoder.down_blocks.%d.downsamplers.0.conv", i), conv(&t, boc[i], boc[i], 3, p);
        prev = boc[i];
    }
    mid(&t, boc[nb - 1], "encoder.mid_block");
    norm(&t, boc[nb - 1], "encoder.conv_norm_out");
    conv(&t, 2 * lat, boc[nb - 1], 3, "encoder.conv_out");
    conv(&t, 2 * lat, 2 * lat, 1, "quant_conv");
    conv(&t, lat, lat, 1, "post_quant_conv");
    conv(&t, boc[nb - 1], lat, 3, "decoder.conv_in");
    mid(&t, boc[nb - 1], "decoder.mid_block");
    prev = boc[nb - 1];
    for (int i = 0; i < nb; i++) {
        const int c = boc[nb - 1 - i];
        for (int j = 0; j <= lpb; j++) {
            snprintf(p, sizeof p, "decoder.up_blocks.%d.resnets.%d", i, j);
            resnet(&t, j ? c : prev, c, p);
        }
        if (i < nb - 1) snprintf(p, sizeof p, "decoder.up_blocks.%d.upsamplers.0.conv", i), conv(&t, c, c, 3, p);
        prev = c;
    }
    norm(&t, boc[0], "decoder.conv_norm_out");
    conv(&t, 3, boc[0], 3, "decoder.conv_out");
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    sd_status st = st_write(path, t.e, t.n, NULL, 0);
    for (int i = 0; i < t.n; i++) free((void *)t.e[i].name), free((void *)t.e[i].data);
    free(t.e);
    if (st != SD_OK) return fprintf(stderr, "%s\n", sd_last_error()), 1;
    FILE *fp = fopen((snprintf(path, sizeof path, "%s/config.json", dir), path), "w");
    fprintf(fp, "{\"block_out_channels\": [");
    for (int i = 0; i < nb; i++) fprintf(fp, "%s%d", i ? ", " : "", boc[i]);
    fprintf(fp, "], \"layers_per_block\": %d, \"norm_num_groups\": %d, \"latent_channels\": %d,"
                " \"down_block_types\": [", lpb, groups, lat);
    for (int i = 0; i < nb; i++) fprintf(fp, "%s\"DownEncoderBlock2D\"", i ? ", " : "");
    fprintf(fp, "], \"up_block_types\": [");
    for (int i = 0; i < nb; i++) fprintf(fp, "%s\"UpDecoderBlock2D\"", i ? ", " : "");
    fprintf(fp, "]}\n");
    fclose(fp);
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double peak_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

int main(int argc, char **argv) {
    const char *kind = argc > 1 ? argv[1] : "tiny";
    const int h = argc > 2 ? atoi(argv[2]) : 64, w = argc > 3 ? atoi(argv[3]) : 64;
    const int reps = argc > 4 ? atoi(argv[4]) : 1;
    int tile = argc > 5 ? atoi(argv[5]) : 0;
    const size_t limit = (size_t)(argc > 6 ? atol(argv[6]) : VAE_AUTO_TILE_LIMIT_MB) << 20;
    const char *what = argc > 7 ? argv[7] : "both";
    static const int sd15[4] = {128, 256, 512, 512}, tiny[4] = {8, 16, 16, 16};
    const int is_sd = !strcmp(kind, "sd15");
    char dir[256];
    snprintf(dir, sizeof dir, "bench/cache/vae-%s", is_sd ? "sd15" : "tiny");
    if (make_model(dir, is_sd ? sd15 : tiny, 4, 2, is_sd ? 32 : 8, 4)) return 1;
    vae *m;
    if (vae_load(&m, dir, NULL) != SD_OK) return fprintf(stderr, "%s\n", sd_last_error()), 1;
    const int f = vae_scale_factor(m);
    printf("%s, latent %dx%d, loaded: peak RSS %.0f MB\n", kind, w, h, peak_mb());
    float *z = malloc((size_t)h * w * 4 * sizeof *z), *img = malloc((size_t)h * f * w * f * 3 * sizeof *img);
    for (size_t i = 0; i < (size_t)h * w * 4; i++) z[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    for (size_t i = 0; i < (size_t)h * f * w * f * 3; i++) img[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    const bool dec = strcmp(what, "enc") != 0, enc = strcmp(what, "dec") != 0;
    for (int r = 0; dec && r < reps; r++) {
        const int t = tile < 0 ? vae_auto_tile(m, h, w, limit) : tile;
        double cost = 0;
        size_t bytes = t ? vt_decode_bytes(m, h, w, t, t / 4, limit, NULL, &cost) : vae_decode_scratch_bytes(m, h, w, 0, 0);
        vt_net net;
        vt_decoder_net(m, &net);
        const double t0 = now();
        sd_status st = t ? vae_decode_tiled(m, z, 1, h, w, t, t / 4, limit, img) : vae_decode(m, z, 1, h, w, img);
        if (st != SD_OK) return fprintf(stderr, "%s\n", sd_last_error()), 1;
        printf("%s decode %dx%d latent -> %dx%d, tile %d: %.3f s (%.3g us per pixel), scratch %zu MB "
               "(tiled part %.2f x its untiled multiply-adds), peak RSS %.0f MB\n", kind, w, h, w * f,
               h * f, t, now() - t0, (now() - t0) * 1e6 / ((double)h * f * w * f), bytes >> 20,
               t ? cost / vt_net_cost(&net, h, w) : 1.0, peak_mb());
    }
    if (enc) {
        float *mean = malloc((size_t)h * w * 4 * sizeof *mean), *lv = malloc((size_t)h * w * 4 * sizeof *lv);
        const int t = tile < 0 ? vae_auto_tile_encode(m, h * f, w * f, limit) : tile;
        double cost = 0;
        size_t bytes = t ? vt_encode_bytes(m, h, w, t, t / 4, limit, NULL, &cost) : vae_encode_scratch_bytes(m, h * f, w * f, 0, 0);
        vt_net net;
        vt_encoder_net(m, &net);
        const double t0 = now();
        sd_status st = t ? vae_encode_tiled(m, img, 1, h * f, w * f, t, t / 4, limit, mean, lv)
                         : vae_encode(m, img, 1, h * f, w * f, mean, lv);
        if (st != SD_OK) return fprintf(stderr, "%s\n", sd_last_error()), 1;
        printf("%s encode %dx%d image, tile %d: %.3f s, scratch %zu MB (tiled part %.2f x its "
               "untiled multiply-adds), peak RSS %.0f MB\n", kind, w * f, h * f, t, now() - t0,
               bytes >> 20, t ? cost / vt_net_cost(&net, h, w) : 1.0, peak_mb());
        free(mean), free(lv);
    }
    free(z), free(img);
    vae_free(m);
    return 0;
}

/* vae-check: decode latents with a model's VAE, or round-trip an image through it, and measure.
 *
 *   vae-check -m DIR --latents FILE.safetensors[:TENSOR] [-o out.png] [--raw] [--reference REF]
 *   vae-check -m DIR --image in.png [-o recon.png] [--reference REF]
 *
 * Only the VAE is loaded. Latents are NCHW as diffusers and `gen --save-latents` keep them. Each
 * comparison prints one line on stdout, "psnr=X ssim=Y" for the round trip and "reference psnr=X
 * ssim=Y" against --reference; exit status 1 when the PSNR checked is under --min-psnr, 2 for a
 * bad command line, 1 for any other failure (one line on stderr naming the file or tensor). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "../core/layout.h"
#include "../core/safetensors.h"
#include "../include/sd.h"
#include "../vae/vae.h"
#include "common/imgcmp.h"
#include "common/options.h"

static void usage(FILE *fp) {
    fprintf(fp,
            "usage: vae-check -m DIR --latents FILE.safetensors[:TENSOR] [-o out.png] [options]\n"
            "       vae-check -m DIR --image in.png [-o recon.png] [options]\n\n"
            "Decodes latents with a model's VAE (AutoencoderKL), or encodes an image (posterior mean)\n"
            "and decodes it again, and measures the result. Only the VAE is loaded.\n\n"
            "options:\n"
            "  -m, --model DIR        diffusers model folder (its vae/ is used) or a VAE folder\n"
            "                         (default: $SD_MODEL)\n"
            "      --latents FILE[:TENSOR]\n"
            "                         safetensors latents, NCHW [batch][channels][h][w], F32/F16/BF16\n"
            "                         (tensor 'latents' unless named), as the pipeline holds them before\n"
            "                         the VAE: divided by the VAE's scaling_factor and shifted by its\n"
            "                         shift_factor before decoding. `gen --save-latents` files work\n"
            "      --raw              the latents are the decoder's input already (no scaling)\n"
            "      --image FILE       PNG/JPEG to encode and decode; prints psnr=X ssim=Y of the round\n"
            "                         trip (sides must be multiples of the VAE's factor, 8 for SD)\n"
            "  -o, --output FILE      the decoded image, .png or .jpg/.jpeg (--latents: default out.png;\n"
            "                         a batch writes out-0.png, out-1.png ...; --image: only if given)\n"
            "      --quality N        JPEG quality 1..100 (default 90)\n"
            "      --reference FILE   compare the decoded image with FILE: prints reference psnr=X ssim=Y\n"
            "      --min-psnr X       exit 1 when the PSNR is under X dB: the reference comparison's, or\n"
            "                         the round trip's without --reference (default 30 with --reference,\n"
            "                         no limit for a round trip)\n"
            "      --tile N|auto      decode in tiles of N x N latent pixels (8N image pixels for SD), for\n"
            "                         images too large to decode at once; within one level of the\n"
            "                         untiled decode, several times slower (0: untiled, the default);\n"
            "                         auto: tiled only when the untiled decode's scratch is over\n"
            "                         $SD_VAE_TILE_LIMIT_MB (default 2560), as gen --vae-tile auto\n"
            "      --tile-overlap N   blending band between tiles in latent pixels (default N/4)\n"
            "  -t, --threads N        threads (default: all cores)\n"
            "  -q, --quiet            no messages on stderr besides errors\n"
            "  -h, --help             this text\n"
            "      --version          the version\n\n"
            "PSNR is 10 log10(255^2 / MSE) over the 8-bit RGB values (as written to a PNG); SSIM is\n"
            "the mean SSIM of Wang et al. (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) on\n"
            "each of R, G, B, averaged over the three channels.\n");
}

/* --tile auto: vae_auto_tile decides, as gen's --vae-tile auto does. */
enum { TILE_AUTO = -1 };

typedef struct {
    const char *model, *latents, *image, *output, *reference;
    bool raw, quiet, min_psnr_given;
    double min_psnr;
    int quality, tile, overlap, threads;
} options;

static int fail_usage(const char *msg, const char *arg) {
    fprintf(stderr, "vae-check: %s%s%s (see --help)\n", msg, arg ? " " : "", arg ? arg : "");
    return 2;
}

static bool to_int(const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

/* 0: run, 1: done (help, version), 2: usage error (printed). */
static int parse_args(options *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->model = getenv("SD_MODEL");
    if (o->model && !*o->model) o->model = NULL;
    o->quality = 90;
    o->overlap = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--version")) {
            printf("vae-check %s (sd engine)\n", SD_VERSION);
            return 1;
        }
        if (!strcmp(a, "--raw")) { o->raw = true; continue; }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { o->quiet = true; continue; }
        static const char *const valued[] = {"-m", "--model", "--latents", "--image", "-o",
                                             "--output", "--reference", "--min-psnr", "--quality",
                                             "--tile", "--tile-overlap", "-t", "--threads"};
        bool known = false;
        for (size_t k = 0; k < sizeof valued / sizeof *valued; k++) known |= !strcmp(a, valued[k]);
        if (!known) return fail_usage(a[0] == '-' ? "unknown option" : "unexpected argument", a);
        if (!v) return fail_usage("a value is missing after", a);
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--latents")) o->latents = v;
        else if (!strcmp(a, "--image")) o->image = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) o->output = v;
        else if (!strcmp(a, "--reference")) o->reference = v;
        else if (!strcmp(a, "--min-psnr")) {
            char *end;
            o->min_psnr = strtod(v, &end);
            if (!*v || *end || !isfinite(o->min_psnr)) return fail_usage("--min-psnr needs a number, not", v);
            o->min_psnr_given = true;
        } else if (!strcmp(a, "--quality")) {
            if (!to_int(v, 1, 100, &o->quality)) return fail_usage("--quality needs 1..100, not", v);
        } else if (!strcmp(a, "--tile")) {
            if (!strcmp(v, "auto")) o->tile = TILE_AUTO;
            else if (!to_int(v, 0, 1 << 16, &o->tile)) return fail_usage("--tile needs latent pixels >= 0 or auto, not", v);
        } else if (!strcmp(a, "--tile-overlap")) {
            if (!to_int(v, 0, 1 << 16, &o->overlap)) return fail_usage("--tile-overlap needs >= 0, not", v);
        } else if (!to_int(v, 0, 4096, &o->threads)) {
            return fail_usage("--threads needs 0..4096, not", v);
        }
    }
    if (!o->model) return fail_usage("no model: pass -m DIR or set SD_MODEL", NULL);
    if (!o->latents == !o->image) return fail_usage("give exactly one of --latents and --image", NULL);
    if (o->image && o->raw) return fail_usage("--raw applies to --latents only", NULL);
    if (o->tile == TILE_AUTO && o->overlap >= 0)
        return fail_usage("--tile-overlap goes with --tile N (auto picks tile / 4)", NULL);
    if (o->overlap < 0 && o->tile > 0) o->overlap = o->tile / 4;
    if (o->tile > 0 && o->overlap >= o->tile)
        return fail_usage("--tile-overlap must be smaller than --tile", NULL);
    if (!o->min_psnr_given) o->min_psnr = o->reference ? 30.0 : -INFINITY;
    if (o->latents && !o->output) o->output = "out.png";
    return 0;
}

/* DIR/vae when it has a config.json, else DIR itself when it has one. */
static sd_status vae_dir(const char *model, char **out) {
    char *sub = sd_path_join(model, "vae"), *cfg = sub ? sd_path_join(sub, "config.json") : NULL;
    char *own = sd_path_join(model, "config.json");
    sd_status st = SD_OK;
    if (!sub || !cfg || !own) {
        st = sd_set_error(SD_ERR_NOMEM, "out of memory");
    } else if (sd_file_exists(cfg)) {
        *out = sub;
        sub = NULL;
    } else if (sd_file_exists(own)) {
        *out = strdup(model);
    } else {
        st = sd_set_error(SD_ERR_IO, "%s: no vae/config.json (nor config.json): not a diffusers "
                          "model or VAE folder", model);
    }
    free(sub), free(cfg), free(own);
    return st;
}

/* Reads FILE[:TENSOR] as NHWC floats checked against the VAE's latent channels. */
static sd_status read_latents(const char *spec, const vae_config *vc, float **out, int *n, int *h,
                              int *w) {
    char *file = strdup(spec);
    if (!file) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    const char *name = "latents";
    char *colon = strrchr(file, ':');
    if (colon && colon - file >= 12 && !strncmp(colon - 12, ".safetensors", 12)) {
        *colon = '\0';
        name = colon + 1;
    }
    st_file f;
    sd_status st = st_open(&f, file);
    if (st != SD_OK) {
        free(file);
        return st;
    }
    const st_tensor *t = st_find(&f, name);
    if (!t) {
        char list[512] = "";
        for (int i = 0; i < f.n_tensors && strlen(list) < 400; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s'%s'", i ? ", " : "", f.tensors[i].name);
        st = sd_set_error(SD_ERR_TENSOR, "%s: no tensor '%s' (it has %s; name one with FILE:TENSOR)",
                          file, name, f.n_tensors ? list : "none");
    } else if (!st_is_float(t->dtype)) {
        st = sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' is %s, not a float tensor", file, name,
                          st_dtype_name(t->dtype));
    } else if (t->ndim != 4 || t->shape[0] < 1 || t->shape[2] < 1 || t->shape[3] < 1 ||
               t->shape[2] > 8192 || t->shape[3] > 8192 || t->shape[0] > 64) {
        st = sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' should be NCHW latents [batch][channels][h][w] "
                          "(batch up to 64, sides up to 8192), not of %d dimensions", file, name, t->ndim);
    } else if (t->shape[1] != vc->latent_channels) {
        st = sd_set_error(SD_ERR_TENSOR, "%s: tensor '%s' has %lld channels; this VAE takes %d", file,
                          name, (long long)t->shape[1], vc->latent_channels);
    } else {
        *n = (int)t->shape[0], *h = (int)t->shape[2], *w = (int)t->shape[3];
        const size_t count = (size_t)st_numel(t);
        float *nchw = malloc(count * sizeof *nchw);
        *out = malloc(count * sizeof **out);
        if (!nchw || !*out) {
            free(*out);
            *out = NULL;
            st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory", file);
        } else {
            st_to_f32(t, nchw);
            layout_nchw_to_nhwc(nchw, *out, *n, vc->latent_channels, *h, *w);
        }
        free(nchw);
    }
    st_close(&f);
    free(file);
    return st;
}

/* Decodes z [n][h][w][L] (unscaled) into 8-bit images. */
static sd_status decode(vae *m, const options *o, const float *z, int n, int h, int w, sd_image *imgs) {
    const int f = vae_scale_factor(m), W = w * f, H = h * f;
    if (vae_get_config(m)->out_channels != 3)
        return sd_set_error(SD_ERR_UNSUPPORTED, "the VAE has %d output channels; images need 3",
                            vae_get_config(m)->out_channels);
    float *x = malloc((size_t)n * W * H * 3 * sizeof *x);
    if (!x) return sd_set_error(SD_ERR_NOMEM, "out of memory for a %dx%d decode", W, H);
    int tile = o->tile, overlap = o->overlap;
    sd_status st = SD_OK;
    if (tile == TILE_AUTO) {
        size_t limit = 0;
        st = vae_auto_tile_limit(&limit);
        if (st == SD_OK) tile = vae_auto_tile(m, h, w, limit), overlap = tile / 4;
        if (st == SD_OK && !o->quiet)
            fprintf(stderr, "tile auto: untiled scratch %zu MB, limit %zu MB: %s",
                    vae_decode_scratch_bytes(m, h, w, 0, 0) >> 20, limit >> 20,
                    tile ? "tiles of " : "untiled\n");
        if (st == SD_OK && !o->quiet && tile)
            fprintf(stderr, "%d latent pixels, overlap %d (scratch %zu MB)\n", tile, overlap,
                    vae_decode_scratch_bytes(m, h, w, tile, overlap) >> 20);
    }
    if (st == SD_OK)
        st = tile ? vae_decode_tiled(m, z, n, h, w, tile, overlap, x) : vae_decode(m, z, n, h, w, x);
    for (int b = 0; b < n && st == SD_OK; b++) {
        st = image_alloc(&imgs[b], W, H);
        if (st == SD_OK) image_from_float(x + (size_t)b * W * H * 3, W, H, imgs[b].rgb);
    }
    free(x);
    return st;
}

/* Prints "<label>psnr=X ssim=Y"; *below when the PSNR is under the limit. */
static sd_status measure(const char *label, const sd_image *got, const sd_image *want, double limit,
                         bool *below) {
    imgcmp_stats s;
    double ssim;
    SD_TRY(imgcmp_compare(got, want, &s));
    SD_TRY(imgcmp_ssim(got, want, &ssim));
    char psnr[32];
    printf("%spsnr=%s ssim=%.6f\n", label, imgcmp_psnr_text(s.psnr, psnr, sizeof psnr), ssim);
    *below = s.psnr < limit;
    return SD_OK;
}

static sd_status write_images(const options *o, const sd_image *imgs, int n) {
    for (int b = 0; b < n; b++) {
        char *path = cli_indexed_path(o->output, b, n);
        if (!path) return sd_set_error(SD_ERR_NOMEM, "out of memory");
        sd_status st = image_write(path, &imgs[b], NULL, 0, o->quality);
        if (st == SD_OK && !o->quiet) fprintf(stderr, "wrote %s (%dx%d)\n", path, imgs[b].width, imgs[b].height);
        free(path);
        SD_TRY(st);
    }
    return SD_OK;
}

/* Encodes the image (posterior mean) and decodes it: *recon. */
static sd_status round_trip(vae *m, const options *o, const sd_image *in, sd_image *recon) {
    const int f = vae_scale_factor(m), W = in->width, H = in->height;
    const int l = vae_get_config(m)->latent_channels;
    if (W % f || H % f)
        return sd_set_error(SD_ERR_ARG, "%s: %dx%d is not a multiple of %d on each side", o->image, W,
                            H, f);
    const size_t nl = (size_t)(W / f) * (H / f) * l;
    float *x = malloc((size_t)W * H * 3 * sizeof *x), *mean = malloc(nl * sizeof *mean);
    float *logvar = malloc(nl * sizeof *logvar);
    sd_status st = x && mean && logvar ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    if (st == SD_OK) {
        image_to_float(in->rgb, W, H, x);
        st = vae_encode(m, x, 1, H, W, mean, logvar);
    }
    if (st == SD_OK) st = decode(m, o, mean, 1, H / f, W / f, recon);
    free(x), free(mean), free(logvar);
    return st;
}

static int run(const options *o, vae *m) {
    sd_image *imgs = NULL, input = {0}, ref = {0};
    int n = 0, rc = 0;
    bool below = false;
    sd_status st = SD_OK;
    if (o->reference) st = image_read(o->reference, &ref);
    if (st == SD_OK && o->latents) {
        float *z = NULL;
        int h, w;
        st = read_latents(o->latents, vae_get_config(m), &z, &n, &h, &w);
        if (st == SD_OK && o->reference && n > 1)
            st = sd_set_error(SD_ERR_ARG, "--reference compares one image; %s holds a batch of %d",
                              o->latents, n);
        if (st == SD_OK && !o->raw) vae_unscale_latents(m, z, z, (size_t)n * h * w * vae_get_config(m)->latent_channels);
        if (st == SD_OK) st = (imgs = calloc((size_t)n, sizeof *imgs)) ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
        if (st == SD_OK) st = decode(m, o, z, n, h, w, imgs);
        free(z);
    } else if (st == SD_OK) {
        n = 1;
        st = image_read(o->image, &input);
        if (st == SD_OK) st = (imgs = calloc(1, sizeof *imgs)) ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
        if (st == SD_OK) st = round_trip(m, o, &input, imgs);
        if (st == SD_OK) st = measure("", imgs, &input, o->reference ? -INFINITY : o->min_psnr, &below);
    }
    if (st == SD_OK && o->output) st = write_images(o, imgs, n);
    if (st == SD_OK && o->reference) {
        if (imgs[0].width != ref.width || imgs[0].height != ref.height)
            st = sd_set_error(SD_ERR_ARG, "%s is %dx%d; the decoded image is %dx%d", o->reference,
                              ref.width, ref.height, imgs[0].width, imgs[0].height);
        else
            st = measure("reference ", imgs, &ref, o->min_psnr, &below);
    }
    if (st != SD_OK) {
        fprintf(stderr, "vae-check: %s\n", sd_last_error());
        rc = 1;
    } else if (below) {
        fprintf(stderr, "vae-check: PSNR under --min-psnr %g\n", o->min_psnr);
        rc = 1;
    }
    for (int b = 0; imgs && b < n; b++) image_free(&imgs[b]);
    free(imgs);
    image_free(&input), image_free(&ref);
    return rc;
}

int main(int argc, char **argv) {
    options o;
    int rc = parse_args(&o, argc, argv);
    if (rc) return rc == 1 ? 0 : 2;
    sd_set_threads(o.threads);
    char *dir = NULL;
    vae *m = NULL;
    if (vae_dir(o.model, &dir) != SD_OK || vae_load_opt(&m, dir, o.image != NULL, NULL) != SD_OK) {
        fprintf(stderr, "vae-check: %s\n", sd_last_error());
        free(dir);
        return 1;
    }
    free(dir);
    rc = run(&o, m);
    vae_free(m);
    return rc;
}

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

#include "../include/sd.h"
#include "common/imgcmp.h"
#include "common/options.h"
#include "common/settings.h"
#include "common/util.h"

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
            "      --tile N|auto      decode (and --image: encode) in tiles of N x N latent pixels (8N\n"
            "                         image pixels for SD), for images too large to run at once; within\n"
            "                         one level of the untiled decode, slower (0: untiled, the default);\n"
            "                         auto: tiled only when the untiled pass's scratch is over\n"
            "                         $SD_VAE_TILE_LIMIT_MB (default 2560), as gen --vae-tile auto. Tiles\n"
            "                         store whole-image activations up to that limit to go faster\n"
            "      --tile-overlap N   blending band between tiles in latent pixels (default N/4)\n"
            "  -t, --threads N        threads (default: all cores)\n"
            "  -q, --quiet            no messages on stderr besides errors\n"
            "  -h, --help             this text\n"
            "      --version          the version\n\n"
            "PSNR is 10 log10(255^2 / MSE) over the 8-bit RGB values (as written to a PNG); SSIM is\n"
            "the mean SSIM of Wang et al. (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) on\n"
            "each of R, G, B, averaged over the three channels.\n");
}

/* --tile auto: the library decides by size, as gen's --vae-tile auto does. */
enum { TILE_AUTO = -1 };

typedef struct {
    const char *model, *latents, *image, *output, *reference;
    bool raw, quiet, min_psnr_given;
    double min_psnr;
    int quality, tile, overlap, threads;
    int tile_limit_mb; /* $SD_VAE_TILE_LIMIT_MB */
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
            printf("vae-check %s (sd engine)\n", sd_version());
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

/* Reads FILE[:TENSOR] (the tensor named after the last colon that follows ".safetensors"). */
static sd_status read_latents(const char *spec, sd_latents *out) {
    char *file = strdup(spec);
    if (!file) return cli_fail(SD_ERR_NOMEM, "out of memory");
    const char *name = NULL;
    char *colon = strrchr(file, ':');
    if (colon && colon - file >= 12 && !strncmp(colon - 12, ".safetensors", 12)) {
        *colon = '\0';
        name = colon + 1;
    }
    const sd_status st = sd_latents_read(file, name, out);
    free(file);
    return st;
}

/* The options' tiling (of the decode and the encode); raw latents with --raw. */
static sd_vae_decode_params tiling(const options *o) {
    sd_vae_decode_params dp;
    sd_vae_decode_params_init(&dp);
    dp.raw = o->raw;
    /* vae-check's --tile: 0 untiled (the default), auto by size; the library's 0 is by size. */
    dp.tile = o->tile == TILE_AUTO ? 0 : o->tile == 0 ? -1 : o->tile;
    dp.tile_overlap = o->tile > 0 ? o->overlap : -1;
    dp.tile_limit_mb = o->tile_limit_mb;
    return dp;
}

/* Decodes z into n = z->n images. */
static sd_status decode(sd_vae *v, const options *o, const sd_latents *z, sd_image *imgs) {
    const sd_vae_decode_params dp = tiling(o);
    return sd_vae_decode(v, z, &dp, imgs);
}

/* Prints "<label>psnr=X ssim=Y"; *below when the PSNR is under the limit. */
static sd_status measure(const char *label, const sd_image *got, const sd_image *want, double limit,
                         bool *below) {
    imgcmp_stats s;
    double ssim;
    CLI_TRY(imgcmp_compare(got, want, &s));
    CLI_TRY(imgcmp_ssim(got, want, &ssim));
    char psnr[32];
    printf("%spsnr=%s ssim=%.6f\n", label, imgcmp_psnr_text(s.psnr, psnr, sizeof psnr), ssim);
    *below = s.psnr < limit;
    return SD_OK;
}

static sd_status write_images(const options *o, const sd_image *imgs, int n) {
    for (int b = 0; b < n; b++) {
        char *path = cli_indexed_path(o->output, b, n);
        if (!path) return cli_fail(SD_ERR_NOMEM, "out of memory");
        sd_status st = sd_image_write(path, &imgs[b], NULL, 0, o->quality);
        if (st == SD_OK && !o->quiet) fprintf(stderr, "wrote %s (%dx%d)\n", path, imgs[b].width, imgs[b].height);
        free(path);
        CLI_TRY(st);
    }
    return SD_OK;
}

/* Encodes the image (posterior mean) and decodes it: *recon. Raw both ways: the decoder gets the
 * encoder's output unchanged. */
static sd_status round_trip(sd_vae *v, const options *o, const sd_image *in, sd_image *recon) {
    sd_latents z;
    sd_vae_decode_params ep = tiling(o);
    ep.raw = true;
    sd_status st = sd_vae_encode_opt(v, in, &ep, &z);
    if (st != SD_OK) return cli_fail(st, "%s: %s", o->image, sd_last_error());
    options raw = *o;
    raw.raw = true;
    st = decode(v, &raw, &z, recon);
    sd_latents_free(&z);
    return st;
}

static int run(const options *o, sd_vae *v) {
    sd_image *imgs = NULL, input = {0}, ref = {0};
    int n = 0, rc = 0;
    bool below = false;
    sd_status st = SD_OK;
    if (o->reference) st = sd_image_read(o->reference, &ref);
    if (st == SD_OK && o->latents) {
        sd_latents z = {0};
        st = read_latents(o->latents, &z);
        n = z.n;
        if (st == SD_OK && o->reference && n > 1)
            st = cli_fail(SD_ERR_ARG, "--reference compares one image; %s holds a batch of %d",
                          o->latents, n);
        if (st == SD_OK && !(imgs = calloc((size_t)n, sizeof *imgs)))
            st = cli_fail(SD_ERR_NOMEM, "out of memory");
        if (st == SD_OK && (st = decode(v, o, &z, imgs)) != SD_OK)
            st = cli_fail(st, "%s: %s", o->latents, sd_last_error());
        sd_latents_free(&z);
    } else if (st == SD_OK) {
        n = 1;
        st = sd_image_read(o->image, &input);
        if (st == SD_OK && !(imgs = calloc(1, sizeof *imgs)))
            st = cli_fail(SD_ERR_NOMEM, "out of memory");
        if (st == SD_OK) st = round_trip(v, o, &input, imgs);
        if (st == SD_OK) st = measure("", imgs, &input, o->reference ? -INFINITY : o->min_psnr, &below);
    }
    if (st == SD_OK && o->output) st = write_images(o, imgs, n);
    if (st == SD_OK && o->reference) {
        if (imgs[0].width != ref.width || imgs[0].height != ref.height)
            st = cli_fail(SD_ERR_ARG, "%s is %dx%d; the decoded image is %dx%d", o->reference,
                          ref.width, ref.height, imgs[0].width, imgs[0].height);
        else
            st = measure("reference ", imgs, &ref, o->min_psnr, &below);
    }
    if (st != SD_OK) {
        fprintf(stderr, "vae-check: %s\n", cli_error());
        rc = 1;
    } else if (below) {
        fprintf(stderr, "vae-check: PSNR under --min-psnr %g\n", o->min_psnr);
        rc = 1;
    }
    for (int b = 0; imgs && b < n; b++) sd_image_free(&imgs[b]);
    free(imgs);
    sd_image_free(&input), sd_image_free(&ref);
    return rc;
}

int main(int argc, char **argv) {
    options o;
    int rc = parse_args(&o, argc, argv);
    if (rc) return rc == 1 ? 0 : 2;
    const char *err = NULL;
    if (!cli_settings_from_env(&o.tile_limit_mb, &err)) {
        fprintf(stderr, "vae-check: %s\n", err);
        return 1;
    }
    /* INFO too: the automatic tile choice is worth seeing. */
    if (!o.quiet) cli_log_to_stderr("vae-check", SD_LOG_INFO);
    sd_vae_params vp;
    sd_vae_params_init(&vp);
    vp.threads = o.threads;
    vp.decoder_only = o.image == NULL;
    sd_vae *v = NULL;
    if (sd_vae_load(&v, o.model, &vp) != SD_OK) {
        fprintf(stderr, "vae-check: %s\n", cli_error());
        return 1;
    }
    rc = run(&o, v);
    sd_vae_free(v);
    return rc;
}

/* gen: text-to-image from a diffusers model folder.
 *
 *   gen [options] "PROMPT"
 *
 * Errors are one line on stderr and a non-zero exit; files are written through a temporary name
 * and a rename, so an existing output is never left half-written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/safetensors.h"
#include "../include/sd.h"
#include "../schedulers/scheduler.h"
#include "common/options.h"

static void usage(FILE *fp) {
    fprintf(fp, "usage: gen [options] \"PROMPT\"\n\n"
                "Writes the image diffusers' pipeline would produce for PROMPT with a Stable Diffusion\n"
                "model in diffusers format (SD 1.x, 2.x, SDXL, SD 3 and 3.5) or a FLUX.1 model.\n\n"
                "options:\n%s"
                "  -o, --output FILE        .png, or .jpg/.jpeg (default out.png)\n"
                "      --quality N          JPEG quality 1..100 (default 90)\n"
                "      --save-latents FILE  also write the final latents (NCHW safetensors, tensor\n"
                "                           'latents', as diffusers has them before the VAE)\n"
                "      --print-tokens       print the padded token ids of PROMPT per tokenizer, exit\n"
                "  -q, --quiet              no progress line and no messages (errors still print)\n"
                "  -h, --help               this text\n"
                "      --version            the version\n\n"
                "PNG files carry the settings in a 'parameters' text chunk, in the format A1111 and\n"
                "ComfyUI read (prompt, negative prompt, steps, sampler, CFG scale, seed, size, model).\n"
                "Options may come before or after PROMPT; '--' ends them (for a prompt starting with\n"
                "'-'). Exit status: 0 done, 1 failed (one line on stderr names the file, tensor or key\n"
                "at fault), 2 bad command line.\n",
            cli_gen_options_help());
}

static const char *no_model_message =
    "gen: no model: pass -m DIR or set SD_MODEL to a diffusers model folder (model_index.json plus\n"
    "one folder per component), e.g. a download of runwayml/stable-diffusion-v1-5 or\n"
    "stabilityai/stable-diffusion-2-1 from the Hugging Face hub with its safetensors weights.\n"
    "Supported families: Stable Diffusion 1.x and 2.x (StableDiffusionPipeline), SDXL\n"
    "(StableDiffusionXLPipeline), SD 3 and 3.5 (StableDiffusion3Pipeline), FLUX.1 dev and\n"
    "schnell (FluxPipeline, e.g. black-forest-labs/FLUX.1-schnell).\n";

static void list_schedulers(void) {
    const sched_info *info;
    int n = sched_list(&info);
    printf("schedulers (diffusers class names; aliases in brackets):\n");
    for (int i = 0; i < n; i++)
        printf("  %-34s [%s]\n      %s\n", info[i].class_name, info[i].aliases, info[i].description);
}

typedef struct {
    double start;
    int tty;
} progress;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int on_event(void *user, const sd_event *ev) {
    progress *pr = user;
    if (ev->kind == SD_EVENT_STEP) {
        double el = now_s() - pr->start;
        fprintf(stderr, "\rstep %d/%d  %.1f s  (%.2f s/step)   ", ev->index + 1, ev->total, el,
                el / (ev->index + 1));
        if (ev->index + 1 == ev->total) fprintf(stderr, "\n");
    } else if (ev->kind == SD_EVENT_DECODE) {
        fprintf(stderr, "decoding...\r");
    }
    return 0;
}

static uint64_t random_seed(void) {
    uint64_t s = 0;
    FILE *fp = fopen("/dev/urandom", "rb");
    if (!fp || fread(&s, sizeof s, 1, fp) != 1) s = (uint64_t)time(NULL) * 2654435761u;
    if (fp) fclose(fp);
    return s & 0xffffffffu; /* a 32-bit seed is easy to retype */
}

static int save_latents(const char *path, const sd_result *r) {
    st_entry e = {"latents", ST_F32, 4,
                  {r->latent_shape[0], r->latent_shape[1], r->latent_shape[2], r->latent_shape[3]},
                  r->latents};
    const char *meta[2] = {"format", "pt"};
    if (st_write(path, &e, 1, meta, 1) != SD_OK) {
        fprintf(stderr, "gen: %s\n", sd_last_error());
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    cli_options o;
    const char *err = NULL;
    if (!cli_parse(&o, argc, argv, NULL, NULL, &err)) {
        fprintf(stderr, "gen: %s\n", err);
        return 2;
    }
    if (o.show_help) {
        usage(stdout);
        return 0;
    }
    if (o.show_version) {
        printf("gen %s (sd engine)\n", SD_VERSION);
        return 0;
    }
    if (o.gen.scheduler && !strcmp(o.gen.scheduler, "help")) {
        list_schedulers();
        return 0;
    }
    if (!o.model) {
        fputs(no_model_message, stderr);
        return 2;
    }
    if (!o.gen.prompt) {
        fprintf(stderr, "gen: no prompt given (usage: gen [options] \"PROMPT\"; see --help)\n");
        return 2;
    }
    if (!cli_build_sched_overrides(&o, &err)) {
        fprintf(stderr, "gen: %s\n", err);
        return 2;
    }
    if (!o.seed_given) o.gen.seed = random_seed();

    sd_load_params lp;
    cli_load_params(&o, &lp);
    sd_pipeline *p;
    if (sd_pipeline_load(&p, o.model, &lp) != SD_OK) {
        fprintf(stderr, "gen: %s\n", sd_last_error());
        cli_options_free(&o);
        return 1;
    }
    const char *precision_note = NULL;
    if (sd_pipeline_precision(p, &precision_note) != SD_PRECISION_BF16 && precision_note && !o.quiet &&
        lp.precision == SD_PRECISION_BF16)
        fprintf(stderr, "gen: --precision bf16: running fp32 (%s)\n", precision_note);
    int rc = 0;
    if (o.print_tokens) {
        char *json;
        if (sd_tokenize_json(p, o.gen.prompt, &json) != SD_OK) {
            fprintf(stderr, "gen: %s\n", sd_last_error());
            rc = 1;
        } else {
            printf("%s\n", json);
            free(json);
        }
        sd_pipeline_free(p);
        cli_options_free(&o);
        return rc;
    }
    progress pr = {now_s(), isatty(2)};
    if (pr.tty && !o.quiet) {
        o.gen.on_event = on_event;
        o.gen.user = &pr;
    }
    sd_image init = {0}, mask = {0};
    if (o.init_image && image_read(o.init_image, &init) != SD_OK) rc = 1;
    if (rc == 0 && o.mask && !o.init_image) {
        sd_set_error(SD_ERR_ARG, "--mask needs --init-image (the image to repaint)");
        rc = 1;
    }
    if (rc == 0 && o.mask && image_read(o.mask, &mask) != SD_OK) rc = 1;
    if (o.init_image) o.gen.init_image = &init;
    if (o.mask) o.gen.mask_image = &mask;
    sd_result r;
    if (rc != 0 || sd_generate(p, &o.gen, &r) != SD_OK) {
        fprintf(stderr, "gen: %s\n", sd_last_error());
        image_free(&init), image_free(&mask);
        sd_pipeline_free(p);
        cli_options_free(&o);
        return 1;
    }
    image_free(&init), image_free(&mask);
    int width = r.images[0].width, height = r.images[0].height;
    char *params = cli_parameters_text(&r.used, r.scheduler_class, width, height, o.model);
    const char *text[2] = {"parameters", params ? params : ""};
    for (int i = 0; i < r.n_images && rc == 0; i++) {
        char *path = cli_indexed_path(o.output, i, r.n_images);
        if (!path || image_write(path, &r.images[i], text, 1, o.quality) != SD_OK) {
            fprintf(stderr, "gen: %s\n", path ? sd_last_error() : "out of memory");
            rc = 1;
        } else if (!o.quiet) {
            fprintf(stderr, "wrote %s (%dx%d, seed %llu, %.1f s)\n", path, width, height,
                    (unsigned long long)o.gen.seed, r.seconds);
        }
        free(path);
    }
    if (rc == 0 && o.save_latents) rc = save_latents(o.save_latents, &r);
    free(params);
    sd_result_free(&r);
    sd_pipeline_free(p);
    cli_options_free(&o);
    return rc;
}

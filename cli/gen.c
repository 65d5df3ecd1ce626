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

#include "../include/sd.h"
#include "common/options.h"
#include "common/settings.h"
#include "common/util.h"

static void usage(FILE *fp) {
    fprintf(fp, "usage: gen [options] \"PROMPT\"\n\n"
                "Writes the image diffusers' pipeline would produce for PROMPT with a Stable Diffusion\n"
                "model in diffusers format (SD 1.x, 2.x, SDXL, SD 3 and 3.5) or a FLUX.1 model.\n\n"
                "options:\n%s"
                "  -o, --output FILE        .png, or .jpg/.jpeg (default out.png)\n"
                "      --quality N          JPEG quality 1..100 (default 90)\n"
                "      --save-latents FILE  also write the final latents (NCHW safetensors, tensor\n"
                "                           'latents', as diffusers has them before the VAE)\n"
                "      --preview FILE       write the picture forming during the run to FILE (.png or\n"
                "                           .jpg; replaced atomically): through --vae-tiny's decoder\n"
                "                           when given, else a cheap latent-to-RGB map at 1/8 size\n"
                "      --preview-every N    write it every N steps (default 1)\n"
                "      --print-tokens       print the padded token ids of PROMPT per tokenizer, exit\n"
                "  -q, --quiet              no progress line and no messages (errors still print)\n"
                "  -h, --help               this text\n"
                "      --version            the version, and where the bundled configs are\n\n"
                "FLUX.1 from Black Forest Labs' files, with no diffusers folder:\n"
                "  gen -m flux1-dev.safetensors --vae ae.safetensors \\\n"
                "      --text-encoder clip_l.safetensors --text-encoder-2 t5xxl_fp16.safetensors \\\n"
                "      \"a lighthouse at dawn\"\n\n"
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
    printf("schedulers (diffusers class names; aliases in brackets):\n");
    for (int i = 0; i < sd_scheduler_count(); i++) {
        const sd_scheduler_info *info = sd_scheduler_get(i);
        printf("  %-34s [%s]\n      %s\n", info->class_name, info->aliases, info->description);
    }
}

typedef struct {
    double start;
    int tty;               /* print the progress line */
    sd_pipeline *p;
    const char *preview;   /* --preview FILE, or NULL */
    int preview_every;     /* --preview-every N */
    int quality;
} progress;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The picture so far (sd_preview_image: the tiny VAE's decode, else the latent-to-RGB map),
 * written through sd_image_write's temporary file and rename, so a viewer never reads half a
 * file. Every N steps, and always after the last. */
static int write_preview(progress *pr, const sd_event *ev) {
    if ((ev->index + 1) % pr->preview_every != 0 && ev->index + 1 != ev->total) return 0;
    sd_image img;
    if (sd_preview_image(pr->p, &ev->tensor, &img) != SD_OK ||
        sd_image_write(pr->preview, &img, NULL, 0, pr->quality) != SD_OK) {
        /* Kept as gen's error (main prints it): the cancellation sd_generate reports would hide
         * it. A preview that cannot be written stops the run. */
        cli_fail(SD_ERR_IO, "--preview %s: %s", pr->preview, sd_last_error());
        return 1;
    }
    sd_image_free(&img);
    return 0;
}

static int on_event(void *user, const sd_event *ev) {
    progress *pr = user;
    if (ev->kind == SD_EVENT_STEP && pr->preview && write_preview(pr, ev)) return 1;
    if (!pr->tty) return 0;
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
    const sd_latents l = {r->latents, r->latent_shape[0], r->latent_shape[1], r->latent_shape[2],
                          r->latent_shape[3]};
    if (sd_latents_write(path, &l) != SD_OK) {
        fprintf(stderr, "gen: %s\n", cli_error());
        return 1;
    }
    return 0;
}

typedef struct {
    const char *preview;
    int preview_every; /* 0: not given */
} gen_extra;

/* gen's own options, beside the shared ones (cli_parse's extra hook). */
static int parse_extra(void *ctx, const char *name, const char *value, const char **err) {
    gen_extra *x = ctx;
    const bool preview = !strncmp(name, "--preview", 9) && (name[9] == 0 || name[9] == '=');
    const bool every = !strncmp(name, "--preview-every", 15) && (name[15] == 0 || name[15] == '=');
    if (!preview && !every) return -1;
    static char buf[160];
    if (!value) {
        snprintf(buf, sizeof buf, "%s needs a value", preview ? "--preview" : "--preview-every");
        *err = buf;
        return -2;
    }
    if (preview) {
        x->preview = value;
        return 1;
    }
    char *end;
    const long n = strtol(value, &end, 10);
    if (end == value || *end || n < 1 || n > 100000) {
        snprintf(buf, sizeof buf, "--preview-every: '%.60s' is not a step count (1 or more)",
                 value);
        *err = buf;
        return -2;
    }
    x->preview_every = (int)n;
    return 1;
}

int main(int argc, char **argv) {
    cli_options o;
    const char *err = NULL;
    gen_extra extra = {0};
    if (!cli_parse(&o, argc, argv, parse_extra, &extra, &err)) {
        fprintf(stderr, "gen: %s\n", err);
        return 2;
    }
    if (o.show_help) {
        usage(stdout);
        return 0;
    }
    /* The library reads no environment: gen passes $SD_CONFIGS_DIR on (bundled configs of
     * single-file checkpoints kept elsewhere than the install). */
    const char *configs = getenv("SD_CONFIGS_DIR");
    if (configs && *configs) sd_set_configs_dir(configs);
    if (o.show_version) {
        const char *found = sd_configs_dir();
        printf("gen %s (sd engine)\nconfigs: %s\n", sd_version(), found ? found : "(none found)");
        return 0;
    }
    if (o.gen.scheduler && !strcmp(o.gen.scheduler, "help")) {
        list_schedulers();
        return 0;
    }
    if (!o.model && o.transformer_file) {
        /* A FLUX.1 transformer file alone is a model too (sd_pipeline_load takes it as one). */
        o.model = o.transformer_file;
        o.transformer_file = NULL;
    }
    if (!o.model) {
        fputs(no_model_message, stderr);
        return 2;
    }
    if (!o.gen.prompt) {
        fprintf(stderr, "gen: no prompt given (usage: gen [options] \"PROMPT\"; see --help)\n");
        return 2;
    }
    if (extra.preview_every && !extra.preview) {
        fprintf(stderr, "gen: --preview-every needs --preview FILE (where to write the preview)\n");
        return 2;
    }
    const char *typed = o.gen.prompt; /* with its <lora:...> tags, for the PNG parameters */
    if (!cli_take_lora_tags(&o, &err)) {
        fprintf(stderr, "gen: %s\n", err);
        cli_options_free(&o);
        return 1;
    }
    if (!cli_build_sched_overrides(&o, &err)) {
        fprintf(stderr, "gen: %s\n", err);
        return 2;
    }
    if (!cli_settings_from_env(&o.gen.vae_tile_limit_mb, &err)) {
        fprintf(stderr, "gen: %s\n", err);
        cli_options_free(&o);
        return 1;
    }
    if (!o.quiet) cli_log_to_stderr("gen", SD_LOG_WARN);
    if (!o.seed_given) o.gen.seed = random_seed();

    sd_load_params lp;
    cli_load_params(&o, &lp);
    sd_pipeline *p;
    if (sd_pipeline_load(&p, o.model, &lp) != SD_OK) {
        fprintf(stderr, "gen: %s\n", cli_error());
        cli_options_free(&o);
        return 1;
    }
    if (cli_load_embeddings(&o, p) != SD_OK) {
        fprintf(stderr, "gen: %s\n", cli_error());
        sd_pipeline_free(p);
        cli_options_free(&o);
        return 1;
    }
    const char *detected = sd_pipeline_checkpoint_info(p);
    if (detected && !o.quiet) fprintf(stderr, "gen: %s: %s\n", o.model, detected);
    int rc = 0;
    if (o.print_tokens) {
        char *json;
        if (sd_tokenize_json(p, o.gen.prompt, &json) != SD_OK) {
            fprintf(stderr, "gen: %s\n", cli_error());
            rc = 1;
        } else {
            printf("%s\n", json);
            free(json);
        }
        sd_pipeline_free(p);
        cli_options_free(&o);
        return rc;
    }
    progress pr = {now_s(), isatty(2) && !o.quiet, p, extra.preview,
                   extra.preview_every ? extra.preview_every : 1, o.quality};
    if (pr.tty || pr.preview) {
        o.gen.on_event = on_event;
        o.gen.user = &pr;
    }
    sd_image init = {0}, mask = {0};
    if (o.init_image && sd_image_read(o.init_image, &init) != SD_OK) rc = 1;
    if (rc == 0 && o.mask && !o.init_image) {
        cli_fail(SD_ERR_ARG, "--mask needs --init-image (the image to repaint)");
        rc = 1;
    }
    if (rc == 0 && o.mask && sd_image_read(o.mask, &mask) != SD_OK) rc = 1;
    if (o.init_image) o.gen.init_image = &init;
    if (o.mask) o.gen.mask_image = &mask;
    sd_result r;
    if (rc != 0 || sd_generate(p, &o.gen, &r) != SD_OK) {
        fprintf(stderr, "gen: %s\n", cli_error());
        sd_image_free(&init), sd_image_free(&mask);
        sd_pipeline_free(p);
        cli_options_free(&o);
        return 1;
    }
    sd_image_free(&init), sd_image_free(&mask);
    int width = r.images[0].width, height = r.images[0].height;
    sd_gen_params shown = r.used; /* the prompt as typed, so A1111 and ComfyUI read it back */
    shown.prompt = typed;
    char *params = cli_parameters_text(&shown, r.scheduler_class, width, height, o.model);
    const char *text[2] = {"parameters", params ? params : ""};
    for (int i = 0; i < r.n_images && rc == 0; i++) {
        char *path = cli_indexed_path(o.output, i, r.n_images);
        if (!path || sd_image_write(path, &r.images[i], text, 1, o.quality) != SD_OK) {
            fprintf(stderr, "gen: %s\n", path ? cli_error() : "out of memory");
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

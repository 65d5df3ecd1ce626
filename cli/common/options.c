#include "options.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char err_buf[512];

static const char *errf(const char *fmt, const char *a, const char *b) {
    snprintf(err_buf, sizeof err_buf, fmt, a, b ? b : "");
    return err_buf;
}

static bool parse_int(const char *opt, const char *v, long lo, long hi, long *out, const char **err) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) {
        char range[64];
        snprintf(range, sizeof range, "%ld..%ld", lo, hi);
        snprintf(err_buf, sizeof err_buf, "%s: '%s' is not an integer in %s", opt, v, range);
        *err = err_buf;
        return false;
    }
    *out = x;
    return true;
}

static bool parse_u64(const char *opt, const char *v, uint64_t *out, const char **err) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || errno || v[0] == '-') {
        *err = errf("%s: '%s' is not a seed (0 .. 18446744073709551615)", opt, v);
        return false;
    }
    *out = (uint64_t)x;
    return true;
}

static bool parse_double(const char *opt, const char *v, double *out, const char **err) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || x != x) {
        *err = errf("%s: '%s' is not a number", opt, v);
        return false;
    }
    *out = x;
    return true;
}

/* Options that take a value: name(s), and the parser applying it. */
typedef enum {
    O_MODEL, O_NEG, O_OUT, O_W, O_H, O_SEED, O_STEPS, O_GUIDANCE, O_SCHED, O_SCHED_OPT,
    O_RESCALE, O_ETA, O_BATCH, O_CLIP_SKIP, O_THREADS, O_SAVE_LATENTS, O_QUALITY,
    O_PROMPT2, O_NEG2, O_ORIG_SIZE, O_CROP, O_TARGET_SIZE, O_MAX_SEQ, O_INIT, O_MASK, O_STRENGTH,
    O_PROMPT3, O_NEG3, O_WEIGHTS_DTYPE, O_PRECISION, O_VAE_TILE, O_CONFIG, O_PREDICTION,
    O_TRANSFORMER, O_LORA, O_LORA_DIR, O_VAE_FILE, O_UNET_FILE, O_TE_FILE, O_TE2_FILE, O_TE3_FILE,
    O_PROMPT_SYNTAX, O_EMBEDDING, O_EMBEDDINGS_DIR, O_VAE_TINY,
    /* flags */
    O_PRINT_TOKENS, O_HELP, O_VERSION, O_QUIET, O_LOW_MEMORY, O_KEEP_RESIDENT,
} opt_id;

static const struct {
    const char *long_name;
    char short_name;
    opt_id id;
    bool takes_value;
} table[] = {
    {"model", 'm', O_MODEL, true},         {"negative", 'n', O_NEG, true},
    {"output", 'o', O_OUT, true},          {"width", 'W', O_W, true},
    {"height", 'H', O_H, true},            {"seed", 's', O_SEED, true},
    {"steps", 0, O_STEPS, true},           {"guidance", 'g', O_GUIDANCE, true},
    {"scheduler", 0, O_SCHED, true},       {"scheduler-opt", 0, O_SCHED_OPT, true},
    {"guidance-rescale", 0, O_RESCALE, true}, {"eta", 0, O_ETA, true},
    {"batch", 0, O_BATCH, true},           {"clip-skip", 0, O_CLIP_SKIP, true},
    {"threads", 't', O_THREADS, true},     {"save-latents", 0, O_SAVE_LATENTS, true},
    {"quality", 0, O_QUALITY, true},       {"print-tokens", 0, O_PRINT_TOKENS, false},
    {"prompt-2", 0, O_PROMPT2, true},      {"negative-2", 0, O_NEG2, true},
    {"original-size", 0, O_ORIG_SIZE, true}, {"crop", 0, O_CROP, true},
    {"target-size", 0, O_TARGET_SIZE, true}, {"max-sequence-length", 0, O_MAX_SEQ, true},
    {"init-image", 0, O_INIT, true},       {"mask", 0, O_MASK, true},
    {"strength", 0, O_STRENGTH, true},
    {"prompt-3", 0, O_PROMPT3, true},      {"negative-3", 0, O_NEG3, true},
    {"help", 'h', O_HELP, false},          {"version", 0, O_VERSION, false},
    {"quiet", 'q', O_QUIET, false},
    {"weights-dtype", 0, O_WEIGHTS_DTYPE, true}, {"precision", 0, O_PRECISION, true},
    {"vae-tile", 0, O_VAE_TILE, true},     {"low-memory", 0, O_LOW_MEMORY, false},
    {"keep-resident", 0, O_KEEP_RESIDENT, false},
    {"config", 0, O_CONFIG, true},         {"prediction", 0, O_PREDICTION, true},
    {"lora", 0, O_LORA, true},             {"lora-dir", 0, O_LORA_DIR, true},
    {"transformer", 0, O_TRANSFORMER, true},
    {"vae", 0, O_VAE_FILE, true},          {"unet", 0, O_UNET_FILE, true},
    {"text-encoder", 0, O_TE_FILE, true},  {"text-encoder-2", 0, O_TE2_FILE, true},
    {"text-encoder-3", 0, O_TE3_FILE, true},
    {"prompt-syntax", 0, O_PROMPT_SYNTAX, true}, {"embedding", 0, O_EMBEDDING, true},
    {"embeddings-dir", 0, O_EMBEDDINGS_DIR, true}, {"vae-tiny", 0, O_VAE_TINY, true},
};
enum { N_OPTS = sizeof table / sizeof table[0] };

/* "WxH" (sizes) or "A,B" (crop top,left): two non-negative integers. */
static bool parse_pair(const char *opt, const char *v, char sep, int *a, int *b, const char **err) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end != sep || x < 0 || x > 65535 || errno) goto bad;
    const char *second = end + 1;
    long y = strtol(second, &end, 10);
    if (end == second || *end || y < 0 || y > 65535 || errno) goto bad;
    *a = (int)x, *b = (int)y;
    return true;
bad:
    snprintf(err_buf, sizeof err_buf, "%s: '%s' should be %s", opt, v,
             sep == 'x' ? "WIDTHxHEIGHT, e.g. 1024x1024" : "TOP,LEFT, e.g. 0,0");
    *err = err_buf;
    return false;
}

/* FILE or FILE:SCALE; a path may itself hold ':', so only a number after the last one is a
 * scale. */
static bool parse_lora(cli_options *o, const char *name, const char *v, const char **err) {
    if (o->n_loras == CLI_MAX_LORAS) {
        *err = errf("%s: more than 64 LoRAs%s", name, NULL);
        return false;
    }
    sd_lora l = {v, 1.0f};
    const char *colon = strrchr(v, ':');
    if (colon && colon[1]) {
        char *end;
        errno = 0;
        const double x = strtod(colon + 1, &end);
        if (!*end && !errno && isfinite(x)) {
            size_t len = (size_t)(colon - v);
            char *path = malloc(len + 1);
            if (!path) {
                *err = "out of memory";
                return false;
            }
            memcpy(path, v, len);
            path[len] = '\0';
            o->tag_paths[o->n_loras] = path; /* freed with the tags' */
            l = (sd_lora){path, (float)x};
        }
    }
    o->loras[o->n_loras++] = l;
    return true;
}

static bool apply(cli_options *o, opt_id id, const char *name, const char *v, const char **err) {
    long x;
    switch (id) {
    case O_MODEL: o->model = v; return true;
    case O_NEG: o->gen.negative_prompt = v; return true;
    case O_OUT: o->output = v; return true;
    case O_W: return parse_int(name, v, 8, 16384, &x, err) && (o->gen.width = (int)x, true);
    case O_H: return parse_int(name, v, 8, 16384, &x, err) && (o->gen.height = (int)x, true);
    case O_SEED: o->seed_given = true; return parse_u64(name, v, &o->gen.seed, err);
    case O_STEPS: return parse_int(name, v, 1, 10000, &x, err) && (o->gen.steps = (int)x, true);
    case O_GUIDANCE: return parse_double(name, v, &o->gen.guidance, err);
    case O_SCHED: o->gen.scheduler = v; return true;
    case O_SCHED_OPT:
        if (!strchr(v, '=') || v[0] == '=') {
            *err = errf("%s: '%s' should be KEY=VALUE", name, v);
            return false;
        }
        if (o->n_sched_opts == CLI_MAX_SCHED_OPTS) {
            *err = errf("%s: too many scheduler options%s", name, NULL);
            return false;
        }
        o->sched_opts[o->n_sched_opts++] = v;
        return true;
    case O_RESCALE: return parse_double(name, v, &o->gen.guidance_rescale, err);
    case O_ETA: return parse_double(name, v, &o->gen.eta, err);
    case O_BATCH: return parse_int(name, v, 1, 64, &x, err) && (o->gen.batch = (int)x, true);
    case O_CLIP_SKIP: return parse_int(name, v, 0, 64, &x, err) && (o->gen.clip_skip = (int)x, true);
    case O_THREADS: return parse_int(name, v, 0, 4096, &x, err) && (o->threads = (int)x, true);
    case O_SAVE_LATENTS: o->save_latents = v; return true;
    case O_QUALITY: return parse_int(name, v, 1, 100, &x, err) && (o->quality = (int)x, true);
    case O_PROMPT2: o->gen.prompt_2 = v; return true;
    case O_NEG2: o->gen.negative_prompt_2 = v; return true;
    case O_PROMPT3: o->gen.prompt_3 = v; return true;
    case O_NEG3: o->gen.negative_prompt_3 = v; return true;
    case O_ORIG_SIZE:
        return parse_pair(name, v, 'x', &o->gen.original_width, &o->gen.original_height, err);
    case O_CROP: return parse_pair(name, v, ',', &o->gen.crop_top, &o->gen.crop_left, err);
    case O_TARGET_SIZE:
        return parse_pair(name, v, 'x', &o->gen.target_width, &o->gen.target_height, err);
    case O_MAX_SEQ:
        return parse_int(name, v, 1, 4096, &x, err) && (o->gen.max_sequence_length = (int)x, true);
    case O_INIT: o->init_image = v; return true;
    case O_MASK: o->mask = v; return true;
    case O_STRENGTH:
        if (!parse_double(name, v, &o->gen.strength, err)) return false;
        if (o->gen.strength <= 0 || o->gen.strength > 1) {
            *err = errf("%s: '%s' should be in (0, 1]", name, v);
            return false;
        }
        return true;
    case O_PRINT_TOKENS: o->print_tokens = true; return true;
    case O_HELP: o->show_help = true; return true;
    case O_VERSION: o->show_version = true; return true;
    case O_QUIET: o->quiet = true; return true;
    case O_LOW_MEMORY: o->low_memory = true; return true;
    case O_KEEP_RESIDENT: o->keep_resident = true; return true;
    case O_LORA: return parse_lora(o, name, v, err);
    case O_LORA_DIR: o->lora_dir = v; return true;
    case O_PROMPT_SYNTAX:
        if (!strcmp(v, "plain")) o->gen.prompt_syntax = SD_PROMPT_PLAIN;
        else if (!strcmp(v, "a1111")) o->gen.prompt_syntax = SD_PROMPT_A1111;
        else {
            *err = errf("%s: '%s' should be plain or a1111", name, v);
            return false;
        }
        return true;
    case O_EMBEDDING:
        if (o->n_embeddings == CLI_MAX_EMBEDDINGS) {
            *err = errf("%s: more than %s embeddings", name, "64");
            return false;
        }
        o->embeddings[o->n_embeddings++] = v;
        return true;
    case O_EMBEDDINGS_DIR: o->embeddings_dir = v; return true;
    case O_WEIGHTS_DTYPE:
        if (!strcmp(v, "stored")) o->weights_dtype = SD_WEIGHTS_STORED;
        else if (!strcmp(v, "f16") || !strcmp(v, "fp16")) o->weights_dtype = SD_WEIGHTS_F16;
        else if (!strcmp(v, "bf16")) o->weights_dtype = SD_WEIGHTS_BF16;
        else if (!strcmp(v, "q8_0")) o->weights_dtype = SD_WEIGHTS_Q8_0;
        else if (!strcmp(v, "q4_0")) o->weights_dtype = SD_WEIGHTS_Q4_0;
        else if (!strcmp(v, "q4_k")) o->weights_dtype = SD_WEIGHTS_Q4_K;
        else if (!strcmp(v, "q5_k")) o->weights_dtype = SD_WEIGHTS_Q5_K;
        else if (!strcmp(v, "q6_k")) o->weights_dtype = SD_WEIGHTS_Q6_K;
        else {
            *err = errf("%s: '%s' should be stored, f16, bf16, q8_0, q4_0, q4_k, q5_k or q6_k",
                        name, v);
            return false;
        }
        return true;
    case O_PRECISION:
        if (!strcmp(v, "fp32") || !strcmp(v, "f32")) o->precision = SD_PRECISION_FP32;
        else if (!strcmp(v, "bf16")) o->precision = SD_PRECISION_BF16;
        else if (!strcmp(v, "auto")) o->precision = SD_PRECISION_AUTO;
        else if (!strcmp(v, "int8")) o->precision = SD_PRECISION_INT8;
        else {
            *err = errf("%s: '%s' should be fp32, bf16, auto or int8", name, v);
            return false;
        }
        return true;
    case O_CONFIG: o->config_dir = v; return true;
    case O_TRANSFORMER: o->transformer_file = v; return true;
    case O_VAE_FILE: o->vae_file = v; return true;
    case O_VAE_TINY: o->vae_tiny_dir = v; return true;
    case O_UNET_FILE: o->unet_file = v; return true;
    case O_TE_FILE: o->text_encoder_file = v; return true;
    case O_TE2_FILE: o->text_encoder_2_file = v; return true;
    case O_TE3_FILE: o->text_encoder_3_file = v; return true;
    case O_PREDICTION:
        if (!strcmp(v, "epsilon")) o->prediction = SD_PREDICTION_EPSILON;
        else if (!strcmp(v, "v") || !strcmp(v, "v_prediction")) o->prediction = SD_PREDICTION_V;
        else {
            *err = errf("%s: '%s' should be epsilon or v", name, v);
            return false;
        }
        return true;
    case O_VAE_TILE:
        if (!strcmp(v, "auto")) return o->gen.vae_tile = 0, true;
        if (!strcmp(v, "off")) return o->gen.vae_tile = -1, true;
        return parse_int(name, v, 1, 65536, &x, err) && (o->gen.vae_tile = (int)x, true);
    }
    return false;
}

bool cli_parse(cli_options *o, int argc, char **argv, cli_extra_fn extra, void *extra_ctx,
               const char **err) {
    memset(o, 0, sizeof *o);
    sd_gen_params_init(&o->gen);
    o->gen.prompt = NULL;
    o->model = getenv("SD_MODEL");
    if (o->model && !*o->model) o->model = NULL;
    o->output = "out.png";
    o->quality = 90;
    bool only_positional = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (only_positional || arg[0] != '-' || !strcmp(arg, "-")) {
            if (o->gen.prompt) {
                *err = errf("unexpected argument '%s' (the prompt is already '%s'; quote prompts "
                            "with spaces)", arg, o->gen.prompt);
                return false;
            }
            o->gen.prompt = arg;
            continue;
        }
        if (!strcmp(arg, "--")) {
            only_positional = true;
            continue;
        }
        /* --name, --name=value, -x, -x value */
        char name[64];
        const char *inline_value = NULL;
        int found = -1;
        if (arg[1] == '-') {
            const char *eq = strchr(arg + 2, '=');
            size_t len = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
            if (len >= sizeof name) len = sizeof name - 1;
            memcpy(name, arg + 2, len);
            name[len] = '\0';
            inline_value = eq ? eq + 1 : NULL;
            for (int k = 0; k < N_OPTS; k++)
                if (!strcmp(name, table[k].long_name)) found = k;
        } else {
            snprintf(name, sizeof name, "%c", arg[1]);
            if (arg[2]) inline_value = arg + 2;
            for (int k = 0; k < N_OPTS; k++)
                if (table[k].short_name && table[k].short_name == arg[1]) found = k;
        }
        /* The tool is asked first, so it may give a gen option its own meaning (sd-compare's
         * --steps takes a list); it returns -1 for everything else. */
        if (extra) {
            const char *value = inline_value ? inline_value : (i + 1 < argc ? argv[i + 1] : NULL);
            int used = extra(extra_ctx, arg, value, err);
            if (used == -2) return false; /* the tool reported an error */
            if (used >= 0) {
                if (used == 1 && !inline_value) i++;
                continue;
            }
        }
        if (found < 0) {
            *err = errf("unknown option '%s' (see --help)%s", arg, NULL);
            return false;
        }
        const char *value = NULL;
        if (table[found].takes_value) {
            value = inline_value;
            if (!value) {
                if (i + 1 >= argc) {
                    *err = errf("option '%s' needs a value%s", arg, NULL);
                    return false;
                }
                value = argv[++i];
            }
        } else if (inline_value) {
            *err = errf("option '%s' takes no value%s", arg, NULL);
            return false;
        }
        if (!apply(o, table[found].id, arg, value, err)) return false;
    }
    if (o->low_memory && o->keep_resident) {
        *err = "--low-memory and --keep-resident contradict each other (paging on and off): "
               "give one";
        return false;
    }
    return true;
}

bool cli_build_sched_overrides(cli_options *o, const char **err) {
    if (!o->n_sched_opts) return true;
    cJSON *obj = cJSON_CreateObject();
    for (int i = 0; i < o->n_sched_opts; i++) {
        const char *kv = o->sched_opts[i], *eq = strchr(kv, '=');
        char key[128];
        size_t len = (size_t)(eq - kv) < sizeof key - 1 ? (size_t)(eq - kv) : sizeof key - 1;
        memcpy(key, kv, len);
        key[len] = '\0';
        cJSON *value = cJSON_Parse(eq + 1);
        if (!value) value = cJSON_CreateString(eq + 1); /* a bare word: trailing, karras, ... */
        cJSON_DeleteItemFromObjectCaseSensitive(obj, key); /* the last one given wins */
        cJSON_AddItemToObject(obj, key, value);
    }
    o->sched_overrides_json = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!o->sched_overrides_json) {
        *err = "out of memory";
        return false;
    }
    o->gen.scheduler_overrides = o->sched_overrides_json;
    return true;
}

bool cli_take_lora_tags(cli_options *o, const char **err) {
    char *text;
    sd_lora *tags;
    int n;
    if (sd_prompt_extract_loras(o->gen.prompt, o->lora_dir, &text, &tags, &n) != SD_OK) {
        *err = errf("%s%s", sd_last_error(), NULL);
        return false;
    }
    if (o->n_loras + n > CLI_MAX_LORAS) {
        sd_loras_free(tags, n);
        free(text);
        *err = "more than 64 LoRAs";
        return false;
    }
    for (int i = 0; i < n; i++) {
        o->tag_paths[o->n_loras] = (char *)tags[i].path; /* owned from here */
        o->loras[o->n_loras++] = tags[i];
    }
    free(tags);
    free(o->prompt_without_tags);
    o->prompt_without_tags = text;
    o->gen.prompt = text;
    return true;
}

void cli_options_free(cli_options *o) {
    for (int i = 0; i < o->n_loras; i++) {
        free(o->tag_paths[i]);
        o->tag_paths[i] = NULL;
    }
    o->n_loras = 0;
    free(o->prompt_without_tags);
    o->prompt_without_tags = NULL;
    cJSON_free(o->sched_overrides_json);
    o->sched_overrides_json = NULL;
}

const char *cli_gen_options_help(void) {
    return "  -m, --model DIR|FILE     diffusers model folder, or one .safetensors checkpoint in the\n"
           "                           original layout (SD 1.x, 2.x, SDXL, SD3), or a FLUX.1\n"
           "                           transformer file (flux1-dev.safetensors: the VAE and text\n"
           "                           encoders from --vae, --text-encoder, --text-encoder-2)\n"
           "                           (default: $SD_MODEL)\n"
           "      --config DIR         single file: configs and tokenizers from this diffusers\n"
           "                           folder instead of the bundled ones (found beside the\n"
           "                           install, or in $SD_CONFIGS_DIR; gen --version shows where)\n"
           "      --transformer FILE   FLUX.1: the transformer from this .safetensors file (Black\n"
           "                           Forest Labs' flux1-dev.safetensors, or diffusers' layout),\n"
           "                           the rest from the -m folder; without -m, the file is the\n"
           "                           model (as -m FILE). SD3: its transformer's file, as --unet\n"
           "      --prediction P       epsilon or v: what the model predicts where the file cannot\n"
           "                           say (SD 2.x: v = the 768 model, epsilon = the 512 base)\n"
           "      --vae FILE           the VAE's weights from this .safetensors file (diffusers or\n"
           "                           original layout, e.g. vae-ft-mse-840000-ema-pruned), over a\n"
           "                           folder or a single file; the config stays the model's\n"
           "      --vae-tiny DIR       decode (and encode init images) with this AutoencoderTiny\n"
           "                           folder (taesd, taesdxl, taesd3, taef1) instead of the\n"
           "                           model's VAE: far faster, a little less detail\n"
           "      --unet FILE          the denoiser's weights likewise (SD3's transformer too:\n"
           "                           diffusers names or Stability's MMDiT joint_blocks.*)\n"
           "      --text-encoder FILE  the first text encoder's weights likewise (e.g. clip_l)\n"
           "      --text-encoder-2 FILE  the second text encoder's (SDXL's OpenCLIP bigG;\n"
           "                           FLUX's T5, e.g. t5xxl_fp16)\n"
           "      --text-encoder-3 FILE  SD3's third text encoder (T5, e.g. t5xxl_fp16)\n"
           "  -n, --negative TEXT      negative prompt (Flux ignores it, as diffusers does by default:\n"
           "                           no true CFG)\n"
           "  -W, --width N            image width, a multiple of 8 (default: the model's)\n"
           "  -H, --height N           image height, a multiple of 8 (default: the model's)\n"
           "  -s, --seed N             seed of the torch-compatible generator (default: random)\n"
           "      --steps N            denoising steps (default: the pipeline's, 50 for SD)\n"
           "  -g, --guidance X         classifier-free guidance scale; <= 1 disables it\n"
           "                           (default: the pipeline's, 7.5 for SD); Flux: the embedded\n"
           "                           guidance (default 3.5; schnell ignores it), no CFG\n"
           "      --guidance-rescale X rescale guided noise toward the text branch's std (0..1)\n"
           "      --scheduler CLASS    diffusers scheduler class or alias; 'help' lists them\n"
           "      --scheduler-opt K=V  scheduler config override, V as JSON (repeatable)\n"
           "      --eta X              DDIM eta (default 0)\n"
           "      --batch N            images per prompt from one noise draw (default 1; out-0.png,\n"
           "                           out-1.png ...)\n"
           "      --clip-skip N        use the text encoder's N-th from last layer (default 0: the last)\n"
           "      --prompt-2 TEXT      prompt for the second text encoder (SDXL, SD3; Flux's T5)\n"
           "      --negative-2 TEXT    negative prompt for the second text encoder\n"
           "      --prompt-3 TEXT      prompt for SD3's T5 (default: the prompt)\n"
           "      --negative-3 TEXT    negative prompt for SD3's T5\n"
           "      --original-size WxH  SDXL micro-conditioning (default: the image size)\n"
           "      --crop TOP,LEFT      SDXL crop coordinates (default 0,0)\n"
           "      --target-size WxH    SDXL target size (default: the image size)\n"
           "      --max-sequence-length N  T5 tokens (SD3 default 256, Flux 512)\n"
           "      --init-image FILE    image-to-image: start from this PNG/JPEG\n"
           "      --mask FILE          inpainting mask (white = repaint), with --init-image\n"
           "      --strength X         how much of the schedule runs from the init image, (0..1]\n"
           "                           (default 0.8 for image-to-image, 1 for inpainting;\n"
           "                           SDXL 0.3 and 0.9999)\n"
           "      --vae-tile N|auto|off  VAE decode and encode in tiles of N latent pixels; auto\n"
           "                           (default) tiles only images too large to do whole\n"
           "      --weights-dtype D    stored (default: as the files hold them), f16 or bf16\n"
           "                           (an fp32 release converted at load: half the memory),\n"
           "                           q8_0, q4_0, q4_k, q5_k or q6_k (Linear weights quantized\n"
           "                           at load, the rest at 16 bits)\n"
           "      --precision P        fp32 (default), bf16 (AVX512_BF16 CPUs: faster, looser),\n"
           "                           auto (bf16 where it runs, else fp32) or int8 (the UNet's\n"
           "                           layers in int8: faster, loosest; never chosen by auto)\n"
           "      --low-memory         page weights in per layer, give scratch and text encoders\n"
           "                           back between uses (the default of every family where it\n"
           "                           costs under 2% of the time; this forces it everywhere)\n"
           "      --keep-resident      keep weights and scratch resident once read (no\n"
           "                           re-paging; needs the model's full size in memory)\n"
           "      --lora FILE[:SCALE]  merge a LoRA (kohya-ss/A1111, LoCon, LoHa, LoKr,\n"
           "                           diffusers/PEFT, FLUX kohya/BFL safetensors) into the\n"
           "                           weights at load, scale default 1; repeatable\n"
           "      --lora-dir DIR       where prompt tags <lora:NAME:SCALE> find NAME.safetensors\n"
           "                           (the tag is removed from the prompt)\n"
           "      --prompt-syntax S    plain (default: as diffusers) or a1111: AUTOMATIC1111's\n"
           "                           (word:1.3) (word) [word] weights, prompts of any length,\n"
           "                           BREAK, [from:to:when] editing, [a|b] alternation\n"
           "      --embedding FILE     a textual-inversion embedding (.safetensors; A1111 or\n"
           "                           diffusers), its file name the trigger word; repeatable\n"
           "      --embeddings-dir DIR every .safetensors embedding in DIR, as A1111's folder\n"
           "  -t, --threads N          threads (default: all cores)\n";
}

sd_status cli_load_embeddings(const cli_options *o, sd_pipeline *p) {
    for (int i = 0; i < o->n_embeddings; i++) {
        const sd_status st = sd_pipeline_add_embedding(p, o->embeddings[i], NULL);
        if (st != SD_OK) return st;
    }
    return o->embeddings_dir ? sd_pipeline_add_embeddings_dir(p, o->embeddings_dir) : SD_OK;
}

void cli_load_params(const cli_options *o, sd_load_params *lp) {
    sd_load_params_init(lp);
    lp->threads = o->threads;
    lp->weights_dtype = o->weights_dtype;
    lp->precision = o->precision;
    lp->low_memory = o->low_memory;
    lp->keep_resident = o->keep_resident;
    lp->config_dir = o->config_dir;
    lp->prediction = o->prediction;
    lp->loras = o->n_loras ? o->loras : NULL;
    lp->n_loras = o->n_loras;
    lp->transformer_file = o->transformer_file;
    lp->vae_file = o->vae_file;
    lp->unet_file = o->unet_file;
    lp->text_encoder_file = o->text_encoder_file;
    lp->text_encoder_2_file = o->text_encoder_2_file;
    lp->text_encoder_3_file = o->text_encoder_3_file;
    lp->vae_tiny_dir = o->vae_tiny_dir;
}

char *cli_indexed_path(const char *path, int i, int n) {
    size_t len = strlen(path);
    char *out = malloc(len + 24);
    if (!out) return NULL;
    if (n <= 1) {
        memcpy(out, path, len + 1);
        return out;
    }
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) dot = path + len;
    snprintf(out, len + 24, "%.*s-%d%s", (int)(dot - path), path, i, dot);
    return out;
}

char *cli_parameters_text(const sd_gen_params *g, const char *scheduler, int width, int height,
                          const char *model) {
    const char *prompt = g->prompt ? g->prompt : "", *neg = g->negative_prompt;
    const char *slash = model ? strrchr(model, '/') : NULL;
    const char *model_name = model ? (slash && slash[1] ? slash + 1 : model) : "";
    size_t size = strlen(prompt) + (neg ? strlen(neg) : 0) + strlen(model_name) + 512;
    char *s = malloc(size);
    if (!s) return NULL;
    size_t used = (size_t)snprintf(s, size, "%s\n", prompt);
    if (neg) used += (size_t)snprintf(s + used, size - used, "Negative prompt: %s\n", neg);
    used += (size_t)snprintf(s + used, size - used,
                             "Steps: %d, Sampler: %s, CFG scale: %g, Seed: %llu, Size: %dx%d, "
                             "Model: %s", g->steps, scheduler, g->guidance,
                             (unsigned long long)g->seed, width, height, model_name);
    if (g->clip_skip) used += (size_t)snprintf(s + used, size - used, ", Clip skip: %d", g->clip_skip);
    if (g->init_image && !isnan(g->strength)) /* A1111's name for img2img strength */
        used += (size_t)snprintf(s + used, size - used, ", Denoising strength: %g", g->strength);
    if (g->eta > 0) snprintf(s + used, size - used, ", Eta: %g", g->eta);
    return s;
}

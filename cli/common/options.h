/* Command-line options shared by gen and the tools built on it (sd-compare, sd-regress):
 * parsing into sd_gen_params plus the CLI-only settings, with errors that name the option. */
#ifndef SD_CLI_OPTIONS_H
#define SD_CLI_OPTIONS_H

#include <stdbool.h>

#include "../../include/sd.h"

#define CLI_MAX_SCHED_OPTS 32
#define CLI_MAX_LORAS 64
#define CLI_MAX_EMBEDDINGS 64

typedef struct {
    const char *model;        /* -m; default $SD_MODEL */
    const char *output;       /* -o; default "out.png" */
    const char *save_latents; /* --save-latents */
    const char *init_image;   /* --init-image FILE (read by the tool) */
    const char *mask;         /* --mask FILE */
    int threads;              /* --threads; 0: all cores */
    sd_weights_dtype weights_dtype; /* --weights-dtype */
    sd_precision precision;   /* --precision */
    bool low_memory;          /* --low-memory: paging forced on (the default where cheap) */
    bool keep_resident;       /* --keep-resident: paging off */
    const char *config_dir;   /* --config */
    const char *transformer_file; /* --transformer */
    sd_prediction prediction; /* --prediction */
    /* --vae, --unet (--transformer), --text-encoder, --text-encoder-2, --text-encoder-3: a
     * component's weights from a file of its own */
    const char *vae_file, *unet_file, *text_encoder_file, *text_encoder_2_file, *text_encoder_3_file;
    const char *vae_tiny_dir; /* --vae-tiny DIR: AutoencoderTiny in place of the model's VAE */
    const char *lora_dir;     /* --lora-dir: where <lora:NAME:SCALE> prompt tags are looked up */
    int n_loras;              /* --lora FILE[:SCALE] given, then the prompt's tags */
    sd_lora loras[CLI_MAX_LORAS];
    char *tag_paths[CLI_MAX_LORAS]; /* paths resolved from tags (malloc'd) */
    char *prompt_without_tags;      /* malloc'd, once cli_take_lora_tags has run */
    int n_embeddings;         /* --embedding FILE (repeatable) */
    const char *embeddings[CLI_MAX_EMBEDDINGS];
    const char *embeddings_dir; /* --embeddings-dir DIR */
    int quality;              /* --quality (JPEG), default 90 */
    bool seed_given;
    bool print_tokens, show_help, show_version, quiet;
    int n_sched_opts;
    const char *sched_opts[CLI_MAX_SCHED_OPTS]; /* KEY=VALUE as typed */
    char *sched_overrides_json;                 /* built from sched_opts (malloc'd) */
    sd_gen_params gen;
} cli_options;

/* Parses argv (argv[0] skipped). Unknown options, missing or malformed values: a one-line error
 * in *err (static buffer) and false. `extra` lets a tool accept more options: it is called with
 * the argument as typed ("--name", "--name=value", "-x", "-xvalue") and its value (the inline one,
 * else the next argument, NULL at the end) for every option before the gen options are looked
 * up, so a tool may also redefine one; it returns 1 if it consumed the value, 0 if it consumed
 * only the flag, -1 if it does not know the option, -2 after setting *err. */
typedef int (*cli_extra_fn)(void *ctx, const char *name, const char *value, const char **err);
bool cli_parse(cli_options *o, int argc, char **argv, cli_extra_fn extra, void *extra_ctx,
               const char **err);
void cli_options_free(cli_options *o);

/* Moves the "<lora:NAME:SCALE>" tags of the prompt into o->loras (after the --lora ones),
 * resolved in --lora-dir, and the prompt without them into o->gen.prompt. */
bool cli_take_lora_tags(cli_options *o, const char **err);

/* The load settings the options chose (threads, weights dtype, precision, low memory, LoRAs). */
void cli_load_params(const cli_options *o, sd_load_params *lp);

/* Loads the --embedding files, then the --embeddings-dir folder, into p. */
sd_status cli_load_embeddings(const cli_options *o, sd_pipeline *p);

/* Builds the scheduler override JSON object from KEY=VALUE pairs: VALUE is taken as JSON when it
 * parses (true, 3, 0.5, "x", [1,2]) and as a string otherwise. */
bool cli_build_sched_overrides(cli_options *o, const char **err);

/* The help text of the generation options (for tools that embed them). */
const char *cli_gen_options_help(void);

/* "out.png" with batch index i of n: out.png when n == 1, else out-<i>.png. malloc'd. */
char *cli_indexed_path(const char *path, int i, int n);

/* The A1111-style "parameters" text: prompt, negative prompt, then one line of settings. */
char *cli_parameters_text(const sd_gen_params *g, const char *scheduler, int width, int height,
                          const char *model);

#endif

/* StableDiffusion3Pipeline's prompts and settings, each against numbers diffusers recorded:
 * - prompt_2 routes to the second CLIP only, and "" falls back to the prompt (Python's `or`);
 * - T5 (no SD3 fixture has one): sd3-tiny with flux-tiny's T5 tokenizer and encoder as
 *   tokenizer_3 / text_encoder_3. Its T5 rows must be flux-tiny's recorded T5 embeddings of the
 *   same prompt and length, the CLIP rows cropped to T5's width (torch's pad with a negative
 *   amount), the pooled output unchanged; generation refuses the folder (d_model 16 is not the
 *   transformer's joint_attention_dim 48) before doing any work;
 * - defaults (28 steps, guidance 7, size sample_size * 8), settings diffusers refuses, and folders
 *   it cannot load. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../core/fileutil.h"
#include "../pipeline/pipeline_internal.h"
#include "test.h"

typedef struct {
    float *embeds, *negative;
    size_t n;
} embeds_capture;

static int capture(void *user, const sd_event *ev) {
    embeds_capture *c = user;
    if (ev->kind != SD_EVENT_PROMPT_EMBEDS && ev->kind != SD_EVENT_NEGATIVE_EMBEDS) return 0;
    float **dst = ev->kind == SD_EVENT_PROMPT_EMBEDS ? &c->embeds : &c->negative;
    c->n = (size_t)ev->tensor.h * ev->tensor.c;
    free(*dst);
    *dst = malloc(c->n * sizeof **dst);
    memcpy(*dst, ev->tensor.data, c->n * sizeof **dst);
    return 0;
}

/* prompt_2 feeds the second CLIP only: with the flow_euler prompt and prompt_2 "cartoon" (the
 * shift1 run's negative prompt), the first CLIP's 16 features are flow_euler's and the second's are
 * the shift1 negative's, rows and pooled alike. An empty prompt_3 and negative_prompt_2 fall back
 * (Python's `or`), so the negative stays flow_euler's. */
static void check_prompt_2(sd_pipeline *p) {
    const char *fe = "sd3-tiny/expected/flow_euler.safetensors";
    const char *sh = "sd3-tiny/expected/flow_euler_shift1.safetensors";
    float *fe_e = fixture_tensor(fe, "prompt_embeds", NULL, NULL);
    float *fe_n = fixture_tensor(fe, "negative_prompt_embeds", NULL, NULL);
    float *fe_p = fixture_tensor(fe, "pooled_prompt_embeds", NULL, NULL);
    float *sh_e = fixture_tensor(sh, "negative_prompt_embeds", NULL, NULL);
    float *sh_p = fixture_tensor(sh, "negative_pooled_prompt_embeds", NULL, NULL);
    const int tokens = 333, width = 48, pd = 32;
    float *want = calloc((size_t)tokens * width, sizeof *want), want_p[32], pooled[32];
    float *got = malloc((size_t)tokens * width * sizeof *got);
    if (fe_e && fe_n && fe_p && sh_e && sh_p) {
        for (int t = 0; t < 77; t++)
            for (int k = 0; k < 32; k++)
                want[t * width + k] = (k < 16 ? fe_e : sh_e)[t * width + k];
        for (int k = 0; k < pd; k++) want_p[k] = (k < 16 ? fe_p : sh_p)[k];
        const char *prompt = "a photo of an astronaut riding a horse on mars";
        sd_gen_params g;
        sd_gen_params_init(&g);
        g.prompt = prompt;
        g.prompt_2 = "cartoon";
        g.prompt_3 = "";
        g.negative_prompt_2 = "";
        g.steps = 1;
        g.guidance = 5;
        embeds_capture c = {0};
        g.on_event = capture;
        g.user = &c;
        sd_result r;
        sd_status st = sd_generate(p, &g, &r);
        CHECK(st == SD_OK, "prompt_2 run: %s", sd_last_error());
        if (st == SD_OK) sd_result_free(&r);
        CHECK(c.embeds && c.negative && c.n == (size_t)tokens * width, "prompt_2 run: embeddings events");
        if (c.embeds && c.n == (size_t)tokens * width)
            check_rel("prompt_2 'cartoon': prompt embeds", c.embeds, want, c.n, 1e-5);
        if (c.negative && c.n == (size_t)tokens * width)
            check_rel("prompt_2 'cartoon': negative embeds (\"\" falls back)", c.negative, fe_n, c.n, 1e-5);
        CHECK_OK(sd_encode_prompt_sd3(p, prompt, "cartoon", prompt, 0, 256, got, pooled));
        check_rel("prompt_2 'cartoon': pooled", pooled, want_p, (size_t)pd, 1e-5);
        free(c.embeds), free(c.negative);
    }
    free(want), free(got), free(fe_e), free(fe_n), free(fe_p), free(sh_e), free(sh_p);
}

static void expect_error(sd_pipeline *p, const sd_gen_params *g, const char *what, const char *needle) {
    sd_result r;
    sd_status st = sd_generate(p, g, &r);
    CHECK(st != SD_OK, "%s: accepted", what);
    if (st == SD_OK) {
        sd_result_free(&r);
        return;
    }
    CHECK(strstr(sd_last_error(), needle) != NULL, "%s: error '%s' does not mention '%s'", what,
          sd_last_error(), needle);
}

/* The pipeline's defaults, and settings that StableDiffusion3Pipeline refuses or cannot run. */
static void check_defaults_and_errors(sd_pipeline *p) {
    int w = 0, h = 0;
    sd_pipeline_default_size(p, &w, &h);
    CHECK(sd_pipeline_family(p) == SD_FAMILY_SD3 && w == 128 && h == 128,
          "family %d, default size %dx%d (sample_size 16 * 8)", (int)sd_pipeline_family(p), w, h);
    CHECK(!strcmp(sd_pipeline_class(p), "StableDiffusion3Pipeline"), "class %s", sd_pipeline_class(p));
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "x";
    g.eta = 0.5;
    sd_result r;
    CHECK(sd_generate(p, &g, &r) != SD_OK, "eta accepted");
    CHECK(strstr(sd_last_error(), "eta") != NULL, "eta error: %s", sd_last_error());
    CHECK(r.used.steps == 28 && r.used.guidance == 7.0 && r.used.width == 128 && r.used.height == 128,
          "defaults: %d steps, guidance %g, %dx%d", r.used.steps, r.used.guidance, r.used.width,
          r.used.height);
    g.eta = 0;
    g.steps = 2;
    g.width = 120;
    expect_error(p, &g, "width 120", "multiple of 16");
    g.width = 400;
    expect_error(p, &g, "width 400 (25 patches)", "pos_embed_max_size");
    g.width = 128;
    g.max_sequence_length = 513;
    expect_error(p, &g, "max_sequence_length 513", "max sequence length");
    g.max_sequence_length = 0;
    g.scheduler = "EulerDiscreteScheduler";
    expect_error(p, &g, "Euler (epsilon) scheduler", "flow-matching");
    g.scheduler = NULL;
    g.guidance_rescale = 0.5;
    expect_error(p, &g, "guidance rescale", "guidance rescale");
    g.guidance_rescale = 0;
    g.clip_skip = 3;
    expect_error(p, &g, "clip skip 3", "only 3 layers");
    g.clip_skip = 0;
    g.original_width = 512;
    expect_error(p, &g, "SDXL original size", "SDXL");
    g.original_width = 0;
    sd_image im = {0};
    g.init_image = &im;
    expect_error(p, &g, "init image", "image-to-image");
}

/* sd3-tiny with flux-tiny's T5 as tokenizer_3 / text_encoder_3 (see the header). */
static void check_t5_pipeline(void) {
    char dir[128], cmd[4096 + 128], fixtures[1024];
    snprintf(dir, sizeof dir, "/tmp/sd-test-sd3-t5-%d", (int)getpid());
    snprintf(fixtures, sizeof fixtures, "%s", fixture("")); /* fixture() reuses one buffer */
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -rL '%s/sd3-tiny/pipeline' '%s' && "
             "cp -rL '%s/flux-tiny/pipeline/tokenizer_2' '%s/tokenizer_3' && "
             "cp -rL '%s/flux-tiny/pipeline/text_encoder_2' '%s/text_encoder_3'",
             dir, fixtures, dir, fixtures, dir, fixtures, dir);
    CHECK(system(cmd) == 0, "building %s", dir);
    char *mi_path = sd_path_join(dir, "model_index.json"), *text = NULL;
    CHECK_OK(sd_read_file(mi_path, &text, NULL));
    cJSON *mi = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (mi) {
        const char *t5tok[2] = {"transformers", "T5TokenizerFast"}, *t5[2] = {"transformers", "T5EncoderModel"};
        cJSON_ReplaceItemInObject(mi, "tokenizer_3", cJSON_CreateStringArray(t5tok, 2));
        cJSON_ReplaceItemInObject(mi, "text_encoder_3", cJSON_CreateStringArray(t5, 2));
        char *out = cJSON_Print(mi);
        FILE *fp = fopen(mi_path, "w");
        if (fp) fputs(out, fp), fclose(fp);
        cJSON_free(out);
        cJSON_Delete(mi);
    }
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, dir, NULL));
    const char *prompt = "a photo of an astronaut riding a horse on mars"; /* flux_dev_like's too */
    const char *flux = "flux-tiny/expected/flux_dev_like.safetensors";
    const char *sd3 = "sd3-tiny/expected/flow_euler.safetensors";
    if (p) {
        /* tokenizer_3 ids, padded to the default 256: flux_dev_like's 64, then more padding */
        char *json = NULL;
        CHECK_OK(sd_tokenize_json(p, prompt, &json));
        cJSON *j = json ? cJSON_Parse(json) : NULL;
        const cJSON *arr = cJSON_GetObjectItem(j, "tokenizer_3");
        int64_t shape[4];
        int32_t *want = fixture_ids(flux, "tokenizer_2_prompt_ids", shape, NULL);
        CHECK(cJSON_GetArraySize(arr) == 256 && cJSON_GetObjectItem(j, "tokenizer_2"),
              "--print-tokens with T5: 256 tokenizer_3 ids beside the CLIP ones: %.200s", json);
        if (want && cJSON_GetArraySize(arr) == 256 && shape[1] == 64) {
            int32_t got[256], want256[256];
            for (int i = 0; i < 256; i++) {
                got[i] = cJSON_GetArrayItem(arr, i)->valueint;
                want256[i] = want[i < 64 ? i : 63]; /* the recorded ids end in padding */
            }
            check_equal_i32("tokenizer_3 ids (flux-tiny's T5 tokenizer)", got, want256, 256);
        }
        free(want);
        cJSON_Delete(j);
        free(json);

        int tokens, width, pd;
        sd_embed_shape_sd3(p, 64, &tokens, &width, &pd);
        CHECK(tokens == 77 + 64 && width == 16 && pd == 32, "T5 embeddings shape %dx%d, pooled %d",
              tokens, width, pd);
        float *e = malloc((size_t)tokens * width * sizeof *e), pooled[32];
        float *clip = fixture_tensor(sd3, "prompt_embeds", NULL, NULL);
        float *clip_pooled = fixture_tensor(sd3, "pooled_prompt_embeds", NULL, NULL);
        float *t5 = fixture_tensor(flux, "prompt_embeds", NULL, NULL);
        CHECK_OK(sd_encode_prompt_sd3(p, prompt, prompt, prompt, 0, 64, e, pooled));
        if (clip && clip_pooled && t5 && tokens == 141 && width == 16) {
            float *want_clip = malloc(77 * 16 * sizeof *want_clip);
            for (int t = 0; t < 77; t++) memcpy(want_clip + t * 16, clip + t * 48, 16 * sizeof *clip);
            check_rel("with T5: CLIP rows cropped to T5's width", e, want_clip, 77 * 16, 1e-5);
            check_rel("with T5: T5 rows = flux-tiny's recorded T5 embeddings", e + 77 * 16, t5, 64 * 16, 1e-5);
            check_rel("with T5: pooled", pooled, clip_pooled, 32, 1e-5);
            free(want_clip);
        }
        free(e), free(clip), free(clip_pooled), free(t5);

        sd_gen_params g;
        sd_gen_params_init(&g);
        g.prompt = prompt;
        g.steps = 1;
        expect_error(p, &g, "T5 d_model 16 with joint_attention_dim 48", "text_encoder_3");
        sd_pipeline_free(p);
    }
    free(mi_path);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
}

/* Sets model_index.json's entry `key` in `dir` to [library, cls] (cls NULL: [null, null]). */
static void set_component(const char *dir, const char *key, const char *library, const char *cls) {
    char *path = sd_path_join(dir, "model_index.json"), *text = NULL;
    CHECK_OK(sd_read_file(path, &text, NULL));
    cJSON *mi = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (mi) {
        const char *pair[2] = {library, cls};
        cJSON *v = cls ? cJSON_CreateStringArray(pair, 2) : cJSON_CreateArray();
        for (int k = 0; !cls && k < 2; k++) cJSON_AddItemToArray(v, cJSON_CreateNull());
        cJSON_ReplaceItemInObject(mi, key, v);
        char *out = cJSON_Print(mi);
        FILE *fp = fopen(path, "w");
        if (fp) fputs(out, fp), fclose(fp);
        cJSON_free(out);
        cJSON_Delete(mi);
    }
    free(path);
}

static void expect_load_error(const char *dir, const char *what, const char *needle) {
    sd_pipeline *p = NULL;
    sd_status st = sd_pipeline_load(&p, dir, NULL);
    CHECK(st != SD_OK, "%s: loaded", what);
    if (p) sd_pipeline_free(p);
    if (st != SD_OK)
        CHECK(strstr(sd_last_error(), needle) != NULL, "%s: error '%s' does not mention '%s'", what,
              sd_last_error(), needle);
}

/* Folders diffusers' StableDiffusion3Pipeline cannot run: the error names the component. */
static void check_load_errors(void) {
    char dir[128], cmd[2 * 1024 + 512], fixtures[1024];
    snprintf(dir, sizeof dir, "/tmp/sd-test-sd3-bad-%d", (int)getpid());
    snprintf(fixtures, sizeof fixtures, "%s", fixture(""));
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -rL '%s/sd3-tiny/pipeline' '%s'", dir, fixtures, dir);
    CHECK(system(cmd) == 0, "copying sd3-tiny");
    /* the pooled output must be the projected one */
    set_component(dir, "text_encoder_2", "transformers", "CLIPTextModel");
    expect_load_error(dir, "text_encoder_2 without projection", "text_encoder_2");
    set_component(dir, "text_encoder_2", "transformers", "CLIPTextModelWithProjection");
    /* a T5 encoder without its tokenizer */
    set_component(dir, "text_encoder_3", "transformers", "T5EncoderModel");
    expect_load_error(dir, "text_encoder_3 without tokenizer_3", "tokenizer_3");
    set_component(dir, "text_encoder_3", NULL, NULL);
    /* a UNet is no SD3 transformer */
    set_component(dir, "transformer", "diffusers", "UNet2DConditionModel");
    expect_load_error(dir, "transformer of the wrong class", "UNet2DConditionModel");
    set_component(dir, "transformer", "diffusers", "SD3Transformer2DModel");
    snprintf(cmd, sizeof cmd, "rm '%s/transformer/diffusion_pytorch_model.safetensors'", dir);
    CHECK(system(cmd) == 0, "removing the transformer weights");
    expect_load_error(dir, "transformer weights missing", "transformer");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
}

int main(void) {
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd3-tiny/pipeline"), NULL));
    if (p) {
        check_prompt_2(p);
        check_defaults_and_errors(p);
        sd_pipeline_free(p);
    }
    check_t5_pipeline();
    check_load_errors();
    return test_summary();
}

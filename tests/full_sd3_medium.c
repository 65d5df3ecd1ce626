/* Full-size checks, not part of `make test` (they write about 6 GB to /tmp, need ~16 GB of memory
 * and run for many minutes on two cores):
 *
 * 1. An SD3-medium transformer (config and tensor list of the release, copied into
 *    tests/fixtures/full/sd3-medium/) with random BF16 weights written to a safetensors file in
 *    /tmp, loaded by sd3_load and run for one 512x512 CFG step: batch 2, 64x64 latents (1024 image
 *    tokens) and 333 text tokens (77 CLIP + 256 T5). Checks the output is finite, reports times.
 * 2. The whole StableDiffusion3Pipeline at the release's shapes around that transformer, without
 *    T5 (text_encoder_3 [null, null], as diffusers allows for SD3-medium: T5-XXL alone would need
 *    19 GB in float32): CLIP-L (768 wide, 12 layers) and CLIP-G (1280, 32 layers) with projection,
 *    the 16-channel VAE (128/256/512/512, scaling 1.5305, shift 0.0609), random BF16 weights, the
 *    real CLIP tokenizers; sd_generate at the default size (1024x1024) for one CFG step. Checks the
 *    shapes and finite latents, reports the time of each stage and the peak memory. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "../dit/sd3.h"
#include "../include/sd.h"
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

/* Writes `path` with every tensor of `list` ({"name": [shape...], ...}), random BF16. */
static sd_status write_random_weights(const cJSON *list, const char *path) {
    int n = cJSON_GetArraySize(list);
    st_entry *ents = calloc((size_t)n, sizeof *ents);
    uint16_t **data = calloc((size_t)n, sizeof *data);
    sd_status st = ents && data ? SD_OK : sd_set_error(SD_ERR_NOMEM, "out of memory");
    int i = 0;
    for (const cJSON *it = list->child; it && st == SD_OK; it = it->next, i++) {
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
    if (st == SD_OK) st = st_write(path, ents, n, NULL, 0);
    for (int j = 0; j < n && data; j++) free(data[j]);
    free(data);
    free(ents);
    return st;
}

static sd_status write_random_weights_file(const char *list_path, const char *path) {
    char *text = NULL;
    SD_TRY(sd_read_file(list_path, &text, NULL));
    cJSON *list = cJSON_Parse(text);
    free(text);
    if (!list) return sd_set_error(SD_ERR_FORMAT, "%s: bad JSON", list_path);
    sd_status st = write_random_weights(list, path);
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

static sd_status write_text(const char *path, const char *text) {
    sd_file_writer w;
    SD_TRY(sd_writer_open(&w, path));
    sd_writer_put(&w, text, strlen(text));
    return sd_writer_commit(&w);
}

/* Part 1: the transformer of `tdir` alone, one 512x512 CFG step. */
static void transformer_step(const char *tdir) {
    enum { B = 2, H = 64, W = 64, C = 16, CTX = 333, JD = 4096, PD = 2048 };
    double t1 = now();
    sd3_model *m = NULL;
    CHECK_OK(sd3_load(&m, tdir));
    double t2 = now();
    printf("sd3_load: %.1f s\n", t2 - t1);
    if (!m) return;
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
    for (int b = 0; b < B; b++) memset(ctx + ((size_t)b * CTX + 77) * JD, 0, sizeof(float) * 256 * JD);
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
        printf("forward pass %d (batch %d, %d image + %d text tokens): %.1f s wall, %.1f s CPU; "
               "output mean |x| %.4g, max |x| %.4g, %zu non-finite\n",
               pass + 1, B, (H / 2) * (W / 2), CTX, e - s, ce - cs, sum / ((double)B * H * W * C),
               mx, bad);
    }
    free(x), free(ctx), free(pooled), free(out);
    sd3_free(m);
}

/* Adds name -> shape (the non-zero leading dims) to a tensor list. */
static void add(cJSON *list, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void add(cJSON *list, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const int64_t dims[4] = {d0, d1, d2, d3};
    cJSON *shape = cJSON_AddArrayToObject(list, name);
    for (int d = 0; d < 4 && dims[d]; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)dims[d]));
}

/* CLIPTextModelWithProjection's tensors, as transformers names them. */
static cJSON *clip_tensors(int hidden, int inter, int layers, int proj) {
    cJSON *l = cJSON_CreateObject();
    const char *lin[4] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    add(l, 49408, hidden, 0, 0, "text_model.embeddings.token_embedding.weight");
    add(l, 77, hidden, 0, 0, "text_model.embeddings.position_embedding.weight");
    for (int i = 0; i < layers; i++) {
        for (int k = 0; k < 4; k++) {
            add(l, hidden, hidden, 0, 0, "text_model.encoder.layers.%d.self_attn.%s.weight", i, lin[k]);
            add(l, hidden, 0, 0, 0, "text_model.encoder.layers.%d.self_attn.%s.bias", i, lin[k]);
        }
        for (int k = 1; k <= 2; k++) {
            add(l, hidden, 0, 0, 0, "text_model.encoder.layers.%d.layer_norm%d.weight", i, k);
            add(l, hidden, 0, 0, 0, "text_model.encoder.layers.%d.layer_norm%d.bias", i, k);
        }
        add(l, inter, hidden, 0, 0, "text_model.encoder.layers.%d.mlp.fc1.weight", i);
        add(l, inter, 0, 0, 0, "text_model.encoder.layers.%d.mlp.fc1.bias", i);
        add(l, hidden, inter, 0, 0, "text_model.encoder.layers.%d.mlp.fc2.weight", i);
        add(l, hidden, 0, 0, 0, "text_model.encoder.layers.%d.mlp.fc2.bias", i);
    }
    add(l, hidden, 0, 0, 0, "text_model.final_layer_norm.weight");
    add(l, hidden, 0, 0, 0, "text_model.final_layer_norm.bias");
    add(l, proj, hidden, 0, 0, "text_projection.weight");
    return l;
}

static void vae_norm(cJSON *l, const char *prefix, const char *name, int c) {
    add(l, c, 0, 0, 0, "%s.%s.weight", prefix, name);
    add(l, c, 0, 0, 0, "%s.%s.bias", prefix, name);
}

static void vae_conv(cJSON *l, const char *prefix, const char *name, int out, int in, int k) {
    add(l, out, in, k, k, "%s.%s.weight", prefix, name);
    add(l, out, 0, 0, 0, "%s.%s.bias", prefix, name);
}

static void vae_resnet(cJSON *l, const char *prefix, int in, int out) {
    vae_norm(l, prefix, "norm1", in);
    vae_conv(l, prefix, "conv1", out, in, 3);
    vae_norm(l, prefix, "norm2", out);
    vae_conv(l, prefix, "conv2", out, out, 3);
    if (in != out) vae_conv(l, prefix, "conv_shortcut", out, in, 1);
}

static void vae_mid(cJSON *l, const char *part, int c) {
    char prefix[128];
    for (int j = 0; j < 2; j++) {
        snprintf(prefix, sizeof prefix, "%s.mid_block.resnets.%d", part, j);
        vae_resnet(l, prefix, c, c);
    }
    snprintf(prefix, sizeof prefix, "%s.mid_block.attentions.0", part);
    vae_norm(l, prefix, "group_norm", c);
    const char *lin[4] = {"to_q", "to_k", "to_v", "to_out.0"};
    for (int k = 0; k < 4; k++) {
        add(l, c, c, 0, 0, "%s.%s.weight", prefix, lin[k]);
        add(l, c, 0, 0, 0, "%s.%s.bias", prefix, lin[k]);
    }
}

/* AutoencoderKL's tensors (DownEncoderBlock2D / UpDecoderBlock2D, mid attention, no quant convs)
 * for block_out_channels ch[4], layers_per_block 2, `lat` latent channels. */
static cJSON *vae_tensors(const int ch[4], int lat) {
    cJSON *l = cJSON_CreateObject();
    char prefix[128];
    vae_conv(l, "encoder", "conv_in", ch[0], 3, 3);
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 2; j++) {
            snprintf(prefix, sizeof prefix, "encoder.down_blocks.%d.resnets.%d", i, j);
            vae_resnet(l, prefix, j == 0 ? ch[i > 0 ? i - 1 : 0] : ch[i], ch[i]);
        }
        snprintf(prefix, sizeof prefix, "encoder.down_blocks.%d.downsamplers.0", i);
        if (i < 3) vae_conv(l, prefix, "conv", ch[i], ch[i], 3);
    }
    vae_mid(l, "encoder", ch[3]);
    vae_norm(l, "encoder", "conv_norm_out", ch[3]);
    vae_conv(l, "encoder", "conv_out", 2 * lat, ch[3], 3);
    vae_conv(l, "decoder", "conv_in", ch[3], lat, 3);
    vae_mid(l, "decoder", ch[3]);
    for (int i = 0; i < 4; i++) {
        const int out = ch[3 - i], prev = ch[i > 0 ? 4 - i : 3];
        for (int j = 0; j < 3; j++) {
            snprintf(prefix, sizeof prefix, "decoder.up_blocks.%d.resnets.%d", i, j);
            vae_resnet(l, prefix, j == 0 ? prev : out, out);
        }
        snprintf(prefix, sizeof prefix, "decoder.up_blocks.%d.upsamplers.0", i);
        if (i < 3) vae_conv(l, prefix, "conv", out, out, 3);
    }
    vae_norm(l, "decoder", "conv_norm_out", ch[0]);
    vae_conv(l, "decoder", "conv_out", 3, ch[0], 3);
    return l;
}

/* The release's configs (stabilityai/stable-diffusion-3-medium-diffusers), T5 left out. */
static const char *const model_index_json =
    "{\"_class_name\": \"StableDiffusion3Pipeline\", \"scheduler\": [\"diffusers\", "
    "\"FlowMatchEulerDiscreteScheduler\"], \"text_encoder\": [\"transformers\", "
    "\"CLIPTextModelWithProjection\"], \"text_encoder_2\": [\"transformers\", "
    "\"CLIPTextModelWithProjection\"], \"text_encoder_3\": [null, null], \"tokenizer\": "
    "[\"transformers\", \"CLIPTokenizer\"], \"tokenizer_2\": [\"transformers\", \"CLIPTokenizer\"], "
    "\"tokenizer_3\": [null, null], \"transformer\": [\"diffusers\", \"SD3Transformer2DModel\"], "
    "\"vae\": [\"diffusers\", \"AutoencoderKL\"]}";
static const char *const scheduler_json =
    "{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"num_train_timesteps\": 1000, "
    "\"shift\": 3.0}";
static const char *const clip_l_json =
    "{\"architectures\": [\"CLIPTextModelWithProjection\"], \"hidden_act\": \"quick_gelu\", "
    "\"hidden_size\": 768, \"intermediate_size\": 3072, \"num_attention_heads\": 12, "
    "\"num_hidden_layers\": 12, \"projection_dim\": 768, \"max_position_embeddings\": 77, "
    "\"vocab_size\": 49408, \"layer_norm_eps\": 1e-05, \"bos_token_id\": 0, \"eos_token_id\": 2}";
static const char *const clip_g_json =
    "{\"architectures\": [\"CLIPTextModelWithProjection\"], \"hidden_act\": \"gelu\", "
    "\"hidden_size\": 1280, \"intermediate_size\": 5120, \"num_attention_heads\": 20, "
    "\"num_hidden_layers\": 32, \"projection_dim\": 1280, \"max_position_embeddings\": 77, "
    "\"vocab_size\": 49408, \"layer_norm_eps\": 1e-05, \"bos_token_id\": 0, \"eos_token_id\": 2}";
static const char *const vae_json =
    "{\"_class_name\": \"AutoencoderKL\", \"act_fn\": \"silu\", \"block_out_channels\": [128, 256, "
    "512, 512], \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", "
    "\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"], \"force_upcast\": true, \"in_channels\": 3, "
    "\"latent_channels\": 16, \"latents_mean\": null, \"latents_std\": null, \"layers_per_block\": 2, "
    "\"mid_block_add_attention\": true, \"norm_num_groups\": 32, \"out_channels\": 3, "
    "\"sample_size\": 1024, \"scaling_factor\": 1.5305, \"shift_factor\": 0.0609, "
    "\"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", "
    "\"UpDecoderBlock2D\"], \"use_post_quant_conv\": false, \"use_quant_conv\": false}";

/* Writes the pipeline folder around dir/transformer (already there). */
static sd_status build_pipeline(const char *dir) {
    static const char *const toks[] = {"tokenizer", "tokenizer_2"};
    static const char *const files[] = {"vocab.json", "merges.txt", "tokenizer_config.json"};
    char a[1024], b[1024];
    const char *mk[] = {"scheduler", "text_encoder", "text_encoder_2", "vae", "tokenizer", "tokenizer_2"};
    for (size_t i = 0; i < sizeof mk / sizeof *mk; i++) {
        snprintf(a, sizeof a, "%s/%s", dir, mk[i]);
        if (mkdir(a, 0755) != 0) return sd_set_error(SD_ERR_IO, "mkdir %s failed", a);
    }
    for (int t = 0; t < 2; t++) /* the real CLIP vocabulary; tokenizer_2 pads with "!" as the release */
        for (int f = 0; f < 3; f++) {
            snprintf(a, sizeof a, "sd3-tiny/pipeline/%s/%s", toks[t], files[f]);
            snprintf(b, sizeof b, "%s/%s/%s", dir, toks[t], files[f]);
            SD_TRY(copy_file(fixture(a), b));
        }
    snprintf(a, sizeof a, "%s/model_index.json", dir);
    SD_TRY(write_text(a, model_index_json));
    snprintf(a, sizeof a, "%s/scheduler/scheduler_config.json", dir);
    SD_TRY(write_text(a, scheduler_json));
    snprintf(a, sizeof a, "%s/text_encoder/config.json", dir);
    SD_TRY(write_text(a, clip_l_json));
    snprintf(a, sizeof a, "%s/text_encoder_2/config.json", dir);
    SD_TRY(write_text(a, clip_g_json));
    snprintf(a, sizeof a, "%s/vae/config.json", dir);
    SD_TRY(write_text(a, vae_json));
    const int ch[4] = {128, 256, 512, 512};
    cJSON *lists[3] = {clip_tensors(768, 3072, 12, 768), clip_tensors(1280, 5120, 32, 1280),
                       vae_tensors(ch, 16)};
    const char *paths[3] = {"text_encoder/model.safetensors", "text_encoder_2/model.safetensors",
                            "vae/diffusion_pytorch_model.safetensors"};
    sd_status st = SD_OK;
    for (int i = 0; i < 3; i++) {
        snprintf(a, sizeof a, "%s/%s", dir, paths[i]);
        if (st == SD_OK) st = write_random_weights(lists[i], a);
        cJSON_Delete(lists[i]);
    }
    return st;
}

/* Resident memory now, in GB: anonymous (what the process allocated) and file-backed (pages of the
 * memory-mapped BF16 files, which the kernel may drop and read again). */
static void rss_now(double *anon, double *file) {
    *anon = *file = 0;
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    long kb;
    while (fp && fgets(line, sizeof line, fp)) {
        if (sscanf(line, "RssAnon: %ld", &kb) == 1) *anon = kb / 1048576.0;
        if (sscanf(line, "RssFile: %ld", &kb) == 1) *file = kb / 1048576.0;
    }
    if (fp) fclose(fp);
}

typedef struct {
    double start, encoded, steps_done, decode_start;
    double anon[3], file[3]; /* after encoding, after the step, before the decode */
} stage_times;

static int on_event(void *user, const sd_event *ev) {
    stage_times *t = user;
    int k = -1;
    if (ev->kind == SD_EVENT_PROMPT_EMBEDS) t->encoded = now(), k = 0;
    if (ev->kind == SD_EVENT_STEP) t->steps_done = now(), k = 1;
    if (ev->kind == SD_EVENT_DECODE) t->decode_start = now(), k = 2;
    if (k >= 0) rss_now(&t->anon[k], &t->file[k]);
    return 0;
}

/* Part 2: the pipeline at its default size, one CFG step. */
static void pipeline_run(const char *dir) {
    double t0 = now();
    sd_status st = build_pipeline(dir);
    CHECK(st == SD_OK, "building the pipeline folder: %s", sd_last_error());
    if (st != SD_OK) return;
    double t1 = now();
    printf("wrote CLIP-L, CLIP-G and VAE weights in %.1f s\n", t1 - t0);
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, dir, NULL));
    double t2 = now();
    printf("sd_pipeline_load: %.1f s\n", t2 - t1);
    if (!p) return;
    int w = 0, h = 0;
    sd_pipeline_default_size(p, &w, &h);
    CHECK(w == 1024 && h == 1024, "default size %dx%d (sample_size 128 * 8)", w, h);
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a photo of an astronaut riding a horse on mars";
    g.negative_prompt = "blurry";
    g.steps = 1;
    g.seed = 42;
    double load_anon, load_file;
    rss_now(&load_anon, &load_file);
    printf("resident after loading: %.1f GB anonymous, %.1f GB of mapped files\n", load_anon, load_file);
    stage_times t = {.start = now()};
    g.on_event = on_event;
    g.user = &t;
    sd_result r;
    double cs = cpu_now();
    st = sd_generate(p, &g, &r);
    double end = now(), ce = cpu_now();
    CHECK(st == SD_OK, "sd_generate: %s", sd_last_error());
    if (st == SD_OK) {
        const size_t n = (size_t)r.latent_shape[0] * r.latent_shape[1] * r.latent_shape[2] * r.latent_shape[3];
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += !isfinite(r.latents[i]);
        CHECK(r.n_images == 1 && r.images[0].width == 1024 && r.images[0].height == 1024 &&
                  r.latent_shape[1] == 16 && r.latent_shape[2] == 128 && r.latent_shape[3] == 128 &&
                  bad == 0 && r.used.guidance == 7.0 && r.model_calls == 1,
              "%d images of %dx%d, latents %dx%dx%d, %zu non-finite, guidance %g, %d calls",
              r.n_images, r.n_images ? r.images[0].width : 0, r.n_images ? r.images[0].height : 0,
              r.latent_shape[1], r.latent_shape[2], r.latent_shape[3], bad, r.used.guidance,
              r.model_calls);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("sd_generate 1024x1024, 1 CFG step (batch 2, 4096 image + 333 text tokens): %.1f s "
               "wall, %.1f s CPU; encode %.1f s, step %.1f s, decode %.1f s; peak RSS %.1f GB\n",
               end - t.start, ce - cs, t.encoded - t.start, t.steps_done - t.encoded,
               end - t.decode_start, ru.ru_maxrss / 1048576.0);
        printf("resident (GB anonymous + mapped files): encoded %.1f + %.1f, stepped %.1f + %.1f, "
               "decoding %.1f + %.1f\n", t.anon[0], t.file[0], t.anon[1], t.file[1], t.anon[2],
               t.file[2]);
        sd_result_free(&r);
    }
    sd_pipeline_free(p);
}

int main(void) {
    char dir[] = "/tmp/full_sd3_medium_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp failed");
        return test_summary();
    }
    char tdir[64], cmd[128];
    snprintf(tdir, sizeof tdir, "%s/transformer", dir);
    CHECK(mkdir(tdir, 0755) == 0, "mkdir %s", tdir);
    char *cfg_path = sd_path_join(tdir, "config.json");
    char *st_path = sd_path_join(tdir, "diffusion_pytorch_model.safetensors");
    double t0 = now();
    CHECK_OK(copy_file(fixture("full/sd3-medium/transformer/config.json"), cfg_path));
    sd_status st = write_random_weights_file(fixture("full/sd3-medium/transformer_tensors.json"), st_path);
    CHECK(st == SD_OK, "transformer weights: %s", sd_last_error());
    printf("wrote random BF16 transformer weights in %.1f s\n", now() - t0);
    if (st == SD_OK) {
        transformer_step(tdir);
        pipeline_run(dir);
    }
    free(cfg_path);
    free(st_path);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
    return test_summary();
}

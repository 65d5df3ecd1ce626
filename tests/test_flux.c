/* Flux transformer against diffusers: every transformer call of every flux-tiny run (packed
 * latents, sigma timestep, embedded guidance, T5 and pooled CLIP embeddings) with the weights held
 * as each load policy says (BF16 kept in the mapping, low memory), the same bits from a float32
 * copy, F16/F32 checkpoints, latent packing, position ids, and load errors (missing tensor, wrong
 * shape, unsupported or inconsistent config). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "../dit/flux.h"
#include "../dit/flux_internal.h"
#include "test.h"

#define TOL         1e-5
#define TRANSFORMER "flux-tiny/pipeline/transformer"

static const char *const runs[] = {"flux_dev_like", "flux_nonsquare"};
static char tmpdir[256];

/* ---- fixture runs ---- */

typedef struct {
    int calls, batch, img, txt, channels, gh, gw;
    float guidance;
    float *inputs, *outputs, *timesteps, *prompt, *pooled;
} run_record;

static void run_free(run_record *r) {
    free(r->inputs);
    free(r->outputs);
    free(r->timesteps);
    free(r->prompt);
    free(r->pooled);
    memset(r, 0, sizeof *r);
}

static int run_read(const char *run, run_record *r) {
    memset(r, 0, sizeof *r);
    char json[256], st[256];
    snprintf(json, sizeof json, "flux-tiny/expected/%s.json", run);
    snprintf(st, sizeof st, "flux-tiny/expected/%s.safetensors", run);
    sd_cfg c;
    CHECK_OK(cfg_open(&c, fixture(json)));
    r->guidance = (float)cfg_num(&c, "guidance_scale", NAN);
    const int height = cfg_int(&c, "height", 0), width = cfg_int(&c, "width", 0);
    CHECK_OK(cfg_status(&c));
    cfg_close(&c);
    int64_t in_shape[8], out_shape[8], p_shape[8];
    int nd_in = 0, nd_out = 0, nd_p = 0;
    r->inputs = fixture_tensor(st, "model_inputs", in_shape, &nd_in);
    r->outputs = fixture_tensor(st, "model_outputs", out_shape, &nd_out);
    r->timesteps = fixture_tensor(st, "model_timesteps", NULL, NULL);
    r->prompt = fixture_tensor(st, "prompt_embeds", p_shape, &nd_p);
    r->pooled = fixture_tensor(st, "pooled_prompt_embeds", NULL, NULL);
    if (!r->inputs || !r->outputs || !r->timesteps || !r->prompt || !r->pooled) return 0;
    CHECK(nd_in == 4 && nd_out == 4 && nd_p == 3, "%s: unexpected ranks", run);
    r->calls = (int)in_shape[0];
    r->batch = (int)in_shape[1];
    r->img = (int)in_shape[2];
    r->channels = (int)in_shape[3];
    r->txt = (int)p_shape[1];
    /* 8x VAE, then 2x2 packing: one token per 16x16 pixels. */
    r->gh = height / 16;
    r->gw = width / 16;
    CHECK(r->gh * r->gw == r->img, "%s: %d tokens for %dx%d", run, r->img, width, height);
    CHECK(memcmp(in_shape, out_shape, 4 * sizeof *in_shape) == 0, "%s: in/out shapes", run);
    CHECK(!isnan(r->guidance), "%s: guidance_scale", run);
    return r->gh * r->gw == r->img;
}

/* Every transformer call k of the run: model_inputs[k] -> model_outputs[k]. */
static void check_run(flux_model *m, const char *run, const char *label) {
    run_record r;
    if (!run_read(run, &r)) {
        run_free(&r);
        return;
    }
    const size_t per_call = (size_t)r.batch * r.img * r.channels;
    float *img_ids = malloc((size_t)r.img * 3 * sizeof *img_ids);
    float *txt_ids = calloc((size_t)r.txt * 3, sizeof *txt_ids); /* FluxPipeline: zeros */
    float *out = malloc(per_call * sizeof *out);
    flux_image_ids(r.gh, r.gw, img_ids);
    for (int k = 0; k < r.calls; k++) {
        CHECK_OK(flux_forward(m, r.inputs + k * per_call, r.batch, r.img, img_ids, r.prompt, r.txt,
                              txt_ids, r.timesteps[k], r.guidance, r.pooled, out));
        char what[128];
        snprintf(what, sizeof what, "%s %s call %d (t=%.4f)", label, run, k, r.timesteps[k]);
        check_rel(what, out, r.outputs + k * per_call, per_call, TOL);
    }
    free(img_ids);
    free(txt_ids);
    free(out);
    run_free(&r);
}

static const weights_policy stored_policy = {0}, low_memory_policy = {.low_memory = true};

static void test_parity(const weights_policy *policy, const char *label) {
    flux_model *m = NULL;
    CHECK_OK(flux_load(&m, fixture(TRANSFORMER), policy));
    if (!m) return;
    /* The fixture is stored as BF16: every layer points into the mapping, as an nn/ layer of a
     * BF16 release does (no float32 copy), and pages out after each call in low-memory mode. */
    const nn_linear *q = &m->blocks[0].to_q, *o = &m->single_blocks[1].proj_out;
    CHECK(q->src.n_parts == 1 && q->src.type == KERN_BF16 && !q->w && !q->own[0] &&
              o->src.n_parts == 1 && o->src.type == KERN_BF16 && !o->w,
          "%s: BF16 weights are not kept where the file maps them", label);
    CHECK(q->release == policy->low_memory && o->release == policy->low_memory,
          "%s: layers %s their pages after each call", label,
          q->release ? "give back" : "keep");
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) check_run(m, runs[i], label);
    flux_free(m);
}

static void test_config(void) {
    flux_model *m = NULL;
    CHECK_OK(flux_load(&m, fixture(TRANSFORMER), NULL));
    if (!m) return;
    const flux_config *c = flux_get_config(m);
    /* config.json's values; out_channels is null there, so in_channels. */
    CHECK(c->in_channels == 64 && c->out_channels == 64, "channels %d %d", c->in_channels,
          c->out_channels);
    CHECK(c->num_layers == 1 && c->num_single_layers == 2, "layers %d %d", c->num_layers,
          c->num_single_layers);
    CHECK(c->num_attention_heads == 2 && c->attention_head_dim == 16 && c->inner_dim == 32,
          "heads %d x %d", c->num_attention_heads, c->attention_head_dim);
    CHECK(c->joint_attention_dim == 16 && c->pooled_projection_dim == 16, "context dims");
    CHECK(c->guidance_embeds, "guidance_embeds");
    CHECK(c->axes_dims_rope[0] == 4 && c->axes_dims_rope[1] == 6 && c->axes_dims_rope[2] == 6,
          "axes_dims_rope");
    /* A guidance-distilled model needs its guidance value. */
    float x[64] = {0}, ids[3] = {0}, ctx[16] = {0}, pooled[16] = {0}, out[64];
    sd_status st = flux_forward(m, x, 1, 1, ids, ctx, 1, ids, 1.0f, NAN, pooled, out);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "guidance"), "NaN guidance: %s: %s",
          sd_status_name(st), sd_last_error());
    st = flux_forward(m, x, 0, 1, ids, ctx, 1, ids, 1.0f, 3.5f, pooled, out);
    CHECK(st == SD_ERR_ARG, "batch 0 accepted");
    /* No text tokens is a valid (if unusual) call: the image attends to itself. */
    CHECK_OK(flux_forward(m, x, 1, 1, ids, ctx, 0, ids, 1.0f, 3.5f, pooled, out));
    flux_free(m);
}

/* Two batch items with different latents and prompts in one call: item 0 is flux_dev_like's
 * call 0 (against the fixture), item 1 must equal the same model run on it alone. */
static void test_batch(void) {
    run_record dev, ns;
    int ok = run_read("flux_dev_like", &dev) & run_read("flux_nonsquare", &ns);
    flux_model *m = NULL;
    CHECK_OK(flux_load(&m, fixture(TRANSFORMER), &low_memory_policy));
    ok = ok && m && dev.txt == ns.txt;
    if (ok) {
        const size_t img = (size_t)dev.img * dev.channels, ctx = (size_t)dev.txt * 16;
        float *x = malloc(2 * img * sizeof *x), *context = malloc(2 * ctx * sizeof *context);
        float pooled[32], *out = malloc(2 * img * sizeof *out), *single = malloc(img * sizeof *out);
        float *img_ids = malloc((size_t)dev.img * 3 * sizeof *img_ids);
        float *txt_ids = calloc((size_t)dev.txt * 3, sizeof *txt_ids);
        flux_image_ids(dev.gh, dev.gw, img_ids);
        memcpy(x, dev.inputs, img * sizeof *x);
        memcpy(x + img, dev.inputs + img, img * sizeof *x); /* call 1's latents */
        memcpy(context, dev.prompt, ctx * sizeof *context);
        memcpy(context + ctx, ns.prompt, ctx * sizeof *context);
        memcpy(pooled, dev.pooled, 16 * sizeof *pooled);
        memcpy(pooled + 16, ns.pooled, 16 * sizeof *pooled);
        const float t = dev.timesteps[0];
        CHECK_OK(flux_forward(m, x, 2, dev.img, img_ids, context, dev.txt, txt_ids, t, dev.guidance,
                              pooled, out));
        check_rel("batch of 2, item 0 vs flux_dev_like call 0", out, dev.outputs, img, TOL);
        CHECK_OK(flux_forward(m, x + img, 1, dev.img, img_ids, context + ctx, dev.txt, txt_ids, t,
                              dev.guidance, pooled + 16, single));
        check_rel("batch of 2, item 1 vs alone", out + img, single, img, 1e-6);
        free(x);
        free(context);
        free(out);
        free(single);
        free(img_ids);
        free(txt_ids);
    }
    flux_free(m);
    run_free(&dev);
    run_free(&ns);
}

/* ---- packing ---- */

/* diffusers' _pack_latents on an NCHW tensor, spelled as its view and permute: a [b][c][h][w]
 * tensor viewed as [b][c][h/2][2][w/2][2] and permuted to (0, 2, 4, 1, 3, 5). */
static void reference_pack_nchw(const float *nchw, int b, int c, int h, int w, float *out) {
    const int dims[6] = {b, c, h / 2, 2, w / 2, 2}, perm[6] = {0, 2, 4, 1, 3, 5};
    long stride[6];
    stride[5] = 1;
    for (int i = 4; i >= 0; i--) stride[i] = stride[i + 1] * dims[i + 1];
    int idx[6] = {0};
    const long n = (long)b * c * h * w;
    for (long o = 0; o < n; o++) {
        /* idx enumerates the permuted shape in row-major order. */
        long src = 0;
        for (int i = 0; i < 6; i++) src += idx[i] * stride[perm[i]];
        out[o] = nchw[src];
        for (int i = 5; i >= 0; i--) {
            if (++idx[i] < dims[perm[i]]) break;
            idx[i] = 0;
        }
    }
}

static void test_packing(void) {
    const int b = 2, c = 16, h = 6, w = 10;
    const size_t n = (size_t)b * c * h * w;
    float *nchw = malloc(n * sizeof *nchw), *nhwc = malloc(n * sizeof *nhwc);
    float *want = malloc(n * sizeof *want), *packed = malloc(n * sizeof *packed);
    float *back = malloc(n * sizeof *back);
    fill_random(nchw, n, 11);
    nchw_to_nhwc(nchw, nhwc, b, c, h, w);
    reference_pack_nchw(nchw, b, c, h, w, want);
    CHECK_OK(flux_pack_latents(nhwc, b, h, w, c, packed));
    CHECK(memcmp(packed, want, n * sizeof *want) == 0, "pack differs from _pack_latents");
    CHECK_OK(flux_unpack_latents(packed, b, h, w, c, back));
    CHECK(memcmp(back, nhwc, n * sizeof *back) == 0, "unpack(pack(x)) != x");
    CHECK(flux_pack_latents(nhwc, 1, 5, 4, c, packed) == SD_ERR_ARG, "odd height accepted");
    CHECK(flux_unpack_latents(packed, 1, 4, 3, c, back) == SD_ERR_ARG, "odd width accepted");

    /* _prepare_latent_image_ids(h=3, w=4): rows of (0, row, column), row-major. */
    float ids[12 * 3];
    flux_image_ids(3, 4, ids);
    const float want_ids[6] = {0, 0, 0, 0, 0, 1}, last[3] = {0, 2, 3}, fifth[3] = {0, 1, 1};
    CHECK(memcmp(ids, want_ids, sizeof want_ids) == 0, "image ids of tokens 0, 1");
    CHECK(memcmp(ids + 5 * 3, fifth, sizeof fifth) == 0, "image id of token 5");
    CHECK(memcmp(ids + 11 * 3, last, sizeof last) == 0, "image id of token 11");
    free(nchw);
    free(nhwc);
    free(want);
    free(packed);
    free(back);
}

/* ---- variants of the checkpoint on disk ---- */

static char *variant_dir(const char *name) {
    char *dir = sd_path_join(tmpdir, name);
    if (dir) mkdir(dir, 0700);
    return dir;
}

static void remove_variant(char *dir) {
    char *a = sd_path_join(dir, "config.json"),
         *b = sd_path_join(dir, "diffusion_pytorch_model.safetensors");
    unlink(a);
    unlink(b);
    rmdir(dir);
    free(a);
    free(b);
    free(dir);
}

/* config.json of the fixture with `key` set to the JSON value `value` (NULL: copied as is). */
static void write_config(const char *dir, const char *key, const char *value) {
    char *text = NULL;
    cJSON *root = NULL;
    CHECK_OK(sd_read_file(fixture(TRANSFORMER "/config.json"), &text, NULL));
    if (text) root = cJSON_Parse(text);
    free(text);
    if (!root) return;
    if (key) {
        cJSON_DeleteItemFromObject(root, key);
        cJSON_AddItemToObject(root, key, cJSON_Parse(value));
    }
    char *out = cJSON_Print(root), *path = sd_path_join(dir, "config.json");
    FILE *fp = fopen(path, "w");
    if (fp) {
        fputs(out, fp);
        fclose(fp);
    }
    free(path);
    free(out);
    cJSON_Delete(root);
}

/* The fixture's weights converted to `dtype`, without `drop`, with `narrow` (a [32][32] weight)
 * written as [32][16]. Returns how many values the conversion changed. */
static long write_weights(const char *dir, st_dtype dtype, const char *drop, const char *narrow) {
    st_file f;
    long changed = 0;
    CHECK_OK(st_open(&f, fixture(TRANSFORMER "/diffusion_pytorch_model.safetensors")));
    if (!f.tensors) return -1;
    st_entry *e = calloc((size_t)f.n_tensors, sizeof *e);
    void **bufs = calloc((size_t)f.n_tensors, sizeof *bufs);
    int n = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (drop && !strcmp(t->name, drop)) continue;
        const int64_t numel = st_numel(t);
        float *f32 = malloc((size_t)numel * sizeof *f32);
        st_to_f32(t, f32);
        e[n] = (st_entry){.name = t->name, .dtype = dtype, .ndim = t->ndim};
        memcpy(e[n].shape, t->shape, sizeof t->shape);
        if (narrow && !strcmp(t->name, narrow)) e[n].shape[1] /= 2;
        if (dtype == ST_F32) {
            bufs[n] = f32;
        } else {
            uint16_t *h = malloc((size_t)numel * sizeof *h);
            for (int64_t j = 0; j < numel; j++) {
                h[j] = dtype == ST_F16 ? st_f32_to_f16(f32[j]) : st_f32_to_bf16(f32[j]);
                float back = dtype == ST_F16 ? st_f16_to_f32(h[j]) : st_bf16_to_f32(h[j]);
                changed += back != f32[j];
            }
            free(f32);
            bufs[n] = h;
        }
        e[n].data = bufs[n];
        n++;
    }
    char *path = sd_path_join(dir, "diffusion_pytorch_model.safetensors");
    CHECK_OK(st_write(path, e, n, NULL, 0));
    free(path);
    for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(e);
    st_close(&f);
    return changed;
}

/* One transformer call (flux_dev_like's call 1) of the model in `dir` loaded with `policy`:
 * malloc'd output, NULL on failure. */
static float *one_call(const char *dir, const weights_policy *policy, const char *label) {
    run_record r;
    flux_model *m = NULL;
    float *out = NULL;
    CHECK_OK(flux_load(&m, dir, policy)); /* before run_read: fixture() reuses its buffer */
    if (!run_read("flux_dev_like", &r)) flux_free(m), m = NULL;
    if (m) {
        const size_t per_call = (size_t)r.batch * r.img * r.channels;
        float *img_ids = malloc((size_t)r.img * 3 * sizeof *img_ids);
        float *txt_ids = calloc((size_t)r.txt * 3, sizeof *txt_ids);
        out = malloc(per_call * sizeof *out);
        flux_image_ids(r.gh, r.gw, img_ids);
        sd_status st = flux_forward(m, r.inputs + per_call, r.batch, r.img, img_ids, r.prompt,
                                    r.txt, txt_ids, r.timesteps[1], r.guidance, r.pooled, out);
        CHECK(st == SD_OK, "%s: %s", label, sd_last_error());
        if (st != SD_OK) free(out), out = NULL;
        free(img_ids);
        free(txt_ids);
    }
    flux_free(m);
    run_free(&r);
    return out;
}

static void expect_same_bits(const float *got, const float *want, const char *what) {
    run_record r;
    if (!run_read("flux_dev_like", &r) || !got || !want) {
        CHECK(got && want, "%s: no output", what);
        run_free(&r);
        return;
    }
    const size_t n = (size_t)r.batch * r.img * r.channels;
    CHECK(!memcmp(got, want, n * sizeof *got), "%s: not bit-identical (rel err %.3g)", what,
          rel_l2(got, want, n));
    run_free(&r);
}

/* The fixture's weights stored as F16 and F32 (against diffusers), and the same bits whatever the
 * policy: the BF16 release kept in the mapping, its F32 copy copied to float32 at load (the fp32
 * GEMM on the widened weights either way), --low-memory, and --weights-dtype bf16 on the F32
 * copy (a no-op on values that are bf16 already). */
static void test_stored_dtypes(void) {
    float *ref = one_call(fixture(TRANSFORMER), &stored_policy, "BF16 stored");
    const weights_policy to_bf16 = {.dtype = WEIGHTS_TO_BF16};
    const st_dtype types[2] = {ST_F16, ST_F32};
    for (int i = 0; i < 2; i++) {
        char *dir = variant_dir(i ? "f32" : "f16");
        write_config(dir, NULL, NULL);
        long changed = write_weights(dir, types[i], NULL, NULL);
        /* BF16 -> F32 is exact; F16 has a narrower exponent range, so a few tiny weights lose
         * bits (the outputs must still match). */
        if (types[i] == ST_F32)
            CHECK(changed == 0, "F32: %ld weights not exact", changed);
        else
            printf("note: %ld of the BF16 weights are not exact in F16\n", changed);
        flux_model *m = NULL;
        CHECK_OK(flux_load(&m, dir, NULL));
        if (m) {
            const nn_linear *q = &m->blocks[0].to_q;
            /* F16 stays in the mapping; F32 is copied once (the fastest path). */
            CHECK(types[i] == ST_F16 ? q->src.type == KERN_F16 && q->src.n_parts == 1 && !q->w
                                     : q->w && !q->src.n_parts,
                  "%s weights held wrongly", st_dtype_name(types[i]));
            char label[32];
            snprintf(label, sizeof label, "stored %s", st_dtype_name(types[i]));
            check_run(m, "flux_dev_like", label);
            flux_free(m);
        }
        if (types[i] == ST_F32) {
            float *got = one_call(dir, NULL, "F32 copy");
            expect_same_bits(got, ref, "F32 copy vs BF16 kept in the mapping");
            free(got);
            got = one_call(dir, &low_memory_policy, "F32 low memory");
            expect_same_bits(got, ref, "F32 --low-memory vs BF16 kept in the mapping");
            free(got);
            got = one_call(dir, &to_bf16, "F32 --weights-dtype bf16");
            expect_same_bits(got, ref, "F32 --weights-dtype bf16 vs BF16 kept in the mapping");
            free(got);
        }
        remove_variant(dir);
    }
    float *got = one_call(fixture(TRANSFORMER), &low_memory_policy, "BF16 low memory");
    expect_same_bits(got, ref, "BF16 --low-memory vs BF16 kept in the mapping");
    free(got);
    free(ref);
}

static void expect_load_error(const char *dir, const weights_policy *policy, sd_status want,
                              const char *needle, const char *what) {
    flux_model *m = NULL;
    sd_status st = flux_load(&m, dir, policy);
    CHECK(st == want && m == NULL, "%s: got %s, expected %s (%s)", what, sd_status_name(st),
          sd_status_name(want), sd_last_error());
    CHECK(strstr(sd_last_error(), needle) != NULL, "%s: message '%s' does not name '%s'", what,
          sd_last_error(), needle);
    flux_free(m);
}

static void test_errors(void) {
    const char *q = "transformer_blocks.0.attn.to_q.weight";
    const char *g = "time_text_embed.guidance_embedder.linear_2.bias";
    const char *nq = "single_transformer_blocks.1.attn.norm_k.weight";
    const weights_policy *policies[2] = {&stored_policy, &low_memory_policy};
    for (int k = 0; k < 2; k++) {
        const weights_policy *mode = policies[k];
        char *dir = variant_dir("missing");
        write_config(dir, NULL, NULL);
        write_weights(dir, ST_BF16, q, NULL);
        expect_load_error(dir, mode, SD_ERR_TENSOR, q, "missing to_q");
        write_weights(dir, ST_BF16, g, NULL);
        expect_load_error(dir, mode, SD_ERR_TENSOR, g, "missing guidance bias");
        write_weights(dir, ST_BF16, nq, NULL);
        expect_load_error(dir, mode, SD_ERR_TENSOR, nq, "missing norm_k");
        write_weights(dir, ST_BF16, NULL, q);
        expect_load_error(dir, mode, SD_ERR_TENSOR, q, "narrow to_q");
        write_weights(dir, ST_BF16, NULL, NULL);
        /* Config and weights disagree: the checkpoint has one single block's tensors too few. */
        write_config(dir, "num_single_layers", "3");
        expect_load_error(dir, mode, SD_ERR_TENSOR, "single_transformer_blocks.2.", "3 single");
        write_config(dir, "guidance_embeds", "false");
        {
            /* Schnell-style config over a dev checkpoint loads: the extra tensors are unused. */
            flux_model *m = NULL;
            CHECK_OK(flux_load(&m, dir, mode));
            flux_free(m);
        }
        remove_variant(dir);
    }

    static const struct {
        const char *key, *value, *needle;
        sd_status want;
    } bad[] = {
        {"patch_size", "2", "patch_size", SD_ERR_UNSUPPORTED},
        {"axes_dims_rope", "[8, 8]", "axes_dims_rope", SD_ERR_UNSUPPORTED},
        {"_class_name", "\"SD3Transformer2DModel\"", "_class_name", SD_ERR_UNSUPPORTED},
        {"axes_dims_rope", "[4, 6, 8]", "attention_head_dim", SD_ERR_CONFIG},
        {"axes_dims_rope", "[5, 5, 6]", "axes_dims_rope", SD_ERR_CONFIG},
        {"num_attention_heads", "0", "num_attention_heads", SD_ERR_CONFIG},
        {"in_channels", "\"64\"", "in_channels", SD_ERR_CONFIG},
    };
    char *dir = variant_dir("config");
    write_weights(dir, ST_BF16, NULL, NULL);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_config(dir, bad[i].key, bad[i].value);
        expect_load_error(dir, NULL, bad[i].want, bad[i].needle, bad[i].key);
    }
    /* A missing folder names the file it looked for. */
    expect_load_error("/nonexistent/flux", NULL, SD_ERR_IO, "/nonexistent/flux",
                      "missing folder");
    remove_variant(dir);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_flux_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        CHECK(0, "mkdtemp failed");
        return test_summary();
    }
    test_config();
    test_parity(&stored_policy, "stored");
    test_parity(&low_memory_policy, "low memory");
    test_batch();
    test_stored_dtypes();
    test_packing();
    test_errors();
    rmdir(tmpdir);
    return test_summary();
}

/* SD3Transformer2DModel against diffusers: every recorded transformer call of the sd3-tiny and
 * sd35-tiny pipeline runs (CFG batches [uncond; cond]), the position table against the
 * checkpoint's buffer, and load/forward errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "../dit/dit_common.h"
#include "../dit/sd3.h"
#include "test.h"

static const char *const runs[] = {"flow_euler", "flow_euler_nonsquare", "flow_euler_shift1",
                                   "flow_nocfg"};

/* Every call k of one run: transformer(model_inputs[k], model_timesteps[k], context, pooled)
 * against model_outputs[k]. Returns the largest relative error seen. */
static double check_run(sd3_model *m, const char *model, const char *run) {
    char file[256], what[320];
    snprintf(file, sizeof file, "%s/expected/%s.safetensors", model, run);
    int64_t in_shape[8], pe_shape[8], pool_shape[8];
    float *inputs = fixture_tensor(file, "model_inputs", in_shape, NULL);
    float *outputs = fixture_tensor(file, "model_outputs", NULL, NULL);
    float *steps = fixture_tensor(file, "model_timesteps", NULL, NULL);
    float *pe = fixture_tensor(file, "prompt_embeds", pe_shape, NULL);
    float *npe = fixture_tensor(file, "negative_prompt_embeds", NULL, NULL);
    float *pool = fixture_tensor(file, "pooled_prompt_embeds", pool_shape, NULL);
    float *npool = fixture_tensor(file, "negative_pooled_prompt_embeds", NULL, NULL);
    double worst = 0.0;
    if (!inputs || !outputs || !steps || !pe || !npe || !pool || !npool) goto done;
    const int calls = (int)in_shape[0], batch = (int)in_shape[1], c = (int)in_shape[2];
    const int h = (int)in_shape[3], w = (int)in_shape[4];
    const int len = (int)pe_shape[1], jd = (int)pe_shape[2], pd = (int)pool_shape[1];
    const size_t per_call = (size_t)batch * c * h * w, ctx_n = (size_t)len * jd;
    CHECK(batch == 1 || batch == 2, "%s: batch %d", file, batch);
    /* With CFG the pipeline batches [negative; positive]; without, the prompt alone. */
    float *ctx = malloc((size_t)batch * ctx_n * sizeof *ctx);
    float *pooled = malloc((size_t)batch * pd * sizeof *pooled);
    float *x = malloc(per_call * sizeof *x), *y = malloc(per_call * sizeof *y);
    float *got = malloc(per_call * sizeof *got);
    memcpy(ctx + (batch - 1) * ctx_n, pe, ctx_n * sizeof *ctx);
    memcpy(pooled + (size_t)(batch - 1) * pd, pool, (size_t)pd * sizeof *pooled);
    if (batch == 2) {
        memcpy(ctx, npe, ctx_n * sizeof *ctx);
        memcpy(pooled, npool, (size_t)pd * sizeof *pooled);
    }
    for (int k = 0; k < calls; k++) {
        nchw_to_nhwc(inputs + k * per_call, x, batch, c, h, w);
        sd_status st = sd3_forward(m, x, batch, h, w, steps[k], ctx, len, pooled, y);
        CHECK(st == SD_OK, "%s call %d: %s", file, k, sd_last_error());
        if (st != SD_OK) continue;
        nhwc_to_nchw(y, got, batch, h, w, c);
        snprintf(what, sizeof what, "%s %s call %d (t=%.2f, %dx%dx%d)", model, run, k, steps[k],
                 batch, h, w);
        check_rel(what, got, outputs + k * per_call, per_call, 1e-5);
        double e = rel_l2(got, outputs + k * per_call, per_call);
        if (e > worst) worst = e;
    }
    free(ctx), free(pooled), free(x), free(y), free(got);
done:
    free(inputs), free(outputs), free(steps), free(pe), free(npe), free(pool), free(npool);
    return worst;
}

static void test_parity(const char *model, bool dual) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s", fixture(model));
    strncat(dir, "/pipeline/transformer", sizeof dir - strlen(dir) - 1);
    sd3_model *m = NULL;
    CHECK_OK(sd3_load(&m, dir, NULL));
    if (!m) return;
    const sd3_config *c = sd3_get_config(m);
    CHECK(c->inner_dim == 16 && c->num_layers == 2 && c->pos_embed_max_size == 24 &&
              c->dual_attention[0] == dual && !c->dual_attention[1] && c->qk_rms_norm == dual,
          "%s: config read as dim %d, %d layers, max %d, dual %d, qk %d", model, c->inner_dim,
          c->num_layers, c->pos_embed_max_size, c->dual_attention[0], c->qk_rms_norm);
    double worst = 0.0;
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        double e = check_run(m, model, runs[r]);
        if (e > worst) worst = e;
    }
    printf("%s: worst relative error over all calls %.3g\n", model, worst);
    sd3_free(m);
}

/* The checkpoint's pos_embed.pos_embed buffer is diffusers' table rounded to bf16: the computed
 * table must round to the same bits, and a crop must equal the same block of the full table. */
static void test_pos_table(void) {
    enum { D = 16, G = 24 };
    float *stored =
        fixture_tensor("sd3-tiny/pipeline/transformer/diffusion_pytorch_model.safetensors",
                       "pos_embed.pos_embed", NULL, NULL);
    float *full = malloc(sizeof(float) * G * G * D), *crop = malloc(sizeof(float) * 8 * 12 * D);
    if (!stored) goto done;
    dit_sincos_pos_embed_2d(D, G, G, 0, 0, G, G, 8.0, 1.0, full);
    int mismatched = 0;
    for (int i = 0; i < G * G * D; i++)
        if (st_bf16_to_f32(st_f32_to_bf16(full[i])) != stored[i]) mismatched++;
    CHECK(mismatched == 0, "%d of %d computed position values round to other bf16 values",
          mismatched, G * G * D);
    dit_sincos_pos_embed_2d(D, G, G, 8, 6, 8, 12, 8.0, 1.0, crop);
    int crop_bad = 0;
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 12; j++)
            if (memcmp(crop + (i * 12 + j) * D, full + ((8 + i) * G + 6 + j) * D,
                       sizeof(float) * D))
                crop_bad++;
    CHECK(crop_bad == 0, "%d cropped position rows differ from the full table", crop_bad);
done:
    free(stored), free(full), free(crop);
}

/* ---- error cases, on modified copies of sd3-tiny's transformer folder in a temporary dir ---- */

typedef struct {
    const char *drop;    /* tensor left out */
    const char *reshape; /* tensor written with half the rows and twice the columns */
} weights_edit;

static char tmpdir[64];

static sd_status write_text(const char *name, const char *text) {
    char *path = sd_path_join(tmpdir, name);
    sd_file_writer wr;
    sd_status st = sd_writer_open(&wr, path);
    if (st == SD_OK) {
        sd_writer_put(&wr, text, strlen(text));
        st = sd_writer_commit(&wr);
    }
    free(path);
    return st;
}

/* Writes tmpdir/diffusion_pytorch_model.safetensors from sd3-tiny's, edited. */
static sd_status write_weights(weights_edit e) {
    st_file f;
    SD_TRY(
        st_open(&f, fixture("sd3-tiny/pipeline/transformer/diffusion_pytorch_model.safetensors")));
    st_entry *ents = calloc((size_t)f.n_tensors, sizeof *ents);
    int n = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (e.drop && !strcmp(t->name, e.drop)) continue;
        st_entry *en = &ents[n++];
        en->name = t->name;
        en->dtype = t->dtype;
        en->ndim = t->ndim;
        memcpy(en->shape, t->shape, sizeof en->shape);
        en->data = t->data;
        if (e.reshape && !strcmp(t->name, e.reshape)) {
            /* same bytes, another shape: half the rows, twice the columns */
            en->shape[0] /= 2;
            en->shape[en->ndim - 1] *= 2;
        }
    }
    char *path = sd_path_join(tmpdir, "diffusion_pytorch_model.safetensors");
    sd_status st = st_write(path, ents, n, NULL, 0);
    free(path);
    free(ents);
    st_close(&f);
    return st;
}

static const char *base_config =
    "{\"_class_name\": \"SD3Transformer2DModel\", \"attention_head_dim\": 4, "
    "\"caption_projection_dim\": 16, \"dual_attention_layers\": [], \"in_channels\": 16, "
    "\"joint_attention_dim\": 48, \"num_attention_heads\": 4, \"num_layers\": 2, "
    "\"out_channels\": 16, \"patch_size\": 2, \"pooled_projection_dim\": 32, "
    "\"pos_embed_max_size\": 24, \"qk_norm\": null, \"sample_size\": 16}";

/* Loads tmpdir with sd3-tiny's config, `key` set to the JSON `value` (key NULL: unchanged); checks
 * the status and that the message names `needle`. */
static void expect_load(const char *what, const char *key, const char *value, sd_status want,
                        const char *needle) {
    cJSON *root = cJSON_Parse(base_config);
    if (key) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, key);
        cJSON_AddItemToObject(root, key, cJSON_Parse(value));
    }
    char *text = cJSON_Print(root);
    CHECK_OK(write_text("config.json", text));
    free(text);
    cJSON_Delete(root);
    sd3_model *m = NULL;
    sd_clear_error();
    sd_status st = sd3_load(&m, tmpdir, NULL);
    const char *msg = sd_last_error();
    CHECK(st == want, "%s: status %s, expected %s (%s)", what, sd_status_name(st),
          sd_status_name(want), msg);
    CHECK(!needle || strstr(msg, needle), "%s: message '%s' does not name '%s'", what, msg, needle);
    printf("%s -> %s: %s\n", what, sd_status_name(st), msg);
    if (st == SD_OK) sd3_free(m);
}

static void test_errors(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_sd3_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        CHECK(0, "mkdtemp failed");
        return;
    }
    CHECK_OK(write_weights((weights_edit){NULL, NULL}));
    expect_load("unedited copy", NULL, NULL, SD_OK, NULL);
    expect_load("qk_norm layer_norm_across_heads", "qk_norm", "\"layer_norm_across_heads\"",
                SD_ERR_UNSUPPORTED, "qk_norm");
    expect_load("unknown key", "use_rope", "true", SD_ERR_UNSUPPORTED, "use_rope");
    expect_load("other class", "_class_name", "\"FluxTransformer2DModel\"", SD_ERR_UNSUPPORTED,
                "_class_name");
    expect_load("caption width", "caption_projection_dim", "32", SD_ERR_CONFIG,
                "caption_projection_dim");
    expect_load("patch size 0", "patch_size", "0", SD_ERR_CONFIG, "patch_size");
    expect_load("string heads", "num_attention_heads", "\"4\"", SD_ERR_CONFIG,
                "num_attention_heads");
    /* qk_norm asks for norm_q etc., which sd3-tiny does not have */
    expect_load("qk norm weights absent", "qk_norm", "\"rms_norm\"", SD_ERR_TENSOR,
                "transformer_blocks.0.attn.norm_q.weight");
    expect_load("dual layer weights absent", "dual_attention_layers", "[1]", SD_ERR_TENSOR,
                "transformer_blocks.1.norm1.linear.weight");

    CHECK_OK(write_weights((weights_edit){"transformer_blocks.1.attn.add_k_proj.weight", NULL}));
    expect_load("missing tensor", NULL, NULL, SD_ERR_TENSOR,
                "transformer_blocks.1.attn.add_k_proj.weight");
    CHECK_OK(write_weights((weights_edit){NULL, "transformer_blocks.0.ff.net.2.weight"}));
    expect_load("wrong shape", NULL, NULL, SD_ERR_TENSOR, "transformer_blocks.0.ff.net.2.weight");
    CHECK_OK(write_weights((weights_edit){NULL, "pos_embed.pos_embed"}));
    expect_load("wrong position table shape", NULL, NULL, SD_ERR_TENSOR, "pos_embed.pos_embed");

    /* Bad forward arguments, and the computed table when the buffer is absent. */
    CHECK_OK(write_weights((weights_edit){"pos_embed.pos_embed", NULL}));
    CHECK_OK(write_text("config.json",
                        "{\"attention_head_dim\": 4, \"caption_projection_dim\": 16, "
                        "\"joint_attention_dim\": 48, \"num_attention_heads\": 4, "
                        "\"num_layers\": 2, \"pooled_projection_dim\": 32, "
                        "\"pos_embed_max_size\": 24, \"sample_size\": 16}"));
    sd3_model *m = NULL;
    CHECK_OK(sd3_load(&m, tmpdir, NULL));
    const char *file = "sd3-tiny/expected/flow_euler_nonsquare.safetensors";
    float *in = fixture_tensor(file, "model_inputs", NULL, NULL);
    float *want = fixture_tensor(file, "model_outputs", NULL, NULL);
    float *pe = fixture_tensor(file, "prompt_embeds", NULL, NULL);
    float *pool = fixture_tensor(file, "pooled_prompt_embeds", NULL, NULL);
    float *steps = fixture_tensor(file, "model_timesteps", NULL, NULL);
    if (m && in && want && pe && pool && steps) {
        enum { H = 16, W = 24, C = 16, N = H * W * C };
        float x[N], y[N], got[N];
        /* the cond half (item 1) of call 0 */
        nchw_to_nhwc(in + N, x, 1, C, H, W);
        CHECK(sd3_forward(m, x, 1, 15, W, steps[0], pe, 333, pool, y) == SD_ERR_ARG,
              "odd height accepted");
        CHECK(sd3_forward(m, x, 1, 50, 2, steps[0], pe, 333, pool, y) == SD_ERR_ARG,
              "25 patches accepted with pos_embed_max_size 24");
        CHECK(sd3_forward(m, x, 1, H, W, steps[0], pe, 0, pool, y) == SD_ERR_ARG,
              "empty context accepted");
        CHECK_OK(sd3_forward(m, x, 1, H, W, steps[0], pe, 333, pool, y));
        nhwc_to_nchw(y, got, 1, H, W, C);
        /* diffusers used the bf16 buffer; the float32 table differs by bf16 rounding only */
        double e = rel_l2(got, want + N, N);
        printf("computed position table: rel err %.3g against the run with the stored bf16 one\n",
               e);
        CHECK(e > 0 && e < 1e-2, "computed table: rel err %.3g", e);
    }
    free(in), free(want), free(pe), free(pool), free(steps);
    sd3_free(m);

    char *p = sd_path_join(tmpdir, "config.json");
    unlink(p);
    free(p);
    p = sd_path_join(tmpdir, "diffusion_pytorch_model.safetensors");
    unlink(p);
    free(p);
    rmdir(tmpdir);
}

int main(void) {
    test_pos_table();
    test_parity("sd3-tiny", false);
    test_parity("sd35-tiny", true);
    test_errors();
    return test_summary();
}

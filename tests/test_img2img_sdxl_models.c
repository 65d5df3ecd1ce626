/* SDXL image-to-image on model variants the recorded runs do not cover, built from sdxl-tiny in a
 * temporary folder (other components linked):
 *
 * - a refiner-like folder: StableDiffusionXLImg2ImgPipeline with requires_aesthetics_score, its
 *   UNet's add_embedding taking 5 time ids (projection_class_embeddings_input_dim 56, the first 56
 *   columns of linear_1 kept). diffusers' _get_add_time_ids then gives the cond half
 *   [orig_h, orig_w, crop_top, crop_left, aesthetic_score 6.0] and the uncond half the same with
 *   negative_aesthetic_score 2.5. White-box: the first UNet call is computed again here from the
 *   run's own input and embeddings with those ids written out, and must give the same output; with
 *   the two scores swapped it must not. Text-to-image on it is refused, by the library and by
 *   bin/gen (diffusers' text-to-image pipeline would build 6 ids and fail on the shape).
 * - a 9-channel inpainting UNet (conv_in widened, random weights, as
 *   diffusers/stable-diffusion-xl-1.0-inpainting-0.1 has 9 input channels): inpainting runs with
 *   finite output and diffusers' call count; without a mask it is refused.
 * - the configuration errors for requires_aesthetics_score set on a UNet made for 6 time ids, or
 *   not set on one made for 5: they name the flag, as diffusers' messages do. */
#include "../core/safetensors.h"
#include "../unet/unet.h"
#include "img2img_util.h"

static bool write_json(const char *path, cJSON *j) {
    char *text = cJSON_Print(j);
    FILE *fp = text ? fopen(path, "w") : NULL;
    bool ok = fp && fputs(text, fp) >= 0;
    if (fp) ok = fclose(fp) == 0 && ok;
    cJSON_free(text);
    return ok;
}

static cJSON *read_json(const char *rel) {
    char *text;
    if (sd_read_file(fixture(rel), &text, NULL) != SD_OK) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

/* sdxl-tiny as `name` with model_index class `cls`, requires_aesthetics_score `aesthetic` (and a
 * UNet for 5 time ids when `five_ids`), and a UNet of `in_channels` inputs. NULL on failure. */
static const char *make_model(const char *name, const char *cls, bool aesthetic, bool five_ids,
                              int in_channels) {
    const char *dir = tmp(name);
    char path[600], cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s/unet'", dir, dir);
    if (system(cmd) != 0) return NULL;
    const char *parts[] = {"tokenizer",      "tokenizer_2", "text_encoder",
                           "text_encoder_2", "vae",         "scheduler"};
    if (!fixture_link_parts("sdxl-tiny/pipeline", dir, parts, 6)) return NULL;
    cJSON *mi = read_json("sdxl-tiny/pipeline/model_index.json");
    cJSON *uc = read_json("sdxl-tiny/pipeline/unet/config.json");
    bool ok = mi && uc;
    if (ok) {
        cJSON_ReplaceItemInObject(mi, "_class_name", cJSON_CreateString(cls));
        cJSON_AddBoolToObject(mi, "requires_aesthetics_score", aesthetic);
        cJSON_ReplaceItemInObject(uc, "in_channels", cJSON_CreateNumber(in_channels));
        if (five_ids)
            cJSON_ReplaceItemInObject(uc, "projection_class_embeddings_input_dim",
                                      cJSON_CreateNumber(56));
        snprintf(path, sizeof path, "%s/model_index.json", dir);
        ok = write_json(path, mi);
        snprintf(path, sizeof path, "%s/unet/config.json", dir);
        ok = ok && write_json(path, uc);
    }
    cJSON_Delete(mi), cJSON_Delete(uc);
    st_file f;
    if (!ok ||
        st_open(&f, fixture("sdxl-tiny/pipeline/unet/diffusion_pytorch_model.safetensors")) !=
            SD_OK)
        return NULL;
    st_entry *es = calloc((size_t)f.n_tensors, sizeof *es);
    float *conv_in = NULL, *lin = NULL;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        es[i] = (st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(es[i].shape, t->shape, sizeof t->shape);
        if (!strcmp(t->name, "conv_in.weight") &&
            in_channels != t->shape[1]) { /* [out][in][3][3] */
            es[i].shape[1] = in_channels;
            size_t n = (size_t)t->shape[0] * in_channels * t->shape[2] * t->shape[3];
            conv_in = malloc(n * sizeof *conv_in);
            fill_random(conv_in, n, 919);
            for (size_t k = 0; k < n; k++) conv_in[k] *= 0.2f;
            es[i].dtype = ST_F32, es[i].data = conv_in;
        }
        if (!strcmp(t->name, "add_embedding.linear_1.weight") &&
            five_ids) { /* [64][64] -> [64][56] */
            const int64_t rows = t->shape[0], cols = t->shape[1];
            float *all = malloc((size_t)rows * cols * sizeof *all);
            lin = malloc((size_t)rows * 56 * sizeof *lin);
            st_to_f32(t, all);
            for (int64_t r = 0; r < rows; r++)
                memcpy(lin + r * 56, all + r * cols, 56 * sizeof *lin);
            free(all);
            es[i].shape[1] = 56, es[i].dtype = ST_F32, es[i].data = lin;
        }
    }
    snprintf(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    sd_status st = st_write(path, es, f.n_tensors, NULL, 0);
    st_close(&f);
    free(es), free(conv_in), free(lin);
    return st == SD_OK ? dir : NULL;
}

typedef struct {
    int h, w, c, tokens, dim, pdim;
    float *input0, *output0, *cond, *uncond, *pooled, *neg_pooled; /* NHWC, as sent */
    double t0;
} capture;

static int capture_event(void *user, const sd_event *ev) {
    capture *cp = user;
    const sd_tensor *t = &ev->tensor;
    size_t n = (size_t)t->batch * t->h * t->w * t->c;
    float **slot = NULL;
    const bool pooled = ev->total == 2 && ev->index == 1;
    if (ev->kind == SD_EVENT_PROMPT_EMBEDS && !pooled)
        slot = &cp->cond, cp->tokens = t->h, cp->dim = t->c;
    if (ev->kind == SD_EVENT_PROMPT_EMBEDS && pooled) slot = &cp->pooled, cp->pdim = t->c;
    if (ev->kind == SD_EVENT_NEGATIVE_EMBEDS) slot = pooled ? &cp->neg_pooled : &cp->uncond;
    if (ev->kind == SD_EVENT_MODEL_INPUT && !cp->input0) {
        slot = &cp->input0;
        cp->h = t->h, cp->w = t->w, cp->c = t->c, cp->t0 = ev->timestep;
    }
    if (ev->kind == SD_EVENT_MODEL_OUTPUT && !cp->output0) slot = &cp->output0;
    if (!slot || *slot) return 0;
    *slot = malloc(n * sizeof(float));
    memcpy(*slot, t->data, n * sizeof(float));
    return 0;
}

static void capture_free(capture *cp) {
    free(cp->input0), free(cp->output0), free(cp->cond), free(cp->uncond), free(cp->pooled);
    free(cp->neg_pooled);
}

/* The refiner's first call again with the time ids written out here (uncond, cond rows). */
static void aesthetic_call(const char *model, const capture *cp, int size) {
    char *dir = sd_path_join(model, "unet");
    unet *u = NULL;
    CHECK_OK(unet_load(&u, dir));
    free(dir);
    if (!u) return;
    const size_t emb = (size_t)cp->tokens * cp->dim, n = 2 * (size_t)cp->h * cp->w * cp->c;
    float *ctx = malloc(2 * emb * sizeof *ctx), *te = malloc(2 * (size_t)cp->pdim * sizeof *te);
    float *y = malloc(n * sizeof *y);
    memcpy(ctx, cp->uncond, emb * sizeof *ctx), memcpy(ctx + emb, cp->cond, emb * sizeof *ctx);
    memcpy(te, cp->neg_pooled, cp->pdim * sizeof *te),
        memcpy(te + cp->pdim, cp->pooled, cp->pdim * sizeof *te);
    for (int swapped = 0; swapped < 2; swapped++) {
        const float s = (float)size, neg = swapped ? 6.0f : 2.5f, pos = swapped ? 2.5f : 6.0f;
        const float ids[10] = {s, s, 0, 0, neg, s, s, 0, 0, pos};
        const unet_added_cond added = {te, ids, 5};
        CHECK_OK(unet_forward(u, cp->input0, 2, cp->h, cp->w, (float)cp->t0, ctx, cp->tokens,
                              &added, y));
        double e = rel_l2(y, cp->output0, n);
        if (!swapped) {
            printf("%s refiner time ids [%d, %d, 0, 0, 2.5 | 6.0]: call 0 output rel err %.2g\n",
                   e < 1e-6 ? "ok  " : "FAIL", size, size, e);
            CHECK(e < 1e-6,
                  "refiner time ids: the first call differs from the one with diffusers' "
                  "aesthetic ids (%g)",
                  e);
        } else {
            CHECK(e > 1e-4,
                  "refiner: swapping the aesthetic scores does not change the output (%g)", e);
        }
    }
    free(ctx), free(te), free(y);
    unet_free(u);
}

static void refiner(const sd_image *image) {
    const char *m = make_model("refiner", "StableDiffusionXLImg2ImgPipeline", true, true, 4);
    CHECK(m != NULL, "building the refiner-like model in %s", tmpdir);
    if (!m) return;
    char model[600];
    snprintf(model, sizeof model, "%s", m);
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, model, NULL));
    if (!p) return;
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a photo of an astronaut", g.negative_prompt = "blurry";
    g.seed = 5, g.steps = 4, g.strength = 0.5, g.init_image = image;
    capture cp = {0};
    g.on_event = capture_event, g.user = &cp;
    sd_result r;
    sd_status st = sd_generate(p, &g, &r);
    CHECK(st == SD_OK && r.model_calls == 2, "refiner img2img: %s",
          st == SD_OK ? "wrong call count" : sd_last_error());
    if (st == SD_OK) sd_result_free(&r);
    if (st == SD_OK && cp.input0 && cp.output0 && cp.uncond && cp.neg_pooled && cp.pooled)
        aesthetic_call(model, &cp, image->width);
    capture_free(&cp);
    g.init_image = NULL, g.strength = NAN, g.on_event = NULL;
    st = sd_generate(p, &g, &r);
    CHECK(st == SD_ERR_UNSUPPORTED && strstr(sd_last_error(), "requires_aesthetics_score"),
          "refiner text-to-image: %s", st == SD_OK ? "accepted" : sd_last_error());
    /* the same through bin/gen: one line of error, no image */
    const char *out = tmp("refiner.png");
    const char *args[] = {"-m", model, "-s", "5", "--steps", "4", "-o", out, "-q", "a photo", NULL};
    expect_error("gen text-to-image on a refiner", tool_run_args("gen", args), "requires_aesthetics_score");
    CHECK(access(out, F_OK) != 0, "gen text-to-image on a refiner wrote %s", out);
    sd_pipeline_free(p);
}

static void nine_channel(const sd_image *image, const sd_image *mask) {
    const char *m = make_model("inpaint9", "StableDiffusionXLInpaintPipeline", false, false, 9);
    CHECK(m != NULL, "building the 9-channel model in %s", tmpdir);
    if (!m) return;
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, m, NULL));
    if (!p) return;
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a red door", g.seed = 7, g.steps = 4, g.init_image = image, g.mask_image = mask;
    sd_result r;
    sd_status st = sd_generate(p, &g, &r);
    CHECK(st == SD_OK, "SDXL 9-channel inpainting: %s", sd_last_error());
    if (st == SD_OK) {
        size_t n = (size_t)r.latent_shape[1] * r.latent_shape[2] * r.latent_shape[3], finite = 0;
        for (size_t i = 0; i < n; i++) finite += isfinite(r.latents[i]);
        /* the default strength 0.9999: int(4 * 0.9999) = 3 steps */
        printf("%s SDXL 9-channel inpainting: %d calls, %zu of %zu latents finite\n",
               finite == n && r.model_calls == 3 ? "ok  " : "FAIL", r.model_calls, finite, n);
        CHECK(r.n_images == 1 && r.latent_shape[1] == 4 && finite == n && r.model_calls == 3,
              "SDXL 9-channel inpainting: %d images, %d channels, %zu/%zu finite, %d calls",
              r.n_images, r.latent_shape[1], finite, n, r.model_calls);
        sd_result_free(&r);
    }
    g.mask_image = NULL;
    st = sd_generate(p, &g, &r);
    CHECK(st != SD_OK && strstr(sd_last_error(), "needs a mask"),
          "SDXL 9-channel without a mask: %s", st == SD_OK ? "accepted" : sd_last_error());
    sd_pipeline_free(p);
}

/* requires_aesthetics_score against a UNet made for the other count of time ids, either way. */
static void config_errors(void) {
    const struct {
        const char *name;
        bool aesthetic, five_ids;
        const char *needle;
    } cases[] = {{"aesthetic6", true, false, "requires_aesthetics_score is set"},
                 {"refiner_noflag", false, true, "set requires_aesthetics_score: true"}};
    for (int i = 0; i < 2; i++) {
        const char *m = make_model(cases[i].name, "StableDiffusionXLImg2ImgPipeline",
                                   cases[i].aesthetic, cases[i].five_ids, 4);
        CHECK(m != NULL, "building the mis-configured model %s in %s", cases[i].name, tmpdir);
        if (!m) continue;
        sd_pipeline *p = NULL;
        sd_status st = sd_pipeline_load(&p, m, NULL);
        printf("     %s: %s\n", cases[i].name, sd_last_error());
        CHECK(st == SD_ERR_CONFIG && strstr(sd_last_error(), "time ids") &&
                  strstr(sd_last_error(), cases[i].needle),
              "%s: %s", cases[i].name, st == SD_OK ? "accepted" : sd_last_error());
        sd_pipeline_free(p);
    }
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-img2img-sdxl-models-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    sd_image image = {0}, mask = {0};
    CHECK_OK(image_read(fixture("sd15-tiny/expected/inpaint-image.png"), &image));
    CHECK_OK(image_read(fixture("sd15-tiny/expected/inpaint-mask_image.png"), &mask));
    if (image.rgb && mask.rgb) {
        refiner(&image);
        nine_channel(&image, &mask);
    }
    config_errors();
    image_free(&image), image_free(&mask);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}

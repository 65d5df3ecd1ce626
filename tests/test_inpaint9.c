/* A 9-channel inpainting UNet (as stable-diffusion-inpainting has): sd15-tiny's UNet with
 * conv_in widened to 9 input channels (random weights), written into a temporary copy of the
 * pipeline. diffusers makes no promise about the output of such a model, so the test checks that
 * generation runs with finite output of the right shape, and, white-box, that the UNet's input is
 * [scaled latents, mask, masked-image latents] on its channels: the first call is computed again
 * here from pieces built independently, and must give the same output. */
#include "../core/safetensors.h"
#include "../unet/unet.h"
#include "img2img_util.h"

static bool write_file(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    if (!fp) return false;
    fputs(text, fp);
    return fclose(fp) == 0;
}

/* sd15-tiny with its UNet's conv_in widened to 9 input channels (random weights), the other
 * components linked. Returns the folder, or NULL. */
static const char *make_inpaint_model(void) {
    const char *dir = tmp("inpaint9");
    char path[600], cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s/unet'", dir, dir);
    if (system(cmd) != 0) return NULL;
    const char *parts[] = {"tokenizer", "text_encoder", "vae", "scheduler"};
    if (!fixture_link_parts("sd15-tiny/pipeline", dir, parts, 4)) return NULL;
    char *text;
    if (sd_read_file(fixture("sd15-tiny/pipeline/model_index.json"), &text, NULL) != SD_OK) return NULL;
    cJSON *mi = cJSON_Parse(text);
    free(text);
    cJSON_ReplaceItemInObject(mi, "_class_name", cJSON_CreateString("StableDiffusionInpaintPipeline"));
    text = cJSON_Print(mi);
    snprintf(path, sizeof path, "%s/model_index.json", dir);
    bool ok = write_file(path, text);
    cJSON_free(text), cJSON_Delete(mi);
    if (!ok || sd_read_file(fixture("sd15-tiny/pipeline/unet/config.json"), &text, NULL) != SD_OK)
        return NULL;
    cJSON *uc = cJSON_Parse(text);
    free(text);
    cJSON_ReplaceItemInObject(uc, "in_channels", cJSON_CreateNumber(9));
    text = cJSON_Print(uc);
    snprintf(path, sizeof path, "%s/unet/config.json", dir);
    ok = write_file(path, text);
    cJSON_free(text), cJSON_Delete(uc);
    st_file f;
    if (!ok || st_open(&f, fixture("sd15-tiny/pipeline/unet/diffusion_pytorch_model.safetensors")) != SD_OK)
        return NULL;
    st_entry *es = calloc((size_t)f.n_tensors, sizeof *es);
    float *conv_in = NULL;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        es[i] = (st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(es[i].shape, t->shape, sizeof t->shape);
        if (!strcmp(t->name, "conv_in.weight")) { /* [out][in][3][3] */
            es[i].shape[1] = 9;
            size_t n = (size_t)t->shape[0] * 9 * t->shape[2] * t->shape[3];
            conv_in = malloc(n * sizeof *conv_in);
            fill_random(conv_in, n, 909);
            for (size_t k = 0; k < n; k++) conv_in[k] *= 0.2f;
            es[i].dtype = ST_F32;
            es[i].data = conv_in;
        }
    }
    snprintf(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    sd_status st = conv_in ? st_write(path, es, f.n_tensors, NULL, 0) : SD_ERR_TENSOR;
    st_close(&f);
    free(es), free(conv_in);
    return st == SD_OK ? dir : NULL;
}

typedef struct {
    int h, w, c, tokens, dim;
    float *input0, *output0, *cond, *uncond; /* call 0 and the prompt embeddings, NHWC */
    double t0;
} capture;

static int capture_event(void *user, const sd_event *ev) {
    capture *cp = user;
    const sd_tensor *t = &ev->tensor;
    size_t n = (size_t)t->batch * t->h * t->w * t->c;
    float **slot = NULL;
    if (ev->kind == SD_EVENT_PROMPT_EMBEDS) slot = &cp->cond, cp->tokens = t->h, cp->dim = t->c;
    if (ev->kind == SD_EVENT_NEGATIVE_EMBEDS) slot = &cp->uncond;
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

/* The first call of a 9-channel run again, with the UNet input built here from its pieces:
 * the run's (scaled) latents, the mask on the latent grid, and the masked image's latents drawn
 * after the noise (strength 1: the image itself is not encoded). Equal outputs mean the pieces
 * reach the UNet in diffusers' channel order; the same input with the mask and the masked latents
 * swapped shows that the comparison can tell. */
static void nine_channel_call(const char *model, const capture *cp, const img_run *ir, uint64_t seed) {
    const int h = cp->h, w = cp->w, c = cp->c, mb = 2, oc = 2 * c + 1;
    const size_t hw = (size_t)h * w, n1 = hw * c, W = (size_t)ir->image.width, H = (size_t)ir->image.height;
    vae *v = NULL;
    unet *u = NULL;
    char *dir = sd_path_join(model, "unet");
    CHECK_OK(vae_load(&v, fixture("sd15-tiny/pipeline/vae")));
    CHECK_OK(unet_load(&u, dir));
    if (!v || !u) goto out;
    float *img = malloc(W * H * 3 * sizeof *img), *mean = malloc(n1 * sizeof *mean);
    float *logvar = malloc(n1 * sizeof *logvar), *draw = malloc(n1 * sizeof *draw);
    float *masked = malloc(n1 * sizeof *masked), *mask = malloc(hw * sizeof *mask);
    float *x = malloc(mb * hw * oc * sizeof *x), *ctx = malloc((size_t)mb * cp->tokens * cp->dim * sizeof *ctx);
    float *y = malloc(mb * n1 * sizeof *y);
    for (size_t i = 0; i < W * H; i++) {
        bool keep = ir->mask.rgb[3 * i] / 255.0f < 0.5f;
        for (int k = 0; k < 3; k++) img[3 * i + k] = keep ? ir->image.rgb[3 * i + k] / 255.0f * 2 - 1 : 0;
    }
    CHECK_OK(vae_encode(v, img, 1, (int)H, (int)W, mean, logvar));
    sd_rng rng;
    rng_seed(&rng, seed);
    rng_randn(&rng, draw, n1); /* the noise (batch 1) */
    rng_randn(&rng, draw, n1);     /* the masked image's posterior sample */
    nchw_to_nhwc(draw, masked, 1, c, h, w);
    const float sf = vae_get_config(v)->scaling_factor;
    for (size_t i = 0; i < n1; i++) masked[i] = (mean[i] + expf(0.5f * logvar[i]) * masked[i]) * sf;
    for (int yy = 0; yy < h; yy++)
        for (int xx = 0; xx < w; xx++) mask[(size_t)yy * w + xx] = latent_kept(&ir->mask, yy, xx) ? 0.0f : 1.0f;
    memcpy(ctx, cp->uncond, (size_t)cp->tokens * cp->dim * sizeof *ctx);
    memcpy(ctx + (size_t)cp->tokens * cp->dim, cp->cond, (size_t)cp->tokens * cp->dim * sizeof *ctx);
    for (int swapped = 0; swapped < 2; swapped++) {
        for (int b = 0; b < mb; b++)
            for (size_t p = 0; p < hw; p++) {
                float *o = x + ((size_t)b * hw + p) * oc;
                memcpy(o, cp->input0 + ((size_t)b * hw + p) * c, c * sizeof *o);
                if (!swapped) {
                    o[c] = mask[p];
                    memcpy(o + c + 1, masked + p * c, c * sizeof *o);
                } else {
                    memcpy(o + c, masked + p * c, c * sizeof *o);
                    o[2 * c] = mask[p];
                }
            }
        CHECK_OK(unet_forward(u, x, mb, h, w, (float)cp->t0, ctx, cp->tokens, NULL, y));
        double e = rel_l2(cp->output0, y, mb * n1);
        if (!swapped) {
            printf("%s 9-channel UNet input [latents, mask, masked-image latents]: call 0 output "
                   "rel err %.2g against the input built here\n", e < 1e-6 ? "ok  " : "FAIL", e);
            CHECK(e < 1e-6, "9-channel model input differs from [latents, mask, masked latents]: %g", e);
        } else {
            CHECK(e > 1e-3, "the mask / masked-latents order does not change the output (%g)", e);
        }
    }
    free(img), free(mean), free(logvar), free(draw), free(masked), free(mask), free(x), free(ctx), free(y);
out:
    free(dir);
    if (v) vae_free(v);
    if (u) unet_free(u);
}

static void nine_channel(void) {
    const char *model = make_inpaint_model();
    CHECK(model != NULL, "building the 9-channel model in %s", tmpdir);
    if (!model) return;
    char dir[600];
    snprintf(dir, sizeof dir, "%s", model);
    sd_pipeline *p;
    CHECK_OK(sd_pipeline_load(&p, dir, NULL));
    if (!p) return;
    img_run ir;
    if (img_run_load(&ir, "inpaint")) {
        sd_gen_params g;
        sd_gen_params_init(&g);
        g.prompt = "a red door", g.negative_prompt = "blurry";
        g.seed = 21, g.steps = 3, g.guidance = 7.5;
        g.init_image = &ir.image, g.mask_image = &ir.mask;
        capture cp = {0};
        g.on_event = capture_event, g.user = &cp;
        sd_result r;
        sd_status st = sd_generate(p, &g, &r);
        CHECK(st == SD_OK, "9-channel inpainting: %s", sd_last_error());
        if (st == SD_OK) {
            size_t n = (size_t)r.latent_shape[1] * r.latent_shape[2] * r.latent_shape[3], finite = 0;
            for (size_t i = 0; i < n; i++) finite += isfinite(r.latents[i]);
            CHECK(r.n_images == 1 && r.images[0].width == 128 && r.images[0].height == 128 &&
                  r.latent_shape[1] == 4 && finite == n && cp.c == 4 &&
                  r.model_calls == expected_calls(NULL, g.steps, 1.0),
                  "9-channel inpainting: %d images %dx%d, latents [%d][%d][%d][%d] (%zu finite), "
                  "%d calls", r.n_images, r.images[0].width, r.images[0].height, r.latent_shape[0],
                  r.latent_shape[1], r.latent_shape[2], r.latent_shape[3], finite, r.model_calls);
            sd_result_free(&r);
            if (cp.input0 && cp.output0 && cp.cond && cp.uncond) nine_channel_call(dir, &cp, &ir, g.seed);
        }
        free(cp.input0), free(cp.output0), free(cp.cond), free(cp.uncond);
        /* strength < 1: the image is encoded too, and the schedule starts later */
        g.on_event = NULL, g.strength = 0.7, g.steps = 4;
        st = sd_generate(p, &g, &r);
        CHECK(st == SD_OK && r.model_calls == expected_calls(NULL, g.steps, g.strength),
              "9-channel inpainting at strength 0.7: %s",
              st == SD_OK ? "wrong call count" : sd_last_error());
        if (st == SD_OK) sd_result_free(&r);
        /* an inpainting UNet has nothing to work from without a mask (or an image) */
        g.strength = NAN, g.mask_image = NULL;
        st = sd_generate(p, &g, &r);
        CHECK(st != SD_OK && strstr(sd_last_error(), "needs a mask"), "9-channel without a mask: %s",
              st == SD_OK ? "accepted" : sd_last_error());
        g.init_image = NULL;
        st = sd_generate(p, &g, &r);
        CHECK(st != SD_OK && strstr(sd_last_error(), "init image and a mask"),
              "9-channel text-to-image: %s", st == SD_OK ? "accepted" : sd_last_error());
    }
    img_run_free(&ir);
    sd_pipeline_free(p);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-inpaint9-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    nine_channel();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}

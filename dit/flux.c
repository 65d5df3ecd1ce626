/* FluxTransformer2DModel: loading, the conditioning embedding and the forward pass. */
#include "flux.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/act.h"
#include "dit_common.h"
#include "flux_internal.h"

/* Bounds on call sizes, far above real use (4096 image + 512 text tokens at 2048x2048), so that
 * buffer sizes cannot overflow. */
enum { FLUX_MAX_TOKENS = 1 << 16, FLUX_MAX_BATCH = 64 };

sd_status flux_load(flux_model **out, const char *dir, const weights_policy *policy) {
    *out = NULL;
    flux_model *m = calloc(1, sizeof *m);
    if (!m) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    sd_arena_init(&m->scratch);
    sd_status st = flux_read_config(dir, &m->cfg);
    if (st == SD_OK) st = weights_open(&m->w, dir, "diffusion_pytorch_model", policy);
    if (st == SD_OK) {
        m->w.keep_stored = true; /* closed with the model; layers run through nn_linear_run */
        st = flux_load_blocks(m);
    }
    if (st != SD_OK) {
        flux_free(m);
        return sd_wrap_error(st, "loading Flux transformer");
    }
    *out = m;
    return SD_OK;
}

void flux_free(flux_model *m) {
    if (!m) return;
    flux_free_blocks(m);
    weights_close(&m->w);
    sd_arena_free(&m->scratch);
    free(m);
}

void flux_release(flux_model *m) {
    if (!m) return;
    sd_arena_free(&m->scratch);
    sd_arena_init(&m->scratch);
    weights_release(&m->w);
}

const flux_config *flux_get_config(const flux_model *m) {
    return &m->cfg;
}

static sd_status check_args(const flux_model *m, const float *x, int batch, int img_tokens,
                            const float *img_ids, const float *context, int txt_tokens,
                            const float *txt_ids, float guidance, const float *pooled,
                            const float *out) {
    if (!x || !img_ids || !context || !txt_ids || !pooled || !out)
        return sd_set_error(SD_ERR_ARG, "flux_forward: a required input or output is NULL");
    if (batch < 1 || batch > FLUX_MAX_BATCH)
        return sd_set_error(SD_ERR_ARG, "flux_forward: batch %d is out of range [1, %d]", batch,
                            FLUX_MAX_BATCH);
    if (img_tokens < 1 || txt_tokens < 0 || img_tokens + txt_tokens > FLUX_MAX_TOKENS)
        return sd_set_error(SD_ERR_ARG,
                            "flux_forward: %d image and %d text tokens (at least 1 image token, "
                            "at most %d in all)",
                            img_tokens, txt_tokens, FLUX_MAX_TOKENS);
    if (m->cfg.guidance_embeds && isnan(guidance))
        return sd_set_error(SD_ERR_ARG, "flux_forward: this model embeds the guidance scale "
                                        "(guidance_embeds) and needs one");
    return SD_OK;
}

/* Carves the pass's buffers from the scratch arena; false when out of memory. */
static bool alloc_acts(flux_model *m, flux_acts *a, int batch, int txt, int img) {
    const int dim = m->cfg.inner_dim, d = m->cfg.attention_head_dim;
    const size_t n = (size_t)txt + img, rows = (size_t)batch * n;
    sd_arena *s = &m->scratch;
    *a = (flux_acts){.batch = batch, .txt = txt, .img = img, .tokens = (int)n};
    a->h = sd_arena_floats(s, rows * dim);
    a->silu_temb = sd_arena_floats(s, (size_t)batch * dim);
    a->cond = sd_arena_floats(s, (size_t)batch * (256 + 2 * dim));
    a->mod = sd_arena_floats(s, (size_t)batch * 6 * dim);
    a->mod_c = sd_arena_floats(s, (size_t)batch * 6 * dim);
    a->norm = sd_arena_floats(s, rows * dim);
    a->q = sd_arena_floats(s, rows * dim);
    a->k = sd_arena_floats(s, rows * dim);
    a->v = sd_arena_floats(s, rows * dim);
    a->attn = sd_arena_floats(s, rows * dim);
    a->tmp = sd_arena_floats(s, rows * dim);
    a->wide = sd_arena_floats(s, rows * 5 * dim);
    a->rope_cos = sd_arena_floats(s, n * d);
    a->rope_sin = sd_arena_floats(s, n * d);
    return a->h && a->silu_temb && a->cond && a->mod && a->mod_c && a->norm && a->q && a->k &&
           a->v && a->attn && a->tmp && a->wide && a->rope_cos && a->rope_sin;
}

/* Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0) for value t: [cos | sin]. */
static void timestep_proj(float t, float *out256) {
    dit_timestep_embedding(t, 256, true, 0.0f, 1.0f, 10000.0f, out256);
}

/* silu(conditioning) [B][D]: the timestep (and guidance) embeddings plus the pooled text
 * projection (CombinedTimestep[Guidance]TextProjEmbeddings), in diffusers' order of sums. */
static void conditioning(flux_model *m, const flux_acts *a, float timestep, float guidance,
                         const float *pooled) {
    const flux_config *c = &m->cfg;
    const int dim = c->inner_dim, nb = a->batch;
    float *proj = a->cond, *hid = proj + (size_t)nb * 256, *emb = hid + (size_t)nb * dim;
    float *temb = a->silu_temb;
    /* The pipeline passes t / 1000 and the model multiplies back in float32, as torch does. */
    const float t = timestep * 1000.0f;
    for (int b = 0; b < nb; b++) timestep_proj(t, proj + (size_t)b * 256);
    nn_linear_forward(&m->time_1, proj, hid, nb);
    act_silu(hid, (size_t)nb * dim);
    nn_linear_forward(&m->time_2, hid, temb, nb);
    if (c->guidance_embeds) {
        const float g = guidance * 1000.0f;
        for (int b = 0; b < nb; b++) timestep_proj(g, proj + (size_t)b * 256);
        nn_linear_forward(&m->guidance_1, proj, hid, nb);
        act_silu(hid, (size_t)nb * dim);
        nn_linear_forward(&m->guidance_2, hid, emb, nb);
        for (size_t i = 0; i < (size_t)nb * dim; i++) temb[i] += emb[i];
    }
    nn_linear_forward(&m->text_1, pooled, hid, nb);
    act_silu(hid, (size_t)nb * dim);
    nn_linear_forward(&m->text_2, hid, emb, nb);
    for (size_t i = 0; i < (size_t)nb * dim; i++) temb[i] += emb[i];
    /* Every consumer (block modulations, norm_out) applies SiLU first. */
    act_silu(temb, (size_t)nb * dim);
}

sd_status flux_forward(flux_model *m, const float *x, int batch, int img_tokens,
                       const float *img_ids, const float *context, int txt_tokens,
                       const float *txt_ids, float timestep, float guidance, const float *pooled,
                       float *out) {
    SD_TRY(check_args(m, x, batch, img_tokens, img_ids, context, txt_tokens, txt_ids, guidance,
                      pooled, out));
    const flux_config *c = &m->cfg;
    const int dim = c->inner_dim, nt = txt_tokens, ni = img_tokens;
    flux_acts a;
    if (!alloc_acts(m, &a, batch, nt, ni)) {
        sd_arena_reset(&m->scratch);
        return sd_set_error(SD_ERR_NOMEM, "flux_forward: out of memory for %d x %d tokens", batch,
                            nt + ni);
    }
    const long bs = (long)a.tokens * dim, io = (long)nt * dim;

    conditioning(m, &a, timestep, guidance, pooled);
    nn_linear_run(&m->context_embedder, context, c->joint_attention_dim,
                  (long)nt * c->joint_attention_dim, a.h, dim, bs, nt, batch, false);
    nn_linear_run(&m->x_embedder, x, c->in_channels, (long)ni * c->in_channels, a.h + io, dim, bs,
                  ni, batch, false);

    /* Rotary angles of the joint sequence: ids = cat(txt_ids, img_ids). */
    const int d = c->attention_head_dim;
    flux_rope_table(c->axes_dims_rope, txt_ids, nt, a.rope_cos, a.rope_sin);
    flux_rope_table(c->axes_dims_rope, img_ids, ni, a.rope_cos + (size_t)nt * d,
                    a.rope_sin + (size_t)nt * d);

    for (int i = 0; i < c->num_layers; i++) flux_double_block_forward(m, &m->blocks[i], &a);
    for (int i = 0; i < c->num_single_layers; i++)
        flux_single_block_forward(m, &m->single_blocks[i], &a);

    /* norm_out (AdaLayerNormContinuous): scale first, then shift, on the image rows only. */
    nn_linear_forward(&m->norm_out, a.silu_temb, a.mod, batch);
    for (int b = 0; b < batch; b++) {
        const float *mb = a.mod + (long)b * 2 * dim;
        flux_modulate(a.h + b * bs + io, a.norm + b * bs + io, ni, dim, mb + dim, mb);
    }
    nn_linear_run(&m->proj_out, a.norm + io, dim, bs, out, c->out_channels,
                  (long)ni * c->out_channels, ni, batch, false);
    sd_arena_reset(&m->scratch);
    return SD_OK;
}

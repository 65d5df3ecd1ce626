/* AutoencoderKL: config, loading, latent scaling, and the batch-level decode / encode calls (which
 * add post_quant_conv / quant_conv and the posterior split around the decoder and encoder). */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "vae_internal.h"

/* Every down/up block type must be the plain one: the Attn* variants and the SpatialNorm decoder
 * (MoVQ) are other models. A list absent from config.json takes diffusers' one-entry default. */
static sd_status check_block_types(sd_cfg *c, const char *key, const char *want, int n_blocks) {
    const char *types[VAE_MAX_BLOCKS + 1];
    int n = cfg_str_list(c, key, types, VAE_MAX_BLOCKS + 1);
    if (cfg_status(c) != SD_OK) return cfg_status(c);
    if (n < 0) {
        types[0] = want;
        n = 1;
    }
    if (n != n_blocks)
        return sd_set_error(SD_ERR_CONFIG, "%s: '%s' has %d entries but 'block_out_channels' has %d",
                            c->path, key, n, n_blocks);
    for (int i = 0; i < n; i++)
        if (strcmp(types[i], want) != 0)
            return sd_set_error(SD_ERR_UNSUPPORTED, "%s: '%s' entry %d is '%s'; only '%s' is supported",
                                c->path, key, i, types[i], want);
    return SD_OK;
}

static sd_status read_config(vae_config *v, const char *path) {
    sd_cfg c;
    SD_TRY(cfg_open(&c, path));
    memset(v, 0, sizeof *v);
    v->in_channels = cfg_int(&c, "in_channels", 3);
    v->out_channels = cfg_int(&c, "out_channels", 3);
    v->latent_channels = cfg_int(&c, "latent_channels", 4);
    v->n_blocks = cfg_int_list(&c, "block_out_channels", v->block_out_channels, VAE_MAX_BLOCKS);
    if (v->n_blocks < 0 && !cfg_has(&c, "block_out_channels")) {
        v->n_blocks = 1;
        v->block_out_channels[0] = 64;
    }
    v->layers_per_block = cfg_int(&c, "layers_per_block", 1);
    v->norm_num_groups = cfg_int(&c, "norm_num_groups", 32);
    v->scaling_factor = (float)cfg_num(&c, "scaling_factor", 0.18215);
    v->has_shift_factor = cfg_has(&c, "shift_factor");
    v->shift_factor = (float)cfg_num(&c, "shift_factor", 0.0);
    v->use_quant_conv = cfg_bool(&c, "use_quant_conv", true);
    v->use_post_quant_conv = cfg_bool(&c, "use_post_quant_conv", true);
    v->mid_block_add_attention = cfg_bool(&c, "mid_block_add_attention", true);
    v->force_upcast = cfg_bool(&c, "force_upcast", true);
    const char *act = cfg_str(&c, "act_fn", "silu");
    sd_status st = cfg_status(&c);
    if (st == SD_OK && (v->n_blocks < 1 || v->n_blocks > VAE_MAX_BLOCKS))
        st = sd_set_error(SD_ERR_CONFIG, "%s: 'block_out_channels' has %d entries (1 to %d supported)",
                          path, v->n_blocks, VAE_MAX_BLOCKS);
    for (int i = 0; st == SD_OK && i < v->n_blocks; i++)
        if (v->block_out_channels[i] < 1)
            st = sd_set_error(SD_ERR_CONFIG, "%s: 'block_out_channels' entry %d is %d", path, i,
                              v->block_out_channels[i]);
    if (st == SD_OK && (v->in_channels < 1 || v->out_channels < 1 || v->latent_channels < 1))
        st = sd_set_error(SD_ERR_CONFIG, "%s: in/out/latent channels must be positive (%d, %d, %d)",
                          path, v->in_channels, v->out_channels, v->latent_channels);
    if (st == SD_OK && v->layers_per_block < 1)
        st = sd_set_error(SD_ERR_CONFIG, "%s: 'layers_per_block' is %d", path, v->layers_per_block);
    if (st == SD_OK && v->norm_num_groups < 1)
        st = sd_set_error(SD_ERR_CONFIG, "%s: 'norm_num_groups' is %d", path, v->norm_num_groups);
    if (st == SD_OK && !(isfinite(v->scaling_factor) && v->scaling_factor != 0.0f))
        st = sd_set_error(SD_ERR_CONFIG, "%s: 'scaling_factor' is %g", path, v->scaling_factor);
    if (st == SD_OK && strcmp(act, "silu") != 0 && strcmp(act, "swish") != 0)
        st = sd_set_error(SD_ERR_UNSUPPORTED, "%s: 'act_fn' is '%s'; only 'silu' is supported", path, act);
    if (st == SD_OK) st = check_block_types(&c, "down_block_types", "DownEncoderBlock2D", v->n_blocks);
    if (st == SD_OK) st = check_block_types(&c, "up_block_types", "UpDecoderBlock2D", v->n_blocks);
    cfg_close(&c);
    return st;
}

sd_status vae_load(vae **out, const char *dir, const weights_policy *policy) {
    return vae_load_opt(out, dir, true, policy);
}

sd_status vae_load_opt(vae **out, const char *dir, bool with_encoder,
                       const weights_policy *policy) {
    *out = NULL;
    vae *m = calloc(1, sizeof *m);
    char *path = sd_path_join(dir, "config.json");
    if (!m || !path) {
        free(m);
        free(path);
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", dir);
    }
    sd_arena_init(&m->arena);
    sd_status st = read_config(&m->cfg, path);
    free(path);
    if (st != SD_OK) {
        free(m);
        return st;
    }
    st = weights_open(&m->w, dir, "diffusion_pytorch_model", policy);
    if (st != SD_OK) {
        free(m);
        return st;
    }
    m->w.keep_stored = true;
    sd_weights *const w = &m->w;
    const vae_config *c = &m->cfg;
    const int l = c->latent_channels;
    st = vae_decoder_load(&m->dec, w, c);
    m->has_encoder = with_encoder;
    if (st == SD_OK && with_encoder) st = vae_encoder_load(&m->enc, w, c);
    m->has_quant = with_encoder && c->use_quant_conv; /* quant_conv only follows the encoder */
    m->has_post_quant = c->use_post_quant_conv;
    if (st == SD_OK && m->has_quant)
        st = nn_conv2d_load(&m->quant_conv, w, 2 * l, 2 * l, 1, 1, 0, "quant_conv");
    if (st == SD_OK && m->has_post_quant)
        st = nn_conv2d_load(&m->post_quant_conv, w, l, l, 1, 1, 0, "post_quant_conv");
    if (st != SD_OK) {
        vae_free(m);
        return st;
    }
    *out = m;
    return SD_OK;
}

void vae_release(vae *m) {
    if (!m) return;
    sd_arena_free(&m->arena);
    sd_arena_init(&m->arena);
    weights_release(&m->w);
}

void vae_free(vae *m) {
    if (!m) return;
    vae_decoder_free(&m->dec);
    vae_encoder_free(&m->enc);
    nn_conv2d_free(&m->quant_conv);
    nn_conv2d_free(&m->post_quant_conv);
    weights_close(&m->w);
    sd_arena_free(&m->arena);
    free(m);
}

const vae_config *vae_get_config(const vae *m) { return &m->cfg; }

int vae_scale_factor(const vae *m) { return 1 << (m->cfg.n_blocks - 1); }

void vae_unscale_latents(const vae *m, const float *in, float *out, size_t n) {
    const float sf = m->cfg.scaling_factor, shift = m->cfg.shift_factor;
    if (m->cfg.has_shift_factor)
        for (size_t i = 0; i < n; i++) out[i] = in[i] / sf + shift;
    else
        for (size_t i = 0; i < n; i++) out[i] = in[i] / sf;
}

void vae_scale_latents(const vae *m, const float *in, float *out, size_t n) {
    const float sf = m->cfg.scaling_factor, shift = m->cfg.shift_factor;
    if (m->cfg.has_shift_factor)
        for (size_t i = 0; i < n; i++) out[i] = (in[i] - shift) * sf;
    else
        for (size_t i = 0; i < n; i++) out[i] = in[i] * sf;
}

/* Room left above the region for kernel temporaries (attention's packed keys and values, at most
 * 32 MB, and its per-thread tiles), so that even the first pass at a new size does not spill into
 * extra arena blocks. With less (16 MB, 0.6 MB short at 512x512) the first decode spilled, the
 * arena was consolidated into a fresh block, and the second decode page-faulted through all of its
 * 528 MB again (135k faults, about 6% of that decode). */
enum { KERNEL_SLACK_FLOATS = 10 << 20 };

size_t vae_region_bytes(size_t floats) { return (floats + KERNEL_SLACK_FLOATS) * sizeof(float); }

sd_status vae_take_region(vae *m, vae_act *a, size_t floats, const char *what) {
    /* A region is taken at the start of a pass, with the arena empty. When the arena's block is
     * too small for it (an encode before a decode of the same image, a larger size than the last
     * call), drop that block first: the arena would add a new one beside it, and the old block's
     * touched pages would stay resident through the pass for nothing. */
    if (m->arena.used_total == 0 && m->arena.high_water < vae_region_bytes(floats))
        sd_arena_free(&m->arena);
    sd_arena_mark mark = sd_arena_get_mark(&m->arena);
    float *p = sd_arena_floats(&m->arena, floats + KERNEL_SLACK_FLOATS);
    if (!p) {
        sd_arena_reset(&m->arena);
        return sd_set_error(SD_ERR_NOMEM, "vae %s: out of memory for %zu MB of activations", what,
                            (floats + KERNEL_SLACK_FLOATS) * sizeof(float) >> 20);
    }
    sd_arena_release(&m->arena, mark);
    vae_act_init(a, sd_arena_floats(&m->arena, floats), floats, &m->arena);
    return SD_OK;
}

/* Sizes the activations may reach: pixel counts must fit the int arithmetic of the kernels. */
static sd_status check_size(const vae *m, int n, int h, int w, const char *what) {
    const long f = vae_scale_factor(m);
    if (n < 1 || h < 1 || w < 1 || (long)h * f * w * f > INT_MAX / 4)
        return sd_set_error(SD_ERR_ARG, "vae %s: impossible size %d x %d x %d", what, n, h, w);
    return SD_OK;
}

sd_status vae_decode(vae *m, const float *z, int n, int h, int w, float *image) {
    SD_TRY(check_size(m, n, h, w, "decode"));
    const vae_config *c = &m->cfg;
    const int f = vae_scale_factor(m);
    const size_t in_floats = (size_t)h * w * c->latent_channels;
    const size_t out_floats = (size_t)h * f * w * f * c->out_channels;
    vae_act a;
    SD_TRY(vae_take_region(m, &a, vae_decoder_region_floats(&m->dec, c, h, w), "decode"));
    for (int i = 0; i < n; i++) {
        vae_act_init(&a, a.base, a.cap, a.scratch);
        const float *zi = z + i * in_floats;
        if (m->has_post_quant) {
            float *pq = vae_act_far(&a, in_floats);
            nn_conv2d_forward(&m->post_quant_conv, zi, 1, h, w, pq, a.scratch);
            vae_act_set(&a, pq, in_floats);
            zi = pq;
        }
        vae_decoder_forward(&m->dec, &a, zi, h, w, image + i * out_floats);
    }
    sd_arena_reset(&m->arena);
    return SD_OK;
}

sd_status vae_encode(vae *m, const float *image, int n, int h, int w, float *mean, float *logvar) {
    if (!m->has_encoder)
        return sd_set_error(SD_ERR_ARG, "vae encode: this vae was loaded without its encoder");
    const int f = vae_scale_factor(m);
    if (h < f || w < f || h % f || w % f)
        return sd_set_error(SD_ERR_ARG, "vae encode: image size %d x %d is not a multiple of %d", w,
                            h, f);
    SD_TRY(check_size(m, n, h / f, w / f, "encode"));
    const vae_config *c = &m->cfg;
    const int l = c->latent_channels, hw = (h / f) * (w / f);
    const size_t in_floats = (size_t)h * w * c->in_channels;
    vae_act a;
    SD_TRY(vae_take_region(m, &a, vae_encoder_region_floats(&m->enc, c, h, w), "encode"));
    for (int i = 0; i < n; i++) {
        vae_act_init(&a, a.base, a.cap, a.scratch);
        vae_encoder_forward(&m->enc, &a, image + i * in_floats, h, w);
        if (m->has_quant) vae_conv_forward(&m->quant_conv, &a, h / f, w / f);
        /* DiagonalGaussianDistribution: the first L channels are the mean, the next L the log
         * variance, clamped to [-30, 20]. */
        vae_moments_split(a.x, (size_t)hw, l, mean + (size_t)i * hw * l, logvar + (size_t)i * hw * l);
    }
    sd_arena_reset(&m->arena);
    return SD_OK;
}

/* Timestep embeddings: the sinusoidal projection (diffusers' get_timestep_embedding) and the
 * TimestepEmbedding MLP that turns it into the vector every ResNet block receives. */
#include <math.h>
#include <string.h>

#include "../kernels/act.h"
#include "unet_internal.h"

sd_status unet_nomem(void) {
    return sd_set_error(SD_ERR_NOMEM, "unet: out of scratch memory");
}

void unet_timestep_embedding(float t, int dim, bool flip_sin_to_cos, int freq_shift, float *out) {
    const int half = dim / 2;
    /* torch computes, all in float32: exponent = arange(half) * float(-ln 10000), then
     * exponent / (half - shift), exp, then t * freq. Each step is rounded to float here too (ISO C
     * mode: no contraction into fused multiply-adds), so a timestep like 999 or 500.5 gives the
     * same arguments to sin/cos as diffusers. */
    const float neg_log_period = (float)-log(10000.0);
    const float denom = (float)(half - freq_shift);
    for (int i = 0; i < half; i++) {
        float exponent = (float)i * neg_log_period;
        exponent = exponent / denom;
        float arg = t * expf(exponent);
        float s = sinf(arg), c = cosf(arg);
        /* cat(sin, cos), or cat(cos, sin) when flipped */
        out[flip_sin_to_cos ? half + i : i] = s;
        out[flip_sin_to_cos ? i : half + i] = c;
    }
}

sd_status unet_time_mlp_load(unet_time_mlp *e, const sd_weights *w, int in, int out,
                             const char *prefix) {
    memset(e, 0, sizeof *e);
    sd_status st = nn_linear_load(&e->linear_1, w, in, out, true, "%s.linear_1", prefix);
    if (st == SD_OK) st = nn_linear_load(&e->linear_2, w, out, out, true, "%s.linear_2", prefix);
    if (st == SD_OK) st = nn_linear_pack(&e->linear_1);
    if (st == SD_OK) st = nn_linear_pack(&e->linear_2);
    if (st != SD_OK) unet_time_mlp_free(e);
    return st;
}

sd_status unet_time_mlp_forward(const unet_time_mlp *e, const float *x, float *y, int rows,
                                sd_arena *a) {
    sd_arena_mark mark = sd_arena_get_mark(a);
    float *hidden = sd_arena_floats(a, (size_t)rows * e->linear_1.out);
    if (!hidden) return unet_nomem();
    nn_linear_forward(&e->linear_1, x, hidden, rows);
    act_silu(hidden, (size_t)rows * e->linear_1.out);
    nn_linear_forward(&e->linear_2, hidden, y, rows);
    sd_arena_release(a, mark);
    return SD_OK;
}

void unet_time_mlp_free(unet_time_mlp *e) {
    nn_linear_free(&e->linear_1);
    nn_linear_free(&e->linear_2);
}

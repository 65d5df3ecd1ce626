/* The activations on the vec_*.h primitives: included by isa_*.c after a vec header, vec_math.h
 * and a KERN_NAME(name) definition, once per instruction set. */
#include "act_internal.h"

VEC_FN vf KERN_NAME(act_one)(const act_kind kind, vf v) {
    switch (kind) {
    case ACT_SILU: return v_sigmoid_times(v, v_set1(1.0f));
    case ACT_QUICK_GELU: return v_sigmoid_times(v, v_set1(1.702f));
    case ACT_GELU: return v_gelu(v);
    default: return v_gelu_tanh(v);
    }
}

/* One activation over x[0..n), the kind fixed where this is inlined so the loop has no branch:
 * whole vectors, then one masked tail (norm_body.h says why). */
VEC_FN void KERN_NAME(act_loop)(const act_kind kind, float *x, size_t n) {
    size_t i = 0;
    for (; i + VEC_W <= n; i += VEC_W) v_store(x + i, KERN_NAME(act_one)(kind, v_load(x + i)));
    if (i < n) {
        const int left = (int)(n - i);
        v_store_n(x + i, KERN_NAME(act_one)(kind, v_load_n(x + i, left)), left);
    }
}

VEC_TARGET static void KERN_NAME(act_apply)(act_kind kind, float *x, size_t n) {
    switch (kind) {
    case ACT_SILU: KERN_NAME(act_loop)(ACT_SILU, x, n); break;
    case ACT_QUICK_GELU: KERN_NAME(act_loop)(ACT_QUICK_GELU, x, n); break;
    case ACT_GELU: KERN_NAME(act_loop)(ACT_GELU, x, n); break;
    default: KERN_NAME(act_loop)(ACT_GELU_TANH, x, n); break;
    }
}

VEC_TARGET static void KERN_NAME(act_geglu_row)(const float *in, float *out, int d) {
    int i = 0;
    for (; i + VEC_W <= d; i += VEC_W)
        v_store(out + i, v_mul(v_load(in + i), v_gelu(v_load(in + d + i))));
    if (i < d) {
        const int left = d - i;
        v_store_n(out + i, v_mul(v_load_n(in + i, left), v_gelu(v_load_n(in + d + i, left))), left);
    }
}

const act_kernels *KERN_NAME(act_kernels)(void) {
    static const act_kernels k = {KERN_NAME(act_apply), KERN_NAME(act_geglu_row)};
    return &k;
}

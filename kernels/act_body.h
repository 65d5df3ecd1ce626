/* The activations on the vec_*.h primitives: included by isa_*.c after a vec header, vec_math.h
 * and a KERN_NAME(name) definition, once per instruction set. */
#include "act_internal.h"

/* One activation over x[0..n), the kind fixed where this is inlined so the loop has no branch. */
VEC_FN void KERN_NAME(act_loop)(const act_kind kind, float *x, size_t n) {
    for (size_t i = 0; i < n; i += VEC_W) {
        const int left = n - i < VEC_W ? (int)(n - i) : VEC_W;
        const vf v = left == VEC_W ? v_load(x + i) : v_load_n(x + i, left);
        vf y;
        switch (kind) {
        case ACT_SILU: y = v_sigmoid_times(v, v_set1(1.0f)); break;
        case ACT_QUICK_GELU: y = v_sigmoid_times(v, v_set1(1.702f)); break;
        case ACT_GELU: y = v_gelu(v); break;
        default: y = v_gelu_tanh(v); break;
        }
        if (left == VEC_W) v_store(x + i, y);
        else v_store_n(x + i, y, left);
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
    for (int i = 0; i < d; i += VEC_W) {
        const int left = d - i < VEC_W ? d - i : VEC_W;
        const vf v = v_load_n(in + i, left), g = v_load_n(in + d + i, left);
        v_store_n(out + i, v_mul(v, v_gelu(g)), left);
    }
}

const act_kernels *KERN_NAME(act_kernels)(void) {
    static const act_kernels k = {KERN_NAME(act_apply), KERN_NAME(act_geglu_row)};
    return &k;
}

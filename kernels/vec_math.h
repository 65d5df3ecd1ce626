/* Functions on the vec_*.h primitives (include after one of them; not a public header). Written
 * once for every instruction set, so exp and the activations round the same everywhere; no libm
 * call, whose results may differ between libraries and CPUs. */
#ifndef SD_VEC_MATH_H
#define SD_VEC_MATH_H

/* e^x to about 1 ulp (Cephes' expf polynomial on x - n ln 2, scaled by 2^n). Arguments below -87
 * (and -inf) give exactly 0 rather than a subnormal: subnormal operands make later FMAs take slow
 * microcode paths (a peaked softmax has many such terms), and e^-87 ~ 1.6e-38 is below anything
 * they could add. Above 88.7 the argument is clamped (e^88.7 ~ 3.3e38, near FLT_MAX). */
VEC_FN vf v_exp(vf x) {
    const vm normal = v_ge(x, v_set1(-87.0f));
    x = v_max(x, v_set1(-87.0f));
    x = v_min(x, v_set1(88.7f));
    const vf n = v_round(v_mul(x, v_set1(1.44269504088896341f)));
    vf r = v_fnmadd(n, v_set1(0.693359375f), x);
    r = v_fnmadd(n, v_set1(-2.12194440e-4f), r);
    vf p = v_set1(1.9875691500e-4f);
    p = v_fmadd(p, r, v_set1(1.3981999507e-3f));
    p = v_fmadd(p, r, v_set1(8.3334519073e-3f));
    p = v_fmadd(p, r, v_set1(4.1665795894e-2f));
    p = v_fmadd(p, r, v_set1(1.6666665459e-1f));
    p = v_fmadd(p, r, v_set1(5.0000001201e-1f));
    p = v_fmadd(p, v_mul(r, r), v_add(r, v_set1(1.0f)));
    return v_select(normal, v_scale2(p, n), v_zero());
}

/* x / (1 + e^(-k x)): SiLU with k = 1, quick GELU with k = 1.702. */
VEC_FN vf v_sigmoid_times(vf x, vf k) {
    const vf e = v_exp(v_mul(v_sub(v_zero(), k), x));
    return v_div(x, v_add(v_set1(1.0f), e));
}

/* x / (1 + e^-x) with the negation as a subtraction from 0 (the group norm's fused SiLU). */
VEC_FN vf v_silu(vf x) { return v_div(x, v_add(v_set1(1.0f), v_exp(v_sub(v_zero(), x)))); }

/* Exact GELU through erfc (Numerical Recipes' Chebyshev fit, fractional error below 1.2e-7
 * everywhere) so that both tails keep their relative precision:
 * gelu(x) = x (1 - erfc(x / sqrt 2) / 2) for x >= 0 and x erfc(-x / sqrt 2) / 2 below. */
VEC_FN vf v_gelu(vf x) {
    const vf u = v_mul(x, v_set1(0.70710678118654752f));
    const vf z = v_abs(u);
    const vf t = v_div(v_set1(1.0f), v_fmadd(z, v_set1(0.5f), v_set1(1.0f)));
    vf p = v_set1(0.17087277f);
    p = v_fmadd(p, t, v_set1(-0.82215223f));
    p = v_fmadd(p, t, v_set1(1.48851587f));
    p = v_fmadd(p, t, v_set1(-1.13520398f));
    p = v_fmadd(p, t, v_set1(0.27886807f));
    p = v_fmadd(p, t, v_set1(-0.18628806f));
    p = v_fmadd(p, t, v_set1(0.09678418f));
    p = v_fmadd(p, t, v_set1(0.37409196f));
    p = v_fmadd(p, t, v_set1(1.00002368f));
    p = v_fmadd(p, t, v_set1(-1.26551223f));
    p = v_fnmadd(z, z, p); /* -z^2 + ... */
    const vf half_erfc = v_mul(v_mul(t, v_exp(p)), v_set1(0.5f));
    const vf f = v_select(v_lt(u, v_zero()), half_erfc, v_sub(v_set1(1.0f), half_erfc));
    return v_mul(x, f);
}

/* x / (1 + e^(-2y)), y = sqrt(2/pi) (x + 0.044715 x^3): 0.5 x (1 + tanh y) without cancellation. */
VEC_FN vf v_gelu_tanh(vf x) {
    const vf x3 = v_mul(v_mul(x, x), x);
    const vf y = v_mul(v_fmadd(x3, v_set1(0.044715f), x), v_set1(0.7978845608028654f));
    const vf e = v_exp(v_mul(y, v_set1(-2.0f)));
    return v_div(x, v_add(v_set1(1.0f), e));
}

#endif

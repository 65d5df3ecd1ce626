/* --weights-dtype q8_0|q4_0|q4_k|q5_k|q6_k: which Linear weights a 16/32-bit release quantizes at
 * load, and the quantization itself (core/gguf_quantize.c's reference quantizers). The rest of
 * the model is held at 16 bits: see weights.h and the README's GGUF section. */
#include "weights.h"

#include <stdlib.h>
#include <string.h>

#include "gguf_quant.h"
#include "gguf_quantize.h"

bool weights_dtype_quantizes(weights_dtype d) { return d >= WEIGHTS_TO_Q8_0 && d <= WEIGHTS_TO_Q6_K; }

st_dtype weights_quant_st_dtype(weights_dtype d) {
    switch (d) {
    case WEIGHTS_TO_Q8_0: return ST_Q8_0;
    case WEIGHTS_TO_Q4_0: return ST_Q4_0;
    case WEIGHTS_TO_Q4_K: return ST_Q4_K;
    case WEIGHTS_TO_Q5_K: return ST_Q5_K;
    case WEIGHTS_TO_Q6_K: return ST_Q6_K;
    default: return ST_F32;
    }
}

/* Whether `seg` (one dot-separated part of a name, length n) names an embedding: a lookup table,
 * a timestep / pooled-text / guidance embedder, or a patch embedder (time_embedding,
 * add_embedding, class_embedding, time_text_embed, x_embedder, context_embedder, pos_embed,
 * embeddings, embed_tokens, token_embedding). */
static bool segment_is_embedding(const char *seg, size_t n) {
    for (size_t i = 0; i + 5 <= n; i++)
        if (!memcmp(seg + i, "embed", 5)) return true;
    return false;
}

/* The first and last layers of a denoiser, by their top-level diffusers names (BFL's img_in,
 * txt_in, time_in, vector_in, guidance_in and final_layer are renamed to x_embedder,
 * context_embedder, time_text_embed.* , norm_out.linear and proj_out before this sees them),
 * and CLIP's final text_projection. */
static const char *const top_level_kept[] = {"conv_in.",  "conv_out.", "proj_out.",
                                             "norm_out.", "text_projection."};

const char *weights_quant_kept(const char *name, int64_t row, st_dtype to) {
    for (size_t i = 0; i < sizeof top_level_kept / sizeof *top_level_kept; i++)
        if (!strncmp(name, top_level_kept[i], strlen(top_level_kept[i]))) return "first/last layer";
    for (const char *s = name; *s;) {
        const char *dot = strchr(s, '.');
        const size_t n = dot ? (size_t)(dot - s) : strlen(s);
        if (segment_is_embedding(s, n)) return "embedding";
        s += n + (dot != NULL);
    }
    int elems = 1, bytes = 4;
    gguf_type_block(gguf_type_of_st(to), &elems, &bytes);
    if (row % elems) return "row not a whole number of blocks";
    return NULL;
}

sd_status weights_quantize(const st_tensor *t, st_dtype to, const char *name, void **out) {
    *out = NULL;
    const uint32_t type = gguf_type_of_st(to);
    int elems = 0, bytes = 0;
    const int64_t n = st_numel(t), row = t->ndim ? t->shape[t->ndim - 1] : 1;
    if (!gguf_quantize_supported(type) || !gguf_type_block(type, &elems, &bytes) ||
        !st_is_float(t->dtype) || st_is_quantized(t->dtype))
        return sd_set_error(SD_ERR_TENSOR, "tensor '%s': cannot quantize %s to %s", name,
                            st_dtype_name(t->dtype), st_dtype_name(to));
    if (t->ndim < 2 || row % elems)
        return sd_set_error(SD_ERR_TENSOR,
                            "tensor '%s': rows of %lld values are not whole %s blocks of %d", name,
                            (long long)row, st_dtype_name(to), elems);
    uint8_t *dst = malloc(n ? (size_t)(n / elems) * (size_t)bytes : 1);
    if (!dst) return sd_set_error(SD_ERR_NOMEM, "out of memory quantizing tensor '%s'", name);
    /* A chunk of whole blocks at a time (rows hold whole blocks, so the flat order's blocks are
     * the rows' blocks); chunks are independent, so threads take them in any order. */
    enum { CHUNK = 4096 };
    const int64_t chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t c = 0; c < chunks; c++) {
        float buf[CHUNK];
        const int64_t i = c * CHUNK, len = n - i < CHUNK ? n - i : CHUNK;
        st_tensor part = *t;
        part.ndim = 1;
        part.shape[0] = len;
        part.nbytes = st_dtype_bytes(t->dtype, len);
        part.data = (const uint8_t *)t->data + st_dtype_bytes(t->dtype, i);
        st_to_f32(&part, buf);
        gguf_quantize_row(type, buf, dst + (size_t)(i / elems) * (size_t)bytes, len);
    }
    *out = dst;
    return SD_OK;
}

/* The weights of one pipeline component (unet/, vae/, text_encoder/, ...), as diffusers and
 * transformers save them: a single safetensors file, a sharded set described by
 * `*.safetensors.index.json`, or only an `fp16` variant of either. Tensors are looked up by name
 * across all files of the set; the mapping stays open as long as the set does. */
#ifndef SD_WEIGHTS_H
#define SD_WEIGHTS_H

#include "lora.h"
#include "safetensors.h"

#include <stdbool.h>

/* How the layers (nn/layers.h) of a model hold their weights. The Q types quantize the Linear
 * weights of a 16/32-bit release at load into ggml's blocks (core/weights_quant.c), except the
 * ones weights_quant_kept names; everything else is held at 16 bits (an fp32 tensor as F16, a
 * 16-bit one as stored; a GGUF block tensor stays as stored). */
typedef enum {
    WEIGHTS_AS_STORED = 0, WEIGHTS_TO_F16 = 1, WEIGHTS_TO_BF16 = 2,
    WEIGHTS_TO_Q8_0, WEIGHTS_TO_Q4_0, WEIGHTS_TO_Q4_K, WEIGHTS_TO_Q5_K, WEIGHTS_TO_Q6_K
} weights_dtype;
/* The arithmetic of the layers that pack their weight once at load (nn_linear_pack, every
 * convolution): BF16 packs them as bf16 (2 bytes a weight; the forward calls then round
 * activations to bf16 and sum in fp32, kernels/gemm_bf16.h). Linear layers left unpacked (the
 * transformers') stay fp32 either way. */
/* INT8 packs them as int8 per output channel instead (1 byte a weight plus a scale; the forward
 * calls quantize activations per row and sum in int32, kernels/gemm_int8.h). */
typedef enum {
    WEIGHTS_PRECISION_FP32 = 0,
    WEIGHTS_PRECISION_BF16 = 1,
    WEIGHTS_PRECISION_INT8 = 2
} weights_precision;
/* The load options of one model, given to its loader (unet_load, vae_load, ...) and by it to
 * weights_open; all-zero (or a NULL policy) is the default: weights as stored, no low-memory
 * mode, fp32 packing. */
struct weights_source;
typedef struct {
    /* Layer weights converted at load (round to nearest even) into an anonymous buffer of this
     * dtype, then used as if stored so; the source pages are given back. */
    weights_dtype dtype;
    /* Layers keep their weights where they are stored, packed per call, and give the mapped pages
     * back after each forward: about one layer's weights resident at a time. */
    bool low_memory;
    weights_precision precision;
    /* Where the weights come from instead of the folder weights_open is given (NULL: the folder):
     * a single original-layout checkpoint (convert/ldm_source.h) or a FLUX.1 transformer file
     * (convert/bfl_flux.h) whose open() builds the set. */
    const struct weights_source *source;
    /* LoRAs merged into the tensors of the component `lora_component` ("unet", "text_encoder",
     * ...) as they are read: a weight with deltas is read through the float32 path (a float32
     * copy holding W + the deltas, core/lora.h), every other tensor as without. NULL: none. */
    lora_set *lora;
    const char *lora_component;
} weights_policy;

typedef struct sd_weights sd_weights;
/* Another origin of a component's weights. weights_open hands the set over to open(); the struct
 * is embedded first in the origin's own (convert/ldm_source.h). */
typedef struct weights_source {
    sd_status (*open)(sd_weights *w, const struct weights_source *src,
                      const weights_policy *policy);
} weights_source;

struct sd_weights {
    char *dir;
    int n_files;
    st_file *files;
    /* The policy weights_open was given: the layers loaded from this set follow it. */
    weights_policy policy;
    /* Set by a loader that keeps this set open as long as its layers live and runs them only
     * through nn_*_forward: its layers may then point into the mapping (f16/bf16 weights stay
     * as stored, policy applies). Unset, every layer holds a float32 copy as before. */
    bool keep_stored;
    /* Buffers the set owns (tensors a renamed open had to rearrange, e.g. transposed), freed by
     * weights_close. */
    int n_owned;
    void **owned;
};

/* Rounds float32 values read from `w` (from a tensor stored as `stored`) to the dtype its policy
 * converts weights to (nothing for WEIGHTS_AS_STORED, or when the loader did not set
 * keep_stored), so that every tensor of a model converted at load, not only the layers'
 * weights, holds what an f16/bf16 release of it would: biases, norms, embeddings. Under a Q
 * policy those tensors are held at 16 bits: values from an F32 tensor are rounded to f16,
 * others kept. */
void weights_round_f32(const sd_weights *w, st_dtype stored, float *x, size_t n);

/* Whether a policy dtype is one of the Q types; the block st_dtype it quantizes to (ST_Q8_0, ...;
 * ST_F32 for the others). */
bool weights_dtype_quantizes(weights_dtype d);
st_dtype weights_quant_st_dtype(weights_dtype d);
/* Why the Linear weight `name` (diffusers' names), rows of `row` values, stays at 16 bits under a
 * Q policy quantizing to `to` (a short reason: "embedding", "first/last layer", "row not a whole
 * number of blocks"); NULL when it is quantized. */
const char *weights_quant_kept(const char *name, int64_t row, st_dtype to);
/* A copy of n bytes (blocks quantized at load) in an unlinked temporary file mapped shared and
 * read-only ($TMPDIR, else /tmp; core/weights_spill.c), so that a paged run can give its pages
 * back as it does a file's; NULL when the file cannot be written (the caller keeps its buffer).
 * Freed with weights_spill_free. */
void *weights_spill(const void *data, size_t n);
void weights_spill_free(void *map, size_t n);

/* A float tensor (F32/F16/BF16, 2 or more dims, rows a whole number of blocks) quantized to the
 * block type `to` with ggml's reference quantizer, into a malloc'd buffer; errors name it. */
sd_status weights_quantize(const st_tensor *t, st_dtype to, const char *name, void **out);

/* A float tensor (F32/F16/BF16) converted to F16 or BF16 (round to nearest even, as torch's
 * .to()), in a malloc'd buffer of st_numel(t) 16-bit values. */
sd_status weights_convert_16(const st_tensor *t, st_dtype to, const char *name, uint16_t **out);

/* Opens the weights in `dir`. `stem` is the file stem the library uses ("diffusion_pytorch_model"
 * for diffusers models, "model" for transformers ones); NULL tries both. Looks for, in order:
 * <stem>.safetensors, <stem>.safetensors.index.json, <stem>.fp16.safetensors,
 * <stem>.fp16.safetensors.index.json. The set keeps a copy of `policy` (NULL: the default). */
sd_status weights_open(sd_weights *w, const char *dir, const char *stem,
                       const weights_policy *policy);
void weights_close(sd_weights *w);

/* A tensor's new name in a renamed set, and how it is cut from the stored one. */
typedef struct {
    char name[256];
    int part, n_parts; /* n_parts > 1: rows [part*R/n_parts, (part+1)*R/n_parts) of dim 0 (a
                        * view: fused attention in_proj weights split into q, k, v) */
    int64_t row0, rows; /* rows > 0: rows [row0, row0 + rows) of dim 0 (a view: fused tensors
                         * split unevenly, FLUX's single-block linear1 into q, k, v and mlp) */
    bool transpose;    /* a 2-D tensor stored transposed (an owned copy, same dtype) */
    bool swap_halves;  /* the two halves of dim 0 swapped (an owned copy, same dtype): BFL's
                        * final adaLN modulation is (shift, scale), diffusers' (scale, shift) */
    bool identity;     /* not the stored data: a float32 d x d identity matrix, d the stored
                        * tensor's first dimension (diffusers' from_single_file gives SD3's CLIP-L
                        * an identity text_projection the file does not hold) */
} weights_rename;
/* The most names one stored tensor maps to. */
enum { WEIGHTS_RENAME_MAX = 4 };
/* Maps one stored name to up to WEIGHTS_RENAME_MAX new ones: returns how many (0: the tensor is
 * not part of this set), or a negative value after recording an error naming the key. */
typedef int (*weights_rename_fn)(void *ctx, const char *key, weights_rename out[WEIGHTS_RENAME_MAX]);
/* Opens one safetensors file as a set whose tensors carry the names `fn` gives (a single-file
 * checkpoint in another key layout, read through diffusers' names). The views point into the
 * mapping; no data is copied except transposed and half-swapped tensors. Two stored names giving one new name is
 * an error naming it. `label` (may be NULL) names the set in later messages instead of the bare
 * path, e.g. "model.safetensors (first_stage_model.* as diffusers vae)", so that an error about
 * a renamed tensor says where its original lives. */
sd_status weights_open_renamed(sd_weights *w, const char *path, const char *label,
                               weights_rename_fn fn, void *ctx, const weights_policy *policy);

/* Gives back every resident page of the set's mappings (low-memory mode, between uses of a
 * model): the page cache keeps the data, later reads fault it back. */
void weights_release(const sd_weights *w);

/* NULL when absent (no error is recorded: callers decide whether absence is an error). */
const st_tensor *weights_find(const sd_weights *w, const char *name);

/* Whether `t`'s data is a file mapping whose pages may be given back (st_release_pages): false
 * for the set's own heap copies (weights_open_renamed's transposed / swapped tensors), which
 * MADV_DONTNEED would zero instead of dropping. */
bool weights_releasable(const sd_weights *w, const st_tensor *t);
/* st_release_pages on `t`'s data when weights_releasable, else nothing. */
void weights_release_tensor(const sd_weights *w, const st_tensor *t);
/* The file holding `name` (for messages); NULL when absent. */
const char *weights_file_of(const sd_weights *w, const char *name);

/* Finds a float tensor, checks its shape (ndim < 0 skips it) and returns a malloc'd float32 copy
 * (with the policy's LoRA deltas merged, when it has any for the tensor);
 * the tensor's mapped pages are given back afterwards (st_release_pages). Errors name the tensor
 * and the folder. */
sd_status weights_read_f32(const sd_weights *w, const char *name, int ndim, const int64_t *shape,
                           float **out);

#endif

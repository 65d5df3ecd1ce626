/* Settings that only some families take, refused in one place and one way for every family: a
 * setting the family's diffusers pipeline has no argument for is an error when the caller set it
 * (left at its default it is fine), never silently ignored. Of these, each __call__ takes:
 *
 *   StableDiffusionPipeline: eta, guidance_rescale, clip_skip (its Img2Img / Inpaint pipelines
 *     have no guidance_rescale; it is applied to them here all the same, as an extension)
 *   StableDiffusionXLPipeline (and Img2Img, Inpaint): eta, guidance_rescale, clip_skip,
 *     prompt_2 / negative_prompt_2, original_size, crops_coords_top_left, target_size
 *   StableDiffusion3Pipeline: clip_skip, prompt_2/3, negative_prompt_2/3, max_sequence_length
 *   FluxPipeline: prompt_2, negative_prompt / negative_prompt_2, max_sequence_length
 *
 * Kept on purpose: Flux takes a negative prompt, as FluxPipeline does, and ignores it as
 * FluxPipeline does with its default true_cfg_scale 1 (true CFG is not implemented); an SDXL
 * folder with one text encoder (the refiner) takes prompt_2 and does not use it, as diffusers. */
#include <math.h>
#include <stdio.h>

#include "generate.h"

typedef struct {
    unsigned flag;        /* PL_OPT_* */
    const char *name;     /* the sd_gen_params field(s) */
    const char *argument; /* the diffusers __call__ argument */
    bool (*set)(const sd_gen_params *g);
} gen_option;

static bool text(const char *s) { return s && *s; } /* NULL and "" both mean "as the prompt" */
static bool eta_set(const sd_gen_params *g) { return g->eta != 0; }
static bool rescale_set(const sd_gen_params *g) { return g->guidance_rescale != 0; }
static bool clip_skip_set(const sd_gen_params *g) { return g->clip_skip != 0; }
static bool prompt_2_set(const sd_gen_params *g) { return text(g->prompt_2); }
static bool negative_2_set(const sd_gen_params *g) { return text(g->negative_prompt_2); }
static bool prompt_3_set(const sd_gen_params *g) { return text(g->prompt_3); }
static bool negative_3_set(const sd_gen_params *g) { return text(g->negative_prompt_3); }
static bool original_set(const sd_gen_params *g) { return g->original_width || g->original_height; }
static bool crop_set(const sd_gen_params *g) { return g->crop_top || g->crop_left; }
static bool target_set(const sd_gen_params *g) { return g->target_width || g->target_height; }
static bool max_sequence_set(const sd_gen_params *g) { return g->max_sequence_length != 0; }

static const gen_option options[] = {
    {PL_OPT_ETA, "eta", "eta", eta_set},
    {PL_OPT_GUIDANCE_RESCALE, "guidance_rescale", "guidance_rescale", rescale_set},
    {PL_OPT_CLIP_SKIP, "clip_skip", "clip_skip", clip_skip_set},
    {PL_OPT_PROMPT_2, "prompt_2", "prompt_2", prompt_2_set},
    {PL_OPT_PROMPT_2, "negative_prompt_2", "negative_prompt_2", negative_2_set},
    {PL_OPT_PROMPT_3, "prompt_3", "prompt_3", prompt_3_set},
    {PL_OPT_PROMPT_3, "negative_prompt_3", "negative_prompt_3", negative_3_set},
    {PL_OPT_MICRO_COND, "original_width/original_height (SDXL micro-conditioning)",
     "original_size", original_set},
    {PL_OPT_MICRO_COND, "crop_top/crop_left (SDXL micro-conditioning)", "crops_coords_top_left",
     crop_set},
    {PL_OPT_MICRO_COND, "target_width/target_height (SDXL micro-conditioning)", "target_size",
     target_set},
    {PL_OPT_MAX_SEQUENCE, "max_sequence_length", "max_sequence_length", max_sequence_set},
};

sd_status pl_check_options(const pl_run *r) {
    const sd_gen_params *g = &r->g;
    const char *family = r->gen->name, *cls = r->p->mi.class_name;
    for (size_t i = 0; i < sizeof options / sizeof *options; i++)
        if (!(r->gen->options & options[i].flag) && options[i].set(g))
            return sd_set_error(SD_ERR_ARG, "%s: not supported by %s (%s has no %s)",
                                options[i].name, family, cls, options[i].argument);
    if (g->mask_image && !g->init_image)
        return sd_set_error(SD_ERR_ARG, "a mask needs an init image (the image to repaint)");
    if (!g->init_image && !isnan(g->strength))
        return sd_set_error(SD_ERR_ARG, "strength %g applies to image-to-image: give an init "
                            "image", g->strength);
    /* diffusers has these as other pipelines (StableDiffusion3Img2ImgPipeline,
     * FluxImg2ImgPipeline...), which are not implemented: valid input, unsupported here. */
    if (g->init_image && !r->gen->image_to_image)
        return sd_set_error(SD_ERR_UNSUPPORTED, "init_image: not supported by %s (image-to-image "
                            "and inpainting are not implemented for %s)", family, cls);
    return SD_OK;
}

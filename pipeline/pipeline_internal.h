/* What an sd_pipeline holds; shared by the files of pipeline/. */
#ifndef SD_PIPELINE_INTERNAL_H
#define SD_PIPELINE_INTERNAL_H

#include <cjson/cJSON.h>

#include "../include/sd.h"
#include "../text_encoder/clip_text.h"
#include "../text_encoder/clip_tokenizer.h"
#include "../unet/unet.h"
#include "../vae/vae.h"
#include "model_index.h"

struct sd_pipeline {
    model_index mi;
    clip_tokenizer *tokenizer;
    clip_text *text_encoder;
    unet *unet;
    vae *vae;
    cJSON *scheduler_config; /* scheduler/scheduler_config.json */
    int vae_scale_factor;    /* 2^(len(vae.block_out_channels) - 1) */
};

/* The SD 1.x/2.x generation (pipeline/generate_sd.c). */
sd_status sd_generate_sd(sd_pipeline *p, const sd_gen_params *g, sd_result *out);

#endif

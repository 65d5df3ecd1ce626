/* The files people download, against what diffusers itself does with them (recorded by
 * tools/reference/file_refs.py into tests/fixtures/extra/: single_files.json, file_runs.json,
 * file_runs.safetensors, lora/):
 * - the original-layout single files this suite writes (tests/ldm_writer.c) are, tensor for
 *   tensor (names, dtypes, shapes, CRC-32 of the bytes), what diffusers' own
 *   scripts/convert_diffusers_to_original_*.py write from the same fixture folder;
 * - the image from such a file (with --config the fixture folder) is within the fixture tolerance
 *   of what <Pipeline>.from_single_file(file, config=folder) gave;
 * - LoRAs in each format (kohya-ss, LoCon, PEFT, two at once, kohya SDXL in original-layout names,
 *   FLUX in kohya and ComfyUI/BFL naming) give the image diffusers' load_lora_weights +
 *   set_adapters gave (or, where the JSON says "float64 merge", the image of the folder with the
 *   LoRA merged in float64 by the script, run by diffusers). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "ldm_writer.h"
#include "manifest.h"
#include "../include/sd.h"
#include "test.h"

#define RUNS "extra/file_runs.safetensors"

static char tmpdir[600];

static void gen_params(sd_gen_params *g, const cJSON *run) {
    sd_gen_params_init(g);
    const cJSON *v;
    g->prompt = cJSON_GetObjectItem(run, "prompt")->valuestring;
    if ((v = cJSON_GetObjectItem(run, "negative_prompt")) && cJSON_IsString(v)) g->negative_prompt = v->valuestring;
    g->seed = (uint64_t)cJSON_GetObjectItem(run, "seed")->valuedouble;
    g->steps = cJSON_GetObjectItem(run, "num_inference_steps")->valueint;
    g->guidance = cJSON_GetObjectItem(run, "guidance_scale")->valuedouble;
    g->width = cJSON_GetObjectItem(run, "width")->valueint;
    g->height = cJSON_GetObjectItem(run, "height")->valueint;
    if ((v = cJSON_GetObjectItem(run, "scheduler")) && cJSON_IsString(v)) g->scheduler = v->valuestring;
    if ((v = cJSON_GetObjectItem(run, "max_sequence_length"))) g->max_sequence_length = v->valueint;
}

/* One recorded run: the model (file or folder), its LoRAs, the call from the JSON; the image
 * within the fixture tolerance of the recorded one. */
static void check_run(const char *name, const cJSON *run, const char *model, const char *config,
                      const sd_lora *loras, int n_loras) {
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.config_dir = config;
    lp.loras = loras;
    lp.n_loras = n_loras;
    sd_pipeline *p = NULL;
    const sd_status loaded = sd_pipeline_load(&p, model, &lp);
    CHECK(loaded == SD_OK, "%s: load %s: %s", name, model, sd_last_error());
    if (loaded != SD_OK) return;
    sd_gen_params g;
    gen_params(&g, run);
    sd_result r;
    memset(&r, 0, sizeof r);
    char key[200];
    snprintf(key, sizeof key, "%s.image", name);
    int64_t shape[8];
    int ndim = 0;
    float *want = fixture_tensor(RUNS, key, shape, &ndim);
    CHECK(want != NULL, "%s recorded", key);
    const sd_status st = want ? sd_generate(p, &g, &r) : SD_ERR_ARG;
    if (want) CHECK(st == SD_OK, "%s: generate: %s", name, sd_last_error());
    if (st == SD_OK) fixture_check_pixels(name, &r, want, 1);
    free(want);
    sd_result_free(&r);
    sd_pipeline_free(p);
}

static void test_single_files(const cJSON *runs) {
    cJSON *manifests = manifest_read_json("extra/single_files.json");
    CHECK(manifests != NULL, "extra/single_files.json readable");
    if (!manifests) return;
    static const struct {
        const char *model;
        ldmw_flavour flavour; /* the scripts write a tiny SD 2.x CLIP as SD 1.x: their "v2" test
                               * is a 23rd encoder layer */
    } cases[] = {{"sd15-tiny", LDMW_SD1}, {"sd2v-tiny", LDMW_SD1}, {"sdxl-tiny", LDMW_SDXL}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char folder[300], file[300], run[100];
        snprintf(folder, sizeof folder, "%s", fixture(cases[i].model));
        strcat(folder, "/pipeline");
        snprintf(file, sizeof file, "%s", test_path(tmpdir, cases[i].model));
        strcat(file, ".safetensors");
        const ldmw_options opt = {0};
        const sd_status written = ldmw_write(folder, file, cases[i].flavour, &opt);
        CHECK(written == SD_OK, "%s: write %s: %s", cases[i].model, file, sd_last_error());
        if (written != SD_OK) continue;
        manifest_check(cases[i].model, cJSON_GetObjectItem(manifests, cases[i].model), file);
        snprintf(run, sizeof run, "single.%s", cases[i].model);
        const cJSON *r = cJSON_GetObjectItem(runs, run);
        CHECK(r != NULL, "%s recorded", run);
        if (r) check_run(run, r, file, folder, NULL, 0);
    }
    cJSON_Delete(manifests);
}

static void test_loras(const cJSON *runs) {
    const cJSON *run;
    int n_runs = 0;
    cJSON_ArrayForEach(run, runs) {
        const bool lora = !strncmp(run->string, "lora.", 5), merged = !strncmp(run->string, "merged.", 7);
        if (!lora && !merged) continue;
        const cJSON *files = cJSON_GetObjectItem(run, "loras"), *scales = cJSON_GetObjectItem(run, "scales");
        sd_lora l[4];
        char paths[4][300];
        const int n = cJSON_GetArraySize(files);
        const bool listed = n >= 1 && n <= 4 && n == cJSON_GetArraySize(scales);
        CHECK(listed, "%s: LoRA list", run->string);
        if (!listed) continue;
        for (int i = 0; i < n; i++) {
            snprintf(paths[i], sizeof paths[i], "%s", fixture("extra/lora"));
            strcat(paths[i], "/");
            strcat(paths[i], cJSON_GetArrayItem(files, i)->valuestring);
            l[i].path = paths[i];
            l[i].scale = (float)cJSON_GetArrayItem(scales, i)->valuedouble;
        }
        char folder[300];
        snprintf(folder, sizeof folder, "%s", fixture(cJSON_GetObjectItem(run, "model")->valuestring));
        strcat(folder, "/pipeline");
        printf("   %s (%s)\n", run->string, cJSON_GetObjectItem(run, "how")->valuestring);
        check_run(run->string, run, folder, NULL, l, n);
        n_runs++;
    }
    CHECK(n_runs >= 8, "%d LoRA runs recorded", n_runs);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s", test_output_dir("file_refs"));
    cJSON *runs = manifest_read_json("extra/file_runs.json");
    CHECK(runs != NULL, "extra/file_runs.json readable");
    if (runs) {
        test_single_files(runs);
        test_loras(runs);
    }
    cJSON_Delete(runs);
    return test_summary();
}

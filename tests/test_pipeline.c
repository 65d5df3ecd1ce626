/* End to end through the library: every text-to-image run recorded in sd15-tiny/expected and
 * sd2v-tiny/expected is generated again with the run's settings, and every intermediate the
 * fixture holds is compared as it is produced: prompt embeddings (rel. L2 < 1e-5), each denoiser
 * input and output and the latents after each step (< 1e-4, trajectory tolerance), the final
 * 8-bit pixels (within one level on >= 99.9% of values, never more than two apart).
 *
 * One caveat, measured rather than assumed: a run can amplify float32 rounding exponentially (the
 * sd15 ddim run, clip_sample with guidance 5, doubles any difference at every step: perturbing
 * its initial noise by 1e-7 moves its end state by ~2e-4 in our own pipeline). No float32
 * implementation that is not bit-identical to torch can follow such a run to 1e-4. For a run whose
 * error exceeds 1e-4 the test therefore measures that sensitivity (the same run from noise
 * perturbed by 1e-7 relative) and accepts at most 4x the divergence the run shows against itself;
 * a real defect (a wrong coefficient, a missing term) gives errors orders of magnitude above it.
 *
 * $SD_TEST_PIPELINE_RUNS (names "model/run" separated by spaces or commas, e.g.
 * "sd15-tiny/euler sd15-tiny/dpmpp2m_karras") limits the test to those runs: make test-aarch64
 * picks a few, since every run takes most of a minute under qemu. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/fileutil.h"
#include "../core/rng.h"
#include "../core/safetensors.h"
#include "../include/sd.h"
#include "test.h"

static int runs_done;

/* Whether $SD_TEST_PIPELINE_RUNS (unset: every run) names model/run. */
static int wanted(const char *model, const char *run) {
    const char *list = getenv("SD_TEST_PIPELINE_RUNS");
    if (!list || !*list) return 1;
    const size_t ml = strlen(model), rl = strlen(run);
    for (const char *s = list; *s;) {
        const size_t len = strcspn(s, " ,");
        if (len == ml + 1 + rl && !strncmp(s, model, ml) && s[ml] == '/' && !strncmp(s + ml + 1, run, rl))
            return 1;
        s += len;
        s += strspn(s, " ,");
    }
    return 0;
}

static void run_one(sd_pipeline *p, const char *model, const char *run) {
    if (!wanted(model, run)) return;
    runs_done++;
    char st_path[512], name[128];
    snprintf(st_path, sizeof st_path, "%s/expected/%s.safetensors", model, run);
    snprintf(name, sizeof name, "%.20s/%s", model, run);
    fixture_run fr;
    if (!fixture_run_load(&fr, model, run)) return;
    fixture_check_run(p, name, &fr, st_path, "");
    fixture_run_free(&fr);
}

/* Runs recorded by tools/reference/extra_refs.py: latent sizes that are not multiples of 8, clip
 * skip, DDIM eta > 0 and SDE noise with a batch (noise drawn in the pipeline's order). */
static void extra_runs(sd_pipeline *p, const char *model) {
    sd_cfg c;
    CHECK_OK(cfg_open(&c, fixture("extra/extra_runs.json")));
    if (!c.root) return;
    int seen = 0;
    for (const cJSON *run = c.root->child; run; run = run->next) {
        const cJSON *m = cJSON_GetObjectItem(run, "model");
        if (!cJSON_IsString(m) || strcmp(m->valuestring, model)) continue;
        seen++;
        if (!wanted(model, run->string)) continue;
        runs_done++;
        char prefix[128];
        snprintf(prefix, sizeof prefix, "%s.", run->string);
        fixture_run fr;
        fixture_run_from_json(&fr, run);
        fixture_check_run(p, run->string, &fr, "extra/extra_runs.safetensors", prefix);
        fixture_run_free(&fr);
    }
    CHECK(seen >= 1, "%d extra runs for %s", seen, model);
    cfg_close(&c);
}

static const char *const sd15_runs[] = {"pndm", "ddim", "euler", "euler_a", "dpmpp2m",
                                        "dpmpp2m_karras", "heun", "unipc", "lcm_nocfg", "batch2"};
static const char *const sd2v_runs[] = {"ddim_v", "ddim_v_trailing_zsnr", "dpmpp2m_v", "euler_a_v",
                                        "euler_v_zsnr"};

int main(void) {
    sd_pipeline *p;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), NULL));
    if (p) {
        for (size_t i = 0; i < sizeof sd15_runs / sizeof *sd15_runs; i++) run_one(p, "sd15-tiny", sd15_runs[i]);
        extra_runs(p, "sd15-tiny");
        sd_pipeline_free(p);
    }
    CHECK_OK(sd_pipeline_load(&p, fixture("sd2v-tiny/pipeline"), NULL));
    if (p) {
        for (size_t i = 0; i < sizeof sd2v_runs / sizeof *sd2v_runs; i++) run_one(p, "sd2v-tiny", sd2v_runs[i]);
        extra_runs(p, "sd2v-tiny");
        sd_pipeline_free(p);
    }
    /* SD3 with a T5 text_encoder_3 (sd3-tiny plus a T5, recorded by extra_refs.py). */
    CHECK_OK(sd_pipeline_load(&p, fixture("sd3t5-tiny/pipeline"), NULL));
    if (p) {
        extra_runs(p, "sd3t5-tiny");
        sd_pipeline_free(p);
    }
    CHECK(runs_done > 0, "no run matches SD_TEST_PIPELINE_RUNS=%s", getenv("SD_TEST_PIPELINE_RUNS"));
    return test_summary();
}

/* A minimal test harness: CHECK records a pass or a failure (printing where and why), numeric
 * comparisons print the error they measured, and test_summary() prints "N passed, N failed" as the
 * last line, which tests/run.sh adds up over all test programs. */
#ifndef SD_TEST_H
#define SD_TEST_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../core/error.h"
#include "../core/image.h"
#include "../include/sd.h"

extern int test_passed, test_failed;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            test_passed++;                                                                         \
        } else {                                                                                   \
            test_failed++;                                                                         \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

/* A library call that must succeed; prints sd_last_error() when it does not. */
#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        sd_status check_ok_st_ = (expr);                                                           \
        CHECK(check_ok_st_ == SD_OK, "%s -> %s: %s", #expr, sd_status_name(check_ok_st_),          \
              sd_last_error());                                                                    \
    } while (0)

/* Prints the totals line and returns the process exit code. */
int test_summary(void);

/* Relative L2 error ||got - want|| / ||want|| (absolute L2 when want is all zero). */
double rel_l2(const float *got, const float *want, size_t n);
/* rel_l2 of an event's NHWC tensor (laid out NCHW) against the k-th slice of a recorded
 * [K][B][C][H][W] tensor. */
double fixture_compare_slice(const sd_tensor *t, const float *rec, int k);
/* Records a check that rel_l2 < tol and prints "ok/FAIL what: rel err, max abs diff". */
int check_rel(const char *what, const float *got, const float *want, size_t n, double tol);
/* Records a check that the arrays are identical. */
int check_equal_i32(const char *what, const int32_t *got, const int32_t *want, size_t n);

/* Absolute path of a file under tests/fixtures (static buffer, valid until the next call). */
const char *fixture(const char *rel);
/* Symlinks the folders parts[0..n) of fixture `model` ("sd15-tiny/pipeline") into dir (which
 * exists), by absolute path: a modified model shares the components it does not change. */
bool fixture_link_parts(const char *model, const char *dir, const char *const *parts, int n);
/* Path of a built tool: $SD_BIN_DIR/name (the runner sets it), else bin/name. */
const char *tool_path(const char *name);
/* A folder for files a test leaves for a person to look at (failure images): `name` beside the
 * test program, so in the build tree (build/tests/name), never in the sources; created when
 * missing. Static buffer, valid until the next call. */
const char *test_output_dir(const char *name);
/* dir/name in one of 8 rotating static buffers: a result stays valid for the next 7 calls. */
const char *test_path(const char *dir, const char *name);

/* Layout conversions for comparing NHWC engine tensors with NCHW references. */
void nchw_to_nhwc(const float *src, float *dst, int n, int c, int h, int w);
void nhwc_to_nchw(const float *src, float *dst, int n, int h, int w, int c);

/* Reads tensor `name` of tests/fixtures/<file> as float32 (malloc'd; F32/F16/BF16, or I32/I64
 * converted). Fills shape[0..ndim) and ndim when not NULL. Returns NULL (after a recorded failure) when absent. */
float *fixture_tensor(const char *file, const char *name, int64_t *shape, int *ndim);
/* Same for integer tensors (I32 or I64), as int32. */
int32_t *fixture_ids(const char *file, const char *name, int64_t *shape, int *ndim);

/* Exact JSON equality (numbers as doubles, so -inf == -inf); membership of a string in an array. */
bool fixture_json_equal(const cJSON *a, const cJSON *b);
bool fixture_json_in_list(const cJSON *array, const char *s);
/* The options a fixture run passed to from_config: keys of the recorded scheduler config that the
 * class set explicitly (not in _use_default_values) and the pipeline's config does not already
 * give. A new object; the caller deletes it. */
cJSON *fixture_run_overrides(const cJSON *recorded, const cJSON *pipeline);

/* A recorded pipeline run (tests/fixtures/<model>/expected/<run>.json) as generation settings:
 * prompt, negative prompt, seed, steps, guidance (and rescale), size, batch, eta, clip skip, T5
 * length, the scheduler class, and the scheduler overrides it was built with (as JSON text). */
typedef struct {
    cJSON *json;
    sd_gen_params g;
    sd_image init, mask; /* "image_file" / "mask_file" of the run, fixture-relative */
    cJSON *overrides;
    char *overrides_text;
} fixture_run;
bool fixture_run_load(fixture_run *r, const char *model, const char *run);
/* The same from an entry of extra/extra_runs.json, which names its overrides itself. */
void fixture_run_from_json(fixture_run *r, const cJSON *run);
void fixture_run_free(fixture_run *r);

/* Generates a recorded run again through the library (sd_generate with fr->g) and compares every
 * intermediate the fixture holds as it is produced (events): prompt embeddings (`prompt_embeds` /
 * `negative_prompt_embeds`, or the first call's `context` [uncond; cond], and SDXL's `pooled`) to
 * rel. L2 < 1e-5; each denoiser input and output and the latents after each step (`model_inputs`,
 * `model_outputs`, `latents_steps`: the calls that ran, matched in order) to < 1e-4; the model
 * call count; the final pixels (fixture_check_pixels). A run whose trajectory error exceeds 1e-4
 * is held to 4x its own measured sensitivity instead (the same run from noise perturbed by 1e-7
 * relative; see test_pipeline.c's header). The tensors are `prefix + name` in st_path. */
void fixture_check_run(sd_pipeline *p, const char *name, fixture_run *fr, const char *st_path,
                       const char *prefix);
/* 8-bit images against a recorded float image [b_count][h][w][3] in [0, 1] (PNG = round(x * 255)):
 * within one level on >= 99.9% of values, never more than two apart; prints the counts. */
void fixture_check_pixels(const char *name, const sd_result *r, const float *image, int b_count);

/* Deterministic pseudo-random floats in [-1, 1) for kernel tests. */
void fill_random(float *x, size_t n, uint64_t seed);

#endif

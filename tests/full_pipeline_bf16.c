/* Every recorded run of tests/test_pipeline_bf16.c (make test runs one each of sd15 and sdxl) in bf16
 * against diffusers and our fp32 run; about 1.5 min on the 2-core machine. */
#define BF16_ALL_RUNS 1
#include "test_pipeline_bf16.c"

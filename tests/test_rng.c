/* core/rng against torch: every tensor of tests/fixtures/rng.safetensors must match bit for bit
 * (torch.Generator("cpu").manual_seed(seed) + torch.randn(shape, dtype=float32)). */
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/rng.h"
#include "test.h"

/* Counts elements that differ in their bit pattern; prints the first one. */
static int check_bits(const char *what, const float *got, const float *want, size_t n) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], 4) != 0 && bad++ == 0) first = i;
    if (bad)
        printf("FAIL %s: %zu of %zu differ (first at %zu: got %.9g, want %.9g)\n", what, bad, n,
               first, got[first], want[first]);
    else
        printf("ok   %s: %zu values bit-exact\n", what, n);
    CHECK(bad == 0, "%s: %zu values differ", what, bad);
    return bad == 0;
}

/* The seed as written in the case key ("seed<digits>_..."): JSON numbers go through double in
 * cJSON, which cannot hold 2^63-1, so the key is the exact source. */
static uint64_t seed_from_key(const char *key) {
    return strtoull(key + 4, NULL, 10);
}

static void check_case(const cJSON *c, int *seen_seeds, uint64_t *seeds) {
    const char *key = cJSON_GetObjectItem(c, "key")->valuestring;
    const cJSON *shape = cJSON_GetObjectItem(c, "shape");
    uint64_t seed = seed_from_key(key);
    double json_seed = cJSON_GetObjectItem(c, "seed")->valuedouble;
    CHECK((double)seed == json_seed, "%s: seed in key %llu vs JSON %.17g", key,
          (unsigned long long)seed, json_seed);
    size_t n = 1;
    for (const cJSON *d = shape->child; d; d = d->next) n *= (size_t)d->valueint;
    float *want = fixture_tensor("rng.safetensors", key, NULL, NULL);
    if (!want) return;
    float *got = malloc(n * sizeof *got);
    sd_rng r;
    rng_seed(&r, seed);
    rng_randn(&r, got, n);
    check_bits(key, got, want, n);
    free(got);
    free(want);
    int known = 0;
    for (int i = 0; i < *seen_seeds; i++) known |= seeds[i] == seed;
    if (!known) seeds[(*seen_seeds)++] = seed;
}

/* Two successive randn((1,4,16,16)) on one generator: the stream must continue. */
static void check_sequence(uint64_t seed) {
    char first[64], second[64];
    snprintf(first, sizeof first, "seed%llu_seq_first", (unsigned long long)seed);
    snprintf(second, sizeof second, "seed%llu_seq_second", (unsigned long long)seed);
    float *w1 = fixture_tensor("rng.safetensors", first, NULL, NULL);
    float *w2 = fixture_tensor("rng.safetensors", second, NULL, NULL);
    if (w1 && w2) {
        float got[1024];
        sd_rng r;
        rng_seed(&r, seed);
        rng_randn(&r, got, 1024);
        check_bits(first, got, w1, 1024);
        rng_randn(&r, got, 1024);
        check_bits(second, got, w2, 1024);
    }
    free(w1);
    free(w2);
}

/* The double path caches the second value of each pair across calls, as torch's generator does:
 * drawing 7 then 8 values equals drawing 15 only if the cached value carries over. */
static void check_small_draws_continue(void) {
    float a[15], b[15];
    sd_rng r;
    rng_seed(&r, 1234);
    rng_randn(&r, a, 15);
    rng_seed(&r, 1234);
    rng_randn(&r, b, 7);
    rng_randn(&r, b + 7, 8);
    CHECK(memcmp(a, b, sizeof a) == 0, "7 + 8 small draws differ from one draw of 15");
    /* reseeding drops the cached value */
    rng_seed(&r, 1234);
    CHECK(!r.has_next_normal, "rng_seed keeps a cached normal");
}

int main(void) {
    sd_cfg cfg;
    CHECK_OK(cfg_open(&cfg, fixture("rng.json")));
    if (cfg.root) {
        const cJSON *cases = cJSON_GetObjectItem(cfg.root, "cases");
        uint64_t seeds[64];
        int n_seeds = 0, n_cases = 0;
        for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next, n_cases++)
            check_case(c, &n_seeds, seeds);
        CHECK(n_cases >= 48, "rng.json has %d cases", n_cases);
        for (int i = 0; i < n_seeds; i++) check_sequence(seeds[i]);
        cfg_close(&cfg);
    }
    check_small_draws_continue();
    return test_summary();
}

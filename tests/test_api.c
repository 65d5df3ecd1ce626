/* The public API's own surface (sd.h): status names and the enum's order, the version, the
 * size-prefixed parameter structs (too small refused naming the struct, a newer caller's zero tail
 * accepted and a set one refused, _init writing no more than the caller's size), the log
 * callback, the kernel level setting, the scheduler list and check, latents and image files, and
 * the VAE on its own (its decode of a generation's latents is the generation's image, bit for
 * bit). */
#include <stdlib.h>
#include <string.h>

#include "../kernels/cpu.h"
#include "test.h"

static char tmpdir[600];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

static void test_status_and_version(void) {
    static const struct {
        sd_status st;
        const char *name;
    } names[] = {
        {SD_OK, "ok"},
        {SD_ERR_IO, "I/O error"},
        {SD_ERR_FORMAT, "format error"},
        {SD_ERR_CONFIG, "config error"},
        {SD_ERR_TENSOR, "tensor error"},
        {SD_ERR_ARG, "invalid argument"},
        {SD_ERR_UNSUPPORTED, "unsupported"},
        {SD_ERR_NOMEM, "out of memory"},
        {SD_ERR_CANCELLED, "cancelled"},
        {SD_ERR_BUSY, "busy"},
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        CHECK(!strcmp(sd_status_string(names[i].st), names[i].name), "status %d: '%s', want '%s'",
              (int)names[i].st, sd_status_string(names[i].st), names[i].name);
    CHECK(!strcmp(sd_status_string((sd_status)99), "unknown error"), "an unknown status");
    CHECK(SD_ERR_CANCELLED == SD_ERR_NOMEM + 1 && SD_ERR_BUSY == SD_ERR_CANCELLED + 1,
          "CANCELLED and BUSY follow NOMEM");
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", SD_VERSION_MAJOR, SD_VERSION_MINOR, SD_VERSION_PATCH);
    CHECK(!strcmp(sd_version(), want) && !strcmp(SD_VERSION, want), "sd_version() '%s', "
          "SD_VERSION '%s', macros %s", sd_version(), SD_VERSION, want);
}

/* A buffer larger than the struct, as a caller built against a newer sd.h would pass. */
typedef struct {
    sd_load_params p;
    unsigned char newer[32];
} newer_load_params;

static void test_struct_size(void) {
    sd_pipeline *p = NULL;
    sd_load_params lp;
    sd_load_params_init(&lp);
    CHECK(lp.struct_size == sizeof lp, "sd_load_params_init sets struct_size %zu", lp.struct_size);
    lp.struct_size = sizeof(size_t);
    sd_status st = sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), &lp);
    CHECK(st == SD_ERR_ARG && p == NULL && strstr(sd_last_error(), "sd_load_params"),
          "a too small sd_load_params: %s %s", sd_status_string(st), sd_last_error());

    newer_load_params big;
    memset(&big, 0xaa, sizeof big);
    sd_load_params_init_size(&big.p, sizeof big);
    bool zero_tail = true;
    for (size_t i = 0; i < sizeof big.newer; i++) zero_tail &= big.newer[i] == 0;
    CHECK(big.p.struct_size == sizeof big && zero_tail,
          "init of a newer, larger struct zeroes its tail");
    big.newer[5] = 1;
    st = sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), &big.p);
    CHECK(st == SD_ERR_UNSUPPORTED && p == NULL && strstr(sd_last_error(), "sd_load_params"),
          "a member this library does not know, set: %s %s", sd_status_string(st), sd_last_error());
    big.newer[5] = 0;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), &big.p));

    /* An older caller's smaller struct: _init writes no byte past its size. The first release's
     * size is the end of its last member, low_memory. */
    const size_t first = offsetof(sd_load_params, low_memory) + sizeof(bool);
    unsigned char raw[sizeof(sd_load_params) + 8];
    memset(raw, 0xaa, sizeof raw);
    sd_load_params_init_size((sd_load_params *)raw, first);
    bool untouched = true;
    for (size_t i = first; i < sizeof raw; i++) untouched &= raw[i] == 0xaa;
    CHECK(untouched, "init with the first release's size (%zu) writes nothing beyond it", first);

    if (!p) return;
    sd_gen_params g;
    sd_gen_params_init(&g);
    CHECK(g.struct_size == sizeof g, "sd_gen_params_init sets struct_size %zu", g.struct_size);
    g.struct_size = 16;
    sd_result r;
    memset(&r, 0x5a, sizeof r);
    st = sd_generate(p, &g, &r);
    CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "sd_gen_params") && r.n_images == 0 &&
              r.images == NULL,
          "a too small sd_gen_params: %s %s", sd_status_string(st), sd_last_error());
    sd_pipeline_free(p);
}

/* Paging (issue 19): on by default for SD 1.x (README, "Memory"), forced on by low_memory, off by
 * keep_resident, and the two together are refused naming both. Also for a caller built against
 * the first release's header, whose struct ends before keep_resident: the default applies. */
static void test_paging_flags(void) {
    const char *model = fixture("sd15-tiny/pipeline");
    struct {
        bool low, keep;
        size_t size; /* 0: the whole struct */
        bool paging;
        const char *what;
    } cases[] = {{false, false, 0, true, "default"},
                 {true, false, 0, true, "low_memory"},
                 {false, true, 0, false, "keep_resident"},
                 {false, false, offsetof(sd_load_params, low_memory) + sizeof(bool), true,
                  "the first release's struct, defaults"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sd_load_params lp;
        sd_load_params_init_size(&lp, cases[i].size ? cases[i].size : sizeof lp);
        lp.low_memory = cases[i].low;
        if (!cases[i].size) lp.keep_resident = cases[i].keep;
        sd_pipeline *p = NULL;
        CHECK_OK(sd_pipeline_load(&p, model, &lp));
        CHECK(p && sd_pipeline_paging(p) == cases[i].paging, "%s: paging %s", cases[i].what,
              p && sd_pipeline_paging(p) ? "on" : "off");
        sd_pipeline_free(p);
    }
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.low_memory = lp.keep_resident = true;
    sd_pipeline *p = NULL;
    const sd_status st = sd_pipeline_load(&p, model, &lp);
    CHECK(st == SD_ERR_ARG && !p && strstr(sd_last_error(), "low_memory") &&
              strstr(sd_last_error(), "keep_resident"),
          "both low_memory and keep_resident: %s %s", sd_status_string(st), sd_last_error());
}

/* Messages the log callback received. */
typedef struct {
    int n;
    sd_log_level level[16];
    char text[16][256];
} log_record;

static void record(void *user, sd_log_level level, const char *message) {
    log_record *r = user;
    if (r->n < 16) {
        r->level[r->n] = level;
        snprintf(r->text[r->n], sizeof r->text[r->n], "%s", message);
        r->n++;
    }
}

static int find(const log_record *r, sd_log_level level, const char *needle) {
    for (int i = 0; i < r->n; i++)
        if (r->level[i] == level && strstr(r->text[i], needle)) return 1;
    return 0;
}

static void test_log_and_isa(void) {
    CHECK(sd_set_kernel_isa("avx3") == SD_ERR_ARG && strstr(sd_last_error(), "avx3"),
          "an unknown level is refused: %s", sd_last_error());
    /* Another architecture's level is this CPU's best, never the same-numbered level of its own
     * (avx2 and neon share a rank). */
#if defined(__aarch64__)
    const char *foreign[] = {"avx2", "avx512"};
#else
    const char *foreign[] = {"neon"};
#endif
    for (size_t i = 0; i < sizeof foreign / sizeof *foreign; i++) {
        CHECK_OK(sd_set_kernel_isa("generic"));
        CHECK_OK(sd_set_kernel_isa(foreign[i]));
        CHECK(!strcmp(sd_kernel_isa(), kern_isa_name(kern_isa_supported())),
              "SD_KERNEL_ISA=%s on this CPU gives its best level, not %s", foreign[i], sd_kernel_isa());
    }
    CHECK_OK(sd_set_kernel_isa("generic"));
    CHECK(!strcmp(sd_kernel_isa(), "generic"), "level after setting generic: %s", sd_kernel_isa());

    /* bf16 asked below AVX-512: fp32 runs, and says so as a warning; AUTO as information. */
    log_record rec = {0};
    sd_set_log_callback(record, &rec);
    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.precision = SD_PRECISION_BF16;
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), &lp));
    const char *note = NULL;
    CHECK(p && sd_pipeline_precision(p, &note) == SD_PRECISION_FP32 && note,
          "bf16 below AVX-512 runs fp32");
    CHECK(find(&rec, SD_LOG_WARN, "precision bf16: running fp32"), "the fallback is logged as a "
          "warning (%d messages; first: %s)", rec.n, rec.n ? rec.text[0] : "none");
    sd_pipeline_free(p);
    lp.precision = SD_PRECISION_AUTO;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), &lp));
    CHECK(find(&rec, SD_LOG_INFO, "precision auto: running fp32"),
          "AUTO's fallback is information");
    sd_pipeline_free(p);
    /* int8 runs at any level; without AVX2 the portable kernel does, with a warning. */
    lp.precision = SD_PRECISION_INT8;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), &lp));
    note = NULL;
    CHECK(p && sd_pipeline_precision(p, &note) == SD_PRECISION_INT8 && note && strstr(note, "portable"),
          "int8 at the generic level: %s", note ? note : "no note");
    CHECK(find(&rec, SD_LOG_WARN, "precision int8: no AVX2"), "the slow int8 kernel is a warning");
    sd_pipeline_free(p);
    p = NULL;
    lp.precision = (sd_precision)(SD_PRECISION_INT8 + 1);
    CHECK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), &lp) == SD_ERR_ARG && !p &&
              strstr(sd_last_error(), "unknown precision 4"),
          "an unknown precision is refused naming it: %s", sd_last_error());

    /* No callback: nothing arrives. */
    const int before = rec.n;
    sd_set_log_callback(NULL, NULL);
    lp.precision = SD_PRECISION_BF16;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), &lp));
    CHECK(rec.n == before, "no messages without a callback (%d new)", rec.n - before);
    sd_pipeline_free(p);

    CHECK_OK(sd_set_kernel_isa(NULL));
    CHECK(!strcmp(sd_kernel_isa(), kern_isa_name(kern_isa_supported())), "NULL restores the best "
          "level: %s", sd_kernel_isa());
}

static void test_schedulers(void) {
    const int n = sd_scheduler_count();
    int euler = 0;
    for (int i = 0; i < n; i++) {
        const sd_scheduler_info *s = sd_scheduler_get(i);
        CHECK(s && s->class_name && s->aliases && s->description, "scheduler %d is described", i);
        if (s && !strcmp(s->class_name, "EulerDiscreteScheduler")) euler++;
    }
    CHECK(n >= 10 && euler == 1, "%d schedulers, EulerDiscreteScheduler listed once", n);
    CHECK(sd_scheduler_get(-1) == NULL && sd_scheduler_get(n) == NULL, "outside the list: NULL");
    CHECK_OK(sd_scheduler_check("euler", NULL));
    CHECK_OK(sd_scheduler_check("DPMSolverMultistepScheduler", "{\"use_karras_sigmas\": true}"));
    sd_status st = sd_scheduler_check("nope", NULL);
    CHECK(st != SD_OK && strstr(sd_last_error(), "nope"), "an unknown name: %s", sd_last_error());
    st = sd_scheduler_check("euler", "[1, 2]");
    CHECK(st == SD_ERR_ARG, "options that are not an object: %s", sd_last_error());
}

static void test_files(void) {
    float data[2 * 4 * 3 * 5];
    for (int i = 0; i < 2 * 4 * 3 * 5; i++) data[i] = (float)i * 0.25f - 3.0f;
    const sd_latents l = {data, 2, 4, 3, 5};
    CHECK_OK(sd_latents_write(tmp("l.safetensors"), &l));
    sd_latents back = {0};
    CHECK_OK(sd_latents_read(tmp("l.safetensors"), NULL, &back));
    CHECK(back.n == 2 && back.c == 4 && back.h == 3 && back.w == 5 && back.data &&
          !memcmp(back.data, data, sizeof data), "latents read back as written");
    sd_latents_free(&back);
    const sd_status st = sd_latents_read(tmp("l.safetensors"), "other", &back);
    CHECK(st == SD_ERR_TENSOR && strstr(sd_last_error(), "'latents'") && !back.data,
          "a missing tensor lists the file's: %s", sd_last_error());

    sd_image img = {0}, got = {0};
    CHECK_OK(sd_image_alloc(&img, 5, 3));
    for (int i = 0; img.rgb && i < 5 * 3 * 3; i++) img.rgb[i] = (uint8_t)(i * 17);
    const char *text[2] = {"parameters", "a test"};
    CHECK_OK(sd_image_write(tmp("i.png"), &img, text, 1, 90));
    CHECK_OK(sd_image_read(tmp("i.png"), &got));
    CHECK(got.width == 5 && got.height == 3 && got.rgb && !memcmp(got.rgb, img.rgb, 45),
          "a PNG reads back as written");
    CHECK(sd_image_write(tmp("i.bmp"), &img, NULL, 0, 90) == SD_ERR_ARG, "an unknown extension");
    sd_image_free(&img), sd_image_free(&got);
    CHECK(img.rgb == NULL && img.width == 0, "sd_image_free empties the image");
}

/* The VAE alone decodes a generation's final latents into the generation's image, bit for bit. */
static void test_vae(void) {
    sd_pipeline *p = NULL;
    CHECK_OK(sd_pipeline_load(&p, fixture("sd15-tiny/pipeline"), NULL));
    if (!p) return;
    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = "a blue sphere";
    g.width = 64, g.height = 48;
    g.steps = 2;
    g.seed = 9;
    sd_result r;
    CHECK_OK(sd_generate(p, &g, &r));
    sd_pipeline_free(p);
    sd_vae *v = NULL;
    sd_vae_params vp;
    sd_vae_params_init(&vp);
    vp.decoder_only = true;
    CHECK_OK(sd_vae_load(&v, fixture("sd15-tiny/pipeline"), &vp)); /* the model folder */
    if (!v || r.n_images != 1) return;
    CHECK(sd_vae_scale_factor(v) == 8 && sd_vae_latent_channels(v) == 4, "sd15-tiny's VAE: x%d, %d "
          "channels", sd_vae_scale_factor(v), sd_vae_latent_channels(v));
    const sd_latents z = {r.latents, r.latent_shape[0], r.latent_shape[1], r.latent_shape[2],
                          r.latent_shape[3]};
    log_record rec = {0};
    sd_set_log_callback(record, &rec);
    sd_image img = {0};
    CHECK_OK(sd_vae_decode(v, &z, NULL, &img)); /* defaults: scaled latents, tiles by size */
    sd_set_log_callback(NULL, NULL);
    CHECK(img.width == 64 && img.height == 48 && img.rgb &&
          !memcmp(img.rgb, r.images[0].rgb, (size_t)64 * 48 * 3),
          "sd_vae_decode of the result's latents is the result's image");
    CHECK(find(&rec, SD_LOG_INFO, "tile auto") && find(&rec, SD_LOG_INFO, "untiled"),
          "the tile choice is logged: %s", rec.n ? rec.text[0] : "nothing");
    const sd_latents three = {r.latents, 1, 3, 8, 8};
    sd_image none = {0};
    const sd_status st = sd_vae_decode(v, &three, NULL, &none);
    CHECK(st == SD_ERR_TENSOR && strstr(sd_last_error(), "3 channels"), "3-channel latents: %s",
          sd_last_error());
    sd_latents enc = {0};
    CHECK(sd_vae_encode(v, &img, true, &enc) != SD_OK && !enc.data, "decoder_only: no encoder");
    sd_vae_free(v);

    CHECK_OK(sd_vae_load(&v, fixture("sd15-tiny/pipeline/vae"), NULL)); /* the VAE folder */
    if (v) {
        CHECK_OK(sd_vae_encode(v, &img, false, &enc));
        CHECK(enc.n == 1 && enc.c == 4 && enc.h == 6 && enc.w == 8, "encoded [%d][%d][%d][%d]",
              enc.n, enc.c, enc.h, enc.w);
        sd_latents_free(&enc);
        sd_image odd = {0};
        CHECK_OK(sd_image_alloc(&odd, 20, 16));
        CHECK(sd_vae_encode(v, &odd, true, &enc) == SD_ERR_ARG &&
                  strstr(sd_last_error(), "multiple of 8"),
              "a side that is not a multiple of 8: %s", sd_last_error());
        sd_image_free(&odd);
        sd_vae_free(v);
    }
    const sd_status missing = sd_vae_load(&v, tmp("no-model"), NULL);
    CHECK(missing == SD_ERR_IO && v == NULL && strstr(sd_last_error(), "no-model"), "a missing "
          "folder: %s", sd_last_error());
    sd_image_free(&img);
    sd_result_free(&r);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s", test_output_dir("api"));
    test_status_and_version();
    test_struct_size();
    test_paging_flags();
    test_log_and_isa();
    test_schedulers();
    test_files();
    test_vae();
    return test_summary();
}

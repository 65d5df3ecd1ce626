/* Image I/O: the float -> 8-bit rule against every fixture PNG, PNG and JPEG round trips, text
 * chunks, and bad files / bad writes (errors that name the file, nothing left behind). Colour
 * types, bit depths and EXIF orientation are in test_image_formats.c. */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../core/image.h"
#include "test.h"

static char tmpdir[256];

static const char *tmp(const char *name) { return test_path(tmpdir, name); }

static uint8_t *read_bytes(const char *path, size_t *len) {
    char *buf = NULL;
    if (sd_read_file(path, &buf, len) != SD_OK) CHECK(0, "read %s: %s", path, sd_last_error());
    return (uint8_t *)buf;
}

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(data, 1, len, fp) != len) CHECK(0, "cannot write %s", path);
    if (fp) fclose(fp);
}

/* Any "<name>.tmp-<pid>" left in the scratch folder means a failed write did not clean up. */
static int temp_files_left(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp-") != NULL;
    if (d) closedir(d);
    return n;
}

static void random_image(sd_image *img, int w, int h, uint64_t seed) {
    CHECK_OK(image_alloc(img, w, h));
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        img->rgb[i] = (uint8_t)(seed >> 56);
    }
}

/* ---- the float -> 8-bit rule ---- */

/* Each <run>-<k>.png is image[k] of <run>.safetensors as (image * 255).round(). The VAE output
 * x satisfies image = (x/2 + 0.5).clamp(0, 1), so feeding 2*image - 1 to image_from_float must
 * give the PNG back, except where the float round trip (2t - 1)/2 + 0.5 != t moved a value across
 * a rounding boundary: such pixels may be one level off, any other difference is a bug. */
static void check_fixture_png(const char *dir, const char *name, int *covered) {
    char run[256], path[768], st_name[320];
    snprintf(run, sizeof run, "%s", name);
    run[strlen(run) - 4] = '\0';
    char *dash = strrchr(run, '-');
    if (!dash) return;
    *dash = '\0';
    const char *suffix = dash + 1;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(st_name, sizeof st_name, "sd15-tiny/expected/%s.safetensors", run);
    int64_t shape[8];
    float *t = fixture_tensor(st_name, "image", shape, NULL);
    sd_image img;
    CHECK_OK(image_read(path, &img));
    if (!t || !img.rgb) goto done;
    int64_t b = shape[0], h = shape[1], w = shape[2];
    CHECK(img.width == w && img.height == h, "%s: %dx%d, fixture image %lldx%lld", name, img.width,
          img.height, (long long)w, (long long)h);
    if (img.width != w || img.height != h) goto done;
    size_t n = (size_t)w * h * 3;
    char *end;
    long k = strtol(suffix, &end, 10);
    if (*end != '\0') {
        /* An input image of an img2img/inpaint run: its size is the run's output size. */
        if (strcmp(suffix, "mask_image") == 0) {
            int grey = 1, levels = 0, seen[256] = {0};
            for (size_t i = 0; i < n; i += 3) {
                grey &= img.rgb[i] == img.rgb[i + 1] && img.rgb[i] == img.rgb[i + 2];
                levels += !seen[img.rgb[i]]++;
            }
            CHECK(grey && levels >= 2, "%s: grey mask expands to R=G=B (%d levels)", name, levels);
        }
        ++*covered;
        goto done;
    }
    CHECK(k >= 0 && k < b, "%s: batch index %ld of %lld", name, k, (long long)b);
    if (k < 0 || k >= b) goto done;
    const float *tk = t + (size_t)k * n;
    float *x = malloc(n * sizeof *x);
    uint8_t *q = malloc(n);
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * tk[i] - 1.0f;
    image_from_float(x, (int)w, (int)h, q);
    /* Ties below an even level are where numpy's rounding differs from rounding half up. */
    int off_by_one = 0, unexplained = 0, ties = 0, even_ties = 0;
    for (size_t i = 0; i < n; i++) {
        float scaled = (float)((double)tk[i] * 255.0);
        if (scaled == floorf(scaled) + 0.5f) ties++, even_ties += (int)floorf(scaled) % 2 == 0;
        if (q[i] == img.rgb[i]) continue;
        int moved = x[i] * 0.5f + 0.5f != tk[i];
        if (abs(q[i] - img.rgb[i]) == 1 && moved)
            off_by_one++;
        else
            unexplained++;
    }
    printf("%-30s %lldx%lld: %d pixels one level off after the 2t-1 round trip; %d exact ties "
           "(%d below an even level)\n",
           name, (long long)w, (long long)h, off_by_one, ties, even_ties);
    CHECK(unexplained == 0, "%s: %d pixels differ beyond the float round trip", name, unexplained);
    CHECK(off_by_one <= 8, "%s: %d one-level differences is more than a handful", name, off_by_one);
    ++*covered;
    free(x);
    free(q);
done:
    free(t);
    image_free(&img);
}

static int is_png_name(const struct dirent *e) {
    size_t n = strlen(e->d_name);
    return n > 4 && strcmp(e->d_name + n - 4, ".png") == 0;
}

static void test_fixture_pngs(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s", fixture("sd15-tiny/expected"));
    struct dirent **list;
    int n = scandir(dir, &list, is_png_name, alphasort), covered = 0;
    CHECK(n >= 18, "%s: %d PNG fixtures", dir, n);
    for (int i = 0; i < n; i++) {
        check_fixture_png(dir, list[i]->d_name, &covered);
        free(list[i]);
    }
    if (n > 0) free(list);
    CHECK(covered == n, "%d of %d fixture PNGs checked", covered, n);
}

/* numpy rounds halves to even. Find floats v in [0.5, 1] whose float32 product v * 255 is exactly
 * k + 0.5 and check that 2v - 1 (exact there) comes out as the even neighbour. */
static void test_rounding(void) {
    /* One value per channel: 7 values fill a 7x1 image's red channels, the rest is zero. */
    float edge_in[21] = {-1.0f, 1.0f, -3.0f, 3.0f, NAN, 0.0f, -INFINITY};
    uint8_t edge_out[21], edge_want[21] = {0, 255, 0, 255, 0, 128, 0};
    for (int i = 7; i < 21; i++) edge_want[i] = 128;
    image_from_float(edge_in, 7, 1, edge_out);
    for (int i = 0; i < 21; i++)
        CHECK(edge_out[i] == edge_want[i], "from_float(%g) = %d, want %d", edge_in[i], edge_out[i],
              edge_want[i]);
    int found = 0, right = 0;
    for (int k = 128; k < 255; k++) {
        float v = (float)((k + 0.5) / 255.0);
        for (int s = 0; s < 64; s++) v = nextafterf(v, 0.0f);
        for (int s = 0; s < 128; s++, v = nextafterf(v, 2.0f)) {
            if ((float)((double)v * 255.0) != (float)(k + 0.5)) continue;
            float x = 2.0f * v - 1.0f, px[3] = {x, x, x};
            uint8_t got[3];
            image_from_float(px, 1, 1, got);
            found++;
            right += got[0] == (k % 2 == 0 ? k : k + 1);
            break;
        }
    }
    printf("ties k+0.5 found for %d of 127 levels, %d rounded to even\n", found, right);
    CHECK(found >= 60 && right == found, "ties to even: %d of %d", right, found);

    /* Every level as one grey pixel of a 256x1 image. */
    uint8_t levels[256 * 3], back[256 * 3];
    float x[256 * 3];
    for (int i = 0; i < 256 * 3; i++) levels[i] = (uint8_t)(i / 3);
    image_to_float(levels, 256, 1, x);
    int close = 1;
    for (int i = 0; i < 256 * 3; i++) close &= fabs(x[i] - (2.0 * (i / 3) / 255.0 - 1.0)) < 1.2e-7;
    CHECK(close && x[0] == -1.0f && x[255 * 3] == 1.0f, "to_float: v/255*2-1 (x[0]=%g, x[255]=%g)",
          x[0], x[255 * 3]);
    image_from_float(x, 256, 1, back);
    CHECK(memcmp(levels, back, sizeof back) == 0, "from_float(to_float(v)) == v for every level");
}

/* ---- PNG writing and reading ---- */

static void test_png_roundtrip(void) {
    sd_image a, b, got;
    random_image(&a, 37, 23, 1);
    random_image(&b, 10, 7, 2);
    CHECK_OK(image_write(tmp("rt.png"), &a, NULL, 0, 0));
    CHECK_OK(image_read(tmp("rt.png"), &got));
    CHECK(got.width == 37 && got.height == 23 && memcmp(got.rgb, a.rgb, 37 * 23 * 3) == 0,
          "PNG round trip is exact");
    image_free(&got);
    /* Overwriting replaces the file whole, here with a smaller image. */
    CHECK_OK(image_write(tmp("rt.png"), &b, NULL, 0, 0));
    CHECK_OK(image_read(tmp("rt.png"), &got));
    CHECK(got.width == 10 && got.height == 7 && memcmp(got.rgb, b.rgb, 10 * 7 * 3) == 0,
          "overwrite replaces the image");
    image_free(&got);
    CHECK_OK(image_write(tmp("UPPER.PNG"), &a, NULL, 0, 0));
    CHECK_OK(image_read(tmp("UPPER.PNG"), &got));
    CHECK(got.rgb && memcmp(got.rgb, a.rgb, 37 * 23 * 3) == 0, ".PNG is PNG");
    image_free(&got);
    CHECK(temp_files_left() == 0, "no temporary files after successful writes");
    image_free(&a);
    image_free(&b);
}

static int contains(const uint8_t *data, size_t len, const char *needle, size_t n) {
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(data + i, needle, n) == 0) return 1;
    return 0;
}

static void test_png_text(void) {
    sd_image a;
    random_image(&a, 8, 8, 3);
    const char *params = "a lighthouse at dawn, watercolor\nNegative prompt: blurry\nSteps: 20, "
                         "Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512";
    const char *utf8 = "caf\xc3\xa9 \xe2\x98\x95 \xe6\x97\xa5\xe6\x9c\xac";
    const char *text[4] = {"parameters", params, "Comment", utf8};
    CHECK_OK(image_write(tmp("text.png"), &a, text, 2, 0));
    char *v = NULL;
    CHECK_OK(image_read_png_text(tmp("text.png"), "parameters", &v));
    CHECK(v && strcmp(v, params) == 0, "parameters read back: '%s'", v ? v : "(null)");
    free(v);
    CHECK_OK(image_read_png_text(tmp("text.png"), "Comment", &v));
    CHECK(v && strcmp(v, utf8) == 0, "UTF-8 text read back: '%s'", v ? v : "(null)");
    free(v);
    CHECK_OK(image_read_png_text(tmp("text.png"), "Software", &v));
    CHECK(v == NULL, "absent key gives NULL");
    free(v);
    /* A1111 and ComfyUI look for a tEXt chunk named "parameters". */
    size_t len;
    uint8_t *raw = read_bytes(tmp("text.png"), &len);
    CHECK(raw && contains(raw, len, "tEXtparameters\0", 15), "ASCII text is a tEXt chunk");
    CHECK(raw && contains(raw, len, "iTXtComment\0", 12), "non-ASCII text is an iTXt chunk");
    free(raw);

    const char *bad_keys[4] = {"", " lead", "two  spaces", "caf\xc3\xa9"};
    for (int i = 0; i < 4; i++) {
        const char *t[2] = {bad_keys[i], "x"};
        sd_status st = image_write(tmp("badkey.png"), &a, t, 1, 0);
        CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "badkey.png"), "bad key '%s' refused: %s",
              bad_keys[i], sd_last_error());
    }
    const char *bad_value[2] = {"k", "\xff\xfe not UTF-8"};
    CHECK(image_write(tmp("badkey.png"), &a, bad_value, 1, 0) == SD_ERR_ARG &&
              strstr(sd_last_error(), "'k'"),
          "invalid UTF-8 refused: %s", sd_last_error());
    CHECK(!sd_file_exists(tmp("badkey.png")), "refused writes create no file");
    CHECK_OK(image_write(tmp("text.jpg"), &a, NULL, 0, 90));
    CHECK(image_read_png_text(tmp("text.jpg"), "parameters", &v) == SD_ERR_FORMAT && !v,
          "PNG text of a JPEG is an error: %s", sd_last_error());
    image_free(&a);
}

/* ---- JPEG ---- */

static void test_jpeg(void) {
    sd_image a, got;
    CHECK_OK(image_alloc(&a, 64, 48));
    for (int y = 0; y < 48; y++)
        for (int x = 0; x < 64; x++) {
            uint8_t *p = a.rgb + (y * 64 + x) * 3;
            p[0] = (uint8_t)(x * 4), p[1] = (uint8_t)(y * 5), p[2] = (uint8_t)(128 + (x - y));
        }
    CHECK_OK(image_write(tmp("q95.jpg"), &a, NULL, 0, 95));
    CHECK_OK(image_read(tmp("q95.jpg"), &got));
    if (got.rgb && got.width == 64 && got.height == 48) {
        int max = 0;
        double sum = 0;
        for (int i = 0; i < 64 * 48 * 3; i++) {
            int d = abs(got.rgb[i] - a.rgb[i]);
            max = d > max ? d : max;
            sum += d;
        }
        printf("JPEG q95 round trip: mean abs diff %.3f, max %d levels\n", sum / (64 * 48 * 3),
               max);
        CHECK(sum / (64 * 48 * 3) < 1.5 && max <= 12, "JPEG q95 close to the original");
    } else {
        CHECK(0, "JPEG round trip size %dx%d", got.width, got.height);
    }
    image_free(&got);
    CHECK_OK(image_write(tmp("q10.JPEG"), &a, NULL, 0, 10));
    CHECK_OK(image_write(tmp("q95.Jpg"), &a, NULL, 0, 95));
    size_t n95, n10;
    free(read_bytes(tmp("q95.jpg"), &n95));
    free(read_bytes(tmp("q10.JPEG"), &n10));
    CHECK(n10 < n95, "quality 10 (%zu bytes) smaller than 95 (%zu)", n10, n95);
    const int bad_q[2] = {0, 101};
    for (int i = 0; i < 2; i++) {
        sd_status st = image_write(tmp("badq.jpg"), &a, NULL, 0, bad_q[i]);
        CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), "badq.jpg"), "quality %d refused: %s",
              bad_q[i], sd_last_error());
    }
    CHECK(!sd_file_exists(tmp("badq.jpg")), "refused JPEG write creates no file");
    image_free(&a);
}

/* ---- bad files ---- */

static void expect_read_error(const char *what, const char *path, sd_status want,
                              const char *needle) {
    sd_image img = {1, 1, (uint8_t *)&img};
    sd_status st = image_read(path, &img);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    CHECK(st == want && strstr(sd_last_error(), base) &&
              (!needle || strstr(sd_last_error(), needle)),
          "%s: got %s '%s', want %s naming %s%s%s", what, sd_status_name(st), sd_last_error(),
          sd_status_name(want), base, needle ? " and " : "", needle ? needle : "");
    CHECK(img.rgb == NULL && img.width == 0 && img.height == 0, "%s: image left empty", what);
    if (st == SD_OK) image_free(&img);
}

static void test_read_errors(void) {
    expect_read_error("missing file", tmp("nothing-here.png"), SD_ERR_IO, NULL);
    expect_read_error("a folder", tmpdir, SD_ERR_IO, NULL);
    write_bytes(tmp("empty.png"), "", 0);
    expect_read_error("empty file", tmp("empty.png"), SD_ERR_FORMAT, NULL);
    write_bytes(tmp("notes.png"), "just some text\n", 15);
    expect_read_error("text file", tmp("notes.png"), SD_ERR_FORMAT, "not a PNG or JPEG");
    write_bytes(tmp("garbage.png"), "\x89PNG\r\n\x1a\nthis is not a chunk at all....", 38);
    expect_read_error("PNG magic then garbage", tmp("garbage.png"), SD_ERR_FORMAT, "PNG");
    write_bytes(tmp("garbage.jpg"), "\xff\xd8\xff\x01garbage garbage garbage", 27);
    expect_read_error("JPEG magic then garbage", tmp("garbage.jpg"), SD_ERR_FORMAT, "JPEG");

    sd_image a;
    random_image(&a, 64, 64, 4); /* noise: a long IDAT, a long entropy-coded segment */
    CHECK_OK(image_write(tmp("good.png"), &a, NULL, 0, 0));
    CHECK_OK(image_write(tmp("good.jpg"), &a, NULL, 0, 90));
    image_free(&a);
    size_t len;
    uint8_t *png = read_bytes(tmp("good.png"), &len);
    /* Cut inside IHDR, right after it, inside IDAT, before IEND, and by one byte. */
    size_t cuts[5] = {20, 33, len / 2, len - 12, len - 1};
    for (int i = 0; png && i < 5; i++) {
        write_bytes(tmp("cut.png"), png, cuts[i]);
        char what[64];
        snprintf(what, sizeof what, "PNG truncated to %zu of %zu bytes", cuts[i], len);
        expect_read_error(what, tmp("cut.png"), SD_ERR_FORMAT, "truncated");
    }
    if (png) {
        png[20] ^= 0x01; /* IHDR width: its CRC no longer matches */
        write_bytes(tmp("crc.png"), png, len);
        expect_read_error("PNG with a bad IHDR CRC", tmp("crc.png"), SD_ERR_FORMAT, "CRC");
        png[20] ^= 0x01;
        png[len / 2] ^= 0x55; /* inside IDAT */
        write_bytes(tmp("crc.png"), png, len);
        expect_read_error("PNG with corrupt image data", tmp("crc.png"), SD_ERR_FORMAT, NULL);
    }
    free(png);

    uint8_t *jpg = read_bytes(tmp("good.jpg"), &len);
    size_t jcuts[3] = {100, len / 2, len - 2};
    for (int i = 0; jpg && i < 3; i++) {
        write_bytes(tmp("cut.jpg"), jpg, jcuts[i]);
        char what[64];
        snprintf(what, sizeof what, "JPEG truncated to %zu of %zu bytes", jcuts[i], len);
        expect_read_error(what, tmp("cut.jpg"), SD_ERR_FORMAT, "truncated");
    }
    for (size_t i = 2; jpg && i + 4 < len; i++) {
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0) { /* SOF0: the sample precision follows */
            jpg[i + 4] = 7;
            write_bytes(tmp("sof.jpg"), jpg, len);
            expect_read_error("JPEG with a bad frame header", tmp("sof.jpg"), SD_ERR_FORMAT,
                              "precision");
            break;
        }
    }
    free(jpg);
}

/* ---- bad writes ---- */

static void test_write_errors(void) {
    sd_image a;
    random_image(&a, 6, 4, 5);
    const char *bad_ext[4] = {"out.bmp", "noext", "out.png.txt", "out."};
    for (int i = 0; i < 4; i++) {
        sd_status st = image_write(tmp(bad_ext[i]), &a, NULL, 0, 90);
        CHECK(st == SD_ERR_ARG && strstr(sd_last_error(), bad_ext[i]), "%s refused: %s", bad_ext[i],
              sd_last_error());
        CHECK(!sd_file_exists(tmp(bad_ext[i])), "%s not created", bad_ext[i]);
    }
    sd_status st = image_write(tmp("no-such-dir/out.png"), &a, NULL, 0, 0);
    CHECK(st == SD_ERR_IO && strstr(sd_last_error(), "no-such-dir"), "missing folder named: %s",
          sd_last_error());
    CHECK(!sd_dir_exists(tmp("no-such-dir")), "missing folder not created");

    /* The rename over a folder fails after the data is written: the temporary must go. */
    mkdir(tmp("taken.png"), 0755);
    st = image_write(tmp("taken.png"), &a, NULL, 0, 0);
    CHECK(st == SD_ERR_IO && strstr(sd_last_error(), "taken.png"), "rename failure: %s",
          sd_last_error());
    CHECK(temp_files_left() == 0, "no temporary file left after failed writes");

    /* A refused write leaves an existing file as it was. */
    CHECK_OK(image_write(tmp("keep.jpg"), &a, NULL, 0, 80));
    size_t n0, n1;
    uint8_t *before = read_bytes(tmp("keep.jpg"), &n0);
    CHECK(image_write(tmp("keep.jpg"), &a, NULL, 0, 101) == SD_ERR_ARG, "quality 101 refused");
    uint8_t *after = read_bytes(tmp("keep.jpg"), &n1);
    CHECK(before && after && n0 == n1 && memcmp(before, after, n0) == 0, "existing file intact");
    free(before);
    free(after);

    /* A write that fails part-way (here: a file size limit, as a full disk would) leaves the
     * existing file as it was and no temporary behind, through both encoders. */
    sd_image big;
    random_image(&big, 256, 256, 6); /* noise: ~200 KB as PNG, ~100 KB as JPEG */
    const char *full[2] = {"full.png", "full.jpg"};
    for (int i = 0; i < 2; i++) {
        CHECK_OK(image_write(tmp(full[i]), &a, NULL, 0, 90));
        uint8_t *old = read_bytes(tmp(full[i]), &n0);
        struct rlimit saved, lim;
        getrlimit(RLIMIT_FSIZE, &saved);
        lim = saved;
        lim.rlim_cur = 20000;
        void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
        setrlimit(RLIMIT_FSIZE, &lim);
        st = image_write(tmp(full[i]), &big, NULL, 0, 100);
        setrlimit(RLIMIT_FSIZE, &saved);
        signal(SIGXFSZ, prev);
        CHECK(st == SD_ERR_IO && strstr(sd_last_error(), full[i]), "%s: failed write: %s", full[i],
              sd_last_error());
        uint8_t *now = read_bytes(tmp(full[i]), &n1);
        CHECK(old && now && n0 == n1 && memcmp(old, now, n0) == 0, "%s: old file intact", full[i]);
        free(old);
        free(now);
    }
    CHECK(temp_files_left() == 0, "no temporary file left after a failed write");
    image_free(&big);

    sd_image none = {0}, zero = {0, 4, a.rgb};
    CHECK(image_write(tmp("none.png"), &none, NULL, 0, 0) == SD_ERR_ARG, "empty image refused");
    CHECK(image_write(tmp("none.png"), &zero, NULL, 0, 0) == SD_ERR_ARG, "zero width refused");
    CHECK(image_write(tmp("none.png"), NULL, NULL, 0, 0) == SD_ERR_ARG, "NULL image refused");
    sd_image wide;
    CHECK_OK(image_alloc(&wide, 65501, 1));
    CHECK(image_write(tmp("wide.jpg"), &wide, NULL, 0, 90) == SD_ERR_ARG &&
              strstr(sd_last_error(), "65500"),
          "JPEG wider than 65500 refused: %s", sd_last_error());
    image_free(&wide);
    CHECK(image_alloc(&wide, 0, 5) == SD_ERR_ARG && wide.rgb == NULL, "image_alloc(0, 5) refused");
    CHECK(image_alloc(&wide, 65536, 1) == SD_ERR_ARG, "image_alloc(65536, 1) refused");
    CHECK(temp_files_left() == 0, "no temporary files at the end");
    image_free(&a);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sd-test-image-%d", (int)getpid());
    mkdir(tmpdir, 0755);
    test_fixture_pngs();
    test_rounding();
    test_png_roundtrip();
    test_png_text();
    test_jpeg();
    test_read_errors();
    test_write_errors();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}

/* The fuzz harnesses (tests/fuzz/) in the normal build: every committed seed
 * (tests/fuzz/corpus/<harness>/) and every input a fuzzer once crashed on
 * (tests/fuzz/regress/<harness>/, each fixed since) goes through the same entry point libFuzzer
 * calls. A crash, hang or sanitizer report (under make test-asan) fails the suite; this also
 * keeps the harnesses compiling where clang's libFuzzer is absent. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/fileutil.h"
#include "fuzz/fuzz.h"
#include "test.h"

#define DECLARE(name) int fuzz_entry_##name(const uint8_t *data, size_t size);
FUZZ_HARNESSES(DECLARE)

typedef struct {
    const char *name;
    int (*entry)(const uint8_t *, size_t);
} harness;

#define ENTRY(name) {#name, fuzz_entry_##name},
static const harness g_harnesses[] = {FUZZ_HARNESSES(ENTRY)};
static const int g_n = (int)(sizeof(g_harnesses) / sizeof(g_harnesses[0]));

static const harness *find_harness(const char *name) {
    for (int i = 0; i < g_n; i++)
        if (!strcmp(g_harnesses[i].name, name)) return &g_harnesses[i];
    return NULL;
}

static uint8_t *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            uint8_t *b = realloc(buf, cap *= 2);
            if (!b) free(buf);
            buf = b;
        }
    }
    fclose(f);
    *size = n;
    return buf;
}

/* Replays every file of root/<harness>/ (root/ itself may be absent: no regressions yet); each
 * folder must belong to a harness. Returns the inputs replayed. */
static int replay_tree(const char *root) {
    char dir[1024], path[2048];
    snprintf(dir, sizeof dir, "%s/%s", fuzz_root(), root);
    DIR *top = opendir(dir);
    if (!top) return 0;
    int count = 0;
    for (struct dirent *h; (h = readdir(top));) {
        if (h->d_name[0] == '.') continue;
        const harness *hn = find_harness(h->d_name);
        CHECK(hn != NULL, "%s/%s: no harness of that name in FUZZ_HARNESSES", root, h->d_name);
        if (!hn) continue;
        snprintf(path, sizeof path, "%s/%s", dir, h->d_name);
        DIR *d = opendir(path);
        for (struct dirent *e; d && (e = readdir(d));) {
            if (e->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "%s/%s/%s", dir, h->d_name, e->d_name);
            size_t size = 0;
            uint8_t *data = read_all(path, &size);
            CHECK(data != NULL, "%s: unreadable", path);
            if (!data) continue;
            CHECK(hn->entry(data, size) == 0, "%s: the harness returned non-zero", path);
            free(data);
            count++;
        }
        if (d) closedir(d);
    }
    closedir(top);
    return count;
}

int main(void) {
    /* Every harness has seeds: a harness whose corpus folder went missing would test nothing. */
    for (int i = 0; i < g_n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/tests/fuzz/corpus/%s", fuzz_root(), g_harnesses[i].name);
        DIR *d = opendir(path);
        CHECK(d != NULL, "%s: no seed corpus for harness %s", path, g_harnesses[i].name);
        if (d) closedir(d);
    }
    int seeds = replay_tree("tests/fuzz/corpus");
    int regress = replay_tree("tests/fuzz/regress");
    printf("replayed %d seeds and %d regression inputs through %d harnesses\n", seeds, regress, g_n);
    CHECK(seeds >= 2 * g_n, "only %d seeds for %d harnesses", seeds, g_n);
    return test_summary();
}

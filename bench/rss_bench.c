/* Peak memory of whole runs (issue 19's goals for default runs, issue 8's for the VAE), measured on the command-line tools as child
 * processes: the figure is the child's peak resident set (wait4's ru_maxrss), so it counts
 * everything a user's run holds (weights, mapped files that were read, scratch, libraries).
 *
 *   make bench-memory                  the models made if missing, then this with defaults
 *   build/bench/rss_bench [options]
 *     --cache DIR     the random full-size models (default $SD_BENCH_CACHE, else bench/cache):
 *                     DIR/sd15-f16, DIR/sdxl-f16, DIR/sd3m-f16 and (for the FLUX row)
 *                     DIR/flux-schnell-bf16, as bench/make_model writes them
 *     --bin DIR       where gen and vae-check are (default bin)
 *     --only LIST     rows to run, e.g. sd15-512,vae-2048 (default: every row with a target and
 *                     the three-step SD 1.5 run of the per-step check)
 *     --threads N     passed to the tools (default: theirs, all cores)
 *     --max-mb N      address-space limit of each child (RLIMIT_AS), so that a run too large for
 *                     the machine fails its allocations instead of waking the OOM killer
 *                     (default: the machine's physical memory; 0: none)
 *     --results PATH  where the JSON line is appended (default bench/results.jsonl; "-": nowhere)
 *
 * Rows: default runs (paging, issue 19) with the goals: a 512x512 SD 1.5 generation from
 * the fp16 release (2 steps: the resident set does not grow per step, which the 3-step row
 * checks), a 1024x1024 SDXL generation from an fp16 release (1 step), SD3-medium fp16 without T5
 * at 1024x1024 (1 step), FLUX.1-schnell bf16 with T5 at 1024x1024 (1 step; 34 GB of weights, so
 * only with --only); the SD 1.5 and SDXL ones again with --keep-resident, what paging saves; and
 * a 2048x2048 SD 1.5 VAE decode of a random [1,4,256,256] latent (vae-check --tile auto: only
 * the decode). Each prints peak RSS, wall
 * seconds, the target and pass/fail; a child that fails (an error, a signal, a missing model) is
 * reported with its exit status and the last line it wrote, and counts as a fail. The last line
 * printed is `BENCH_MEM {json}`. Exit status 0 once the table is printed, whatever the rows say
 * (a report, not a test); 1 when the benchmark itself cannot run; the children's logs are kept
 * in /tmp when one failed. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../core/fileutil.h"
#include "../core/safetensors.h"
#include "sysinfo.h"

typedef struct {
    const char *name, *what;
    double target_mb; /* 0: no target (a check row) */
    bool by_default;
} row_spec;

/* Goals in MB: issue 19's (2.5 GB = 2560 MB, ...). Rows 0 and 1 are the per-step check's pair. */
static const row_spec ROWS[] = {
    {"sd15-512", "SD 1.5 fp16 release, 512x512, 2 steps, default run", 700, true},
    {"sd15-512-3step", "the same, 3 steps (RSS must not grow per step)", 0, true},
    {"sd15-512-resident", "SD 1.5 fp16 release, 512x512, 2 steps, --keep-resident", 0, true},
    /* Issue 20's goal: 450 MB for the whole run with a Q8_0 UNet (make_gguf's file of the fp16
     * UNet: Linear weights Q8_0, 3x3 convolutions F16 as the converters leave them). */
    {"sd15-512-q8_0", "SD 1.5, Q8_0 UNet GGUF (--unet), 512x512, 2 steps, default run", 450, true},
    {"sd15-512-q8_0-resident", "the same, --keep-resident", 0, true},
    /* The fp16 release quantized at load (--weights-dtype q8_0: Linear weights Q8_0, anonymous
     * memory, resident; convolutions stay F16 in the mapping and page). */
    {"sd15-512-wq8_0", "SD 1.5 fp16 release, --weights-dtype q8_0, 512x512, 2 steps, default run",
     450, true},
    {"sdxl-1024", "SDXL fp16 release, 1024x1024, 1 step, default run", 2560, true},
    {"sdxl-1024-resident", "SDXL fp16 release, 1024x1024, 1 step, --keep-resident", 0, true},
    {"sd3m-1024", "SD3-medium fp16 release without T5, 1024x1024, 1 step, default run", 5120, true},
    {"flux-1024", "FLUX.1-schnell bf16 release with T5, 1024x1024, 1 step, default run", 12288,
     false},
    {"vae-2048", "SD 1.5 VAE decode 2048x2048 (--tile auto)", 4096, true},
    {"vae-2048-untiled", "SD 1.5 VAE decode 2048x2048 untiled (for comparison)", 0, false},
};
enum { N_ROWS = sizeof ROWS / sizeof *ROWS };

typedef struct {
    bool ran, ok;
    double rss_mb, wall_s, cpu_s;
    char status[640];
} row_result;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* The last non-empty line of a file (a failing tool's error message). */
static void last_line(const char *path, char *out, size_t size) {
    char *text = NULL;
    size_t len = 0;
    out[0] = '\0';
    if (sd_read_file(path, &text, &len) != SD_OK) return;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r')) len--;
    size_t start = len;
    while (start > 0 && text[start - 1] != '\n') start--;
    snprintf(out, size, "%.*s", (int)(len - start), text + start);
    free(text);
}

/* Runs argv with stdout and stderr in log; *res gets its peak RSS, times and status. */
static void run_child(char *const argv[], const char *log, long max_mb, row_result *res) {
    const double t0 = now();
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(res->status, sizeof res->status, "fork failed: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        FILE *fp = freopen(log, "w", stdout);
        if (!fp || dup2(fileno(stdout), 2) < 0) _exit(126);
        if (max_mb > 0) {
            struct rlimit rl = {(rlim_t)max_mb << 20, (rlim_t)max_mb << 20};
            setrlimit(RLIMIT_AS, &rl);
        }
        execv(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    res->ran = true;
    res->wall_s = now() - t0;
    res->rss_mb = (double)ru.ru_maxrss / 1024.0; /* kB on Linux */
    res->cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec * 1e-6;
    char last[160];
    last_line(log, last, sizeof last);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        res->ok = true;
        snprintf(res->status, sizeof res->status, "ok");
    } else if (WIFEXITED(status)) {
        snprintf(res->status, sizeof res->status, "exit %d: %s", WEXITSTATUS(status), last);
    } else if (WIFSIGNALED(status)) {
        snprintf(res->status, sizeof res->status, "killed by signal %d%s: %s", WTERMSIG(status),
                 WTERMSIG(status) == 9 ? " (out of memory?)" : "", last);
    }
}

/* A [1,4,n,n] F32 tensor 'latents' of values with the spread of real latents (std about 1). */
static sd_status write_latents(const char *path, int n) {
    char header[160];
    const size_t count = (size_t)4 * n * n;
    int hl = snprintf(header, sizeof header,
                      "{\"latents\":{\"dtype\":\"F32\",\"shape\":[1,4,%d,%d],\"data_offsets\":[0,%zu]}}", n,
                      n, count * 4);
    while (hl % 8) header[hl++] = ' ';
    float *v = malloc(count * sizeof *v);
    if (!v) return sd_set_error(SD_ERR_NOMEM, "out of memory");
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < count; i++) { /* sum of 4 uniforms: near-normal, std 1 */
        double acc = 0;
        for (int k = 0; k < 4; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            acc += (double)(s >> 11) / 9007199254740992.0 - 0.5;
        }
        v[i] = (float)(acc * sqrt(3.0));
    }
    sd_file_writer w;
    sd_status st = sd_writer_open(&w, path);
    if (st == SD_OK) {
        uint8_t len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hl >> (8 * i));
        sd_writer_put(&w, len8, 8);
        sd_writer_put(&w, header, (size_t)hl);
        sd_writer_put(&w, v, count * sizeof *v);
        st = sd_writer_commit(&w);
    }
    free(v);
    return st;
}

typedef struct {
    const char *cache, *bin, *results, *only;
    int threads;
    long max_mb;
    char tmp[64];
} options;

static bool selected(const options *o, const row_spec *r) {
    if (!o->only) return r->by_default;
    const size_t n = strlen(r->name);
    for (const char *p = o->only; (p = strstr(p, r->name)); p += n)
        if ((p == o->only || p[-1] == ',') && (p[n] == '\0' || p[n] == ',')) return true;
    return false;
}

/* The command line of a row (strings live in buf). */
static int row_argv(const options *o, const row_spec *r, char *argv[32], char buf[8][512]) {
    int n = 0;
    const bool vae = !strncmp(r->name, "vae-", 4), sd15 = !strncmp(r->name, "sd15", 4);
    const char *model = !strncmp(r->name, "sdxl", 4)   ? "sdxl-f16"
                        : !strncmp(r->name, "sd3m", 4) ? "sd3m-f16"
                        : !strncmp(r->name, "flux", 4) ? "flux-schnell-bf16"
                                                       : "sd15-f16";
    snprintf(buf[0], 512, "%s/%s", o->bin, vae ? "vae-check" : "gen");
    snprintf(buf[1], 512, "%s/%s", o->cache, model);
    snprintf(buf[2], 512, "%s/%s.png", o->tmp, r->name);
    snprintf(buf[3], 512, "%d", o->threads);
    snprintf(buf[4], 512, "%s/latents-256.safetensors", o->tmp);
    argv[n++] = buf[0];
    argv[n++] = "-m", argv[n++] = buf[1];
    argv[n++] = "-o", argv[n++] = buf[2];
    if (o->threads > 0) argv[n++] = "--threads", argv[n++] = buf[3];
    if (vae) {
        argv[n++] = "--latents", argv[n++] = buf[4];
        argv[n++] = "--tile", argv[n++] = strstr(r->name, "untiled") ? "0" : "auto";
    } else {
        argv[n++] = "a lighthouse on a cliff at dawn, oil painting";
        argv[n++] = "--seed", argv[n++] = "1";
        argv[n++] = "-W", argv[n++] = sd15 ? "512" : "1024";
        argv[n++] = "-H", argv[n++] = sd15 ? "512" : "1024";
        argv[n++] = "--steps", argv[n++] = !sd15 ? "1" : strstr(r->name, "3step") ? "3" : "2";
        if (strstr(r->name, "resident")) argv[n++] = "--keep-resident";
        if (strstr(r->name, "-wq8_0")) {
            argv[n++] = "--weights-dtype", argv[n++] = "q8_0";
        } else if (strstr(r->name, "q8_0")) {
            snprintf(buf[5], 512, "%s/sd15-unet-q8_0.gguf", o->cache);
            argv[n++] = "--unet", argv[n++] = buf[5];
        }
    }
    argv[n] = NULL;
    return n;
}

static bool max_given(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--max-mb")) return true;
    return false;
}

static int usage(void) {
    fprintf(stderr, "usage: rss_bench [--cache DIR] [--bin DIR] [--only LIST] [--threads N] "
                    "[--max-mb N] [--results PATH]\n");
    return 2;
}

int main(int argc, char **argv) {
    options o = {.cache = getenv("SD_BENCH_CACHE"), .bin = "bin", .results = "bench/results.jsonl"};
    if (!o.cache || !*o.cache) o.cache = "bench/cache";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        i++;
        if (!strcmp(a, "--cache")) o.cache = v;
        else if (!strcmp(a, "--bin")) o.bin = v;
        else if (!strcmp(a, "--only")) o.only = v;
        else if (!strcmp(a, "--results")) o.results = v;
        else if (!strcmp(a, "--threads")) o.threads = atoi(v);
        else if (!strcmp(a, "--max-mb")) o.max_mb = atol(v);
        else return usage();
        if (o.threads < 0 || o.max_mb < 0) return usage();
    }
    if (!max_given(argc, argv))
        o.max_mb = (long)((double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE) / 1048576.0);
    for (const char *p = o.only; p && *p;) { /* every name of --only is a row */
        const size_t n = strcspn(p, ",");
        bool known = false;
        for (int r = 0; r < N_ROWS; r++) known |= strlen(ROWS[r].name) == n && !strncmp(ROWS[r].name, p, n);
        if (!known) {
            fprintf(stderr, "rss_bench: no row '%.*s' (rows:", (int)n, p);
            for (int r = 0; r < N_ROWS; r++) fprintf(stderr, " %s", ROWS[r].name);
            fprintf(stderr, ")\n");
            return 2;
        }
        p += n + (p[n] == ',');
    }
    snprintf(o.tmp, sizeof o.tmp, "/tmp/rss_bench-XXXXXX");
    if (!mkdtemp(o.tmp)) {
        fprintf(stderr, "rss_bench: cannot create a folder in /tmp: %s\n", strerror(errno));
        return 1;
    }
    char lat[600];
    snprintf(lat, sizeof lat, "%s/latents-256.safetensors", o.tmp);
    if (write_latents(lat, 256) != SD_OK) {
        fprintf(stderr, "rss_bench: %s\n", sd_last_error());
        return 1;
    }
    double load0[3], load1[3];
    sysinfo_loadavg(load0);
    row_result res[N_ROWS] = {{0}};
    printf("%-18s %9s %8s %8s %9s  %s\n", "row", "peak MB", "wall s", "cpu s", "target MB", "result");
    bool all_ran = true;
    for (int r = 0; r < N_ROWS; r++) {
        const row_spec *spec = &ROWS[r];
        if (!selected(&o, spec)) continue;
        char *args[32], buf[8][512], log[600];
        row_argv(&o, spec, args, buf);
        snprintf(log, sizeof log, "%s/%s.log", o.tmp, spec->name);
        if (!sd_dir_exists(buf[1])) {
            snprintf(res[r].status, sizeof res[r].status, "no model at %s (make bench-memory writes it; the FLUX one "
                     "when BENCH_MEM_ARGS names flux-1024)", buf[1]);
        } else {
            run_child(args, log, o.max_mb, &res[r]);
        }
        all_ran &= res[r].ok;
        const bool pass = res[r].ok && (spec->target_mb <= 0 || res[r].rss_mb <= spec->target_mb);
        char target[16] = "-";
        if (spec->target_mb > 0) snprintf(target, sizeof target, "%.0f", spec->target_mb);
        printf("%-18s %9.0f %8.1f %8.1f %9s  %s%s%s\n", spec->name, res[r].rss_mb, res[r].wall_s,
               res[r].cpu_s, target, !res[r].ok ? "FAIL (" : spec->target_mb > 0 ? (pass ? "pass" : "FAIL") : "-",
               res[r].ok ? "" : res[r].status, res[r].ok ? "" : ")");
    }
    sysinfo_loadavg(load1);
    /* RSS per step: the 3-step and 2-step runs differ by what a step adds. Not 2 against 1: the
     * UNet's scratch is consolidated into one block after its first call, which only the second
     * call touches, so a 1-step run never makes it resident. */
    double growth = NAN;
    if (res[0].ok && res[1].ok) {
        growth = round(res[1].rss_mb - res[0].rss_mb) + 0.0; /* + 0.0: no "-0" */
        printf("per-step growth (3 steps vs 2): %.0f MB%s\n", growth,
               fabs(growth) <= 16 ? " (none: the resident set does not grow per step)" : " (GROWS)");
    }

    char utc[32], commit[32], cpu[128];
    bool dirty = false;
    sysinfo_utc_now(utc, sizeof utc);
    sysinfo_git_commit(commit, sizeof commit, &dirty);
    sysinfo_cpu_model(cpu, sizeof cpu);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "bench", "memory");
    cJSON_AddStringToObject(j, "utc", utc);
    cJSON_AddStringToObject(j, "commit", commit);
    cJSON_AddBoolToObject(j, "dirty", dirty);
    cJSON_AddStringToObject(j, "cpu", cpu);
    cJSON_AddNumberToObject(j, "cores", (double)sysconf(_SC_NPROCESSORS_ONLN));
    cJSON_AddNumberToObject(j, "mem_total_mb", round((double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE) / 1048576.0));
    cJSON_AddNumberToObject(j, "threads", o.threads);
    cJSON_AddNumberToObject(j, "child_max_mb", (double)o.max_mb);
    cJSON_AddStringToObject(j, "cache", o.cache);
    if (!isnan(growth)) cJSON_AddNumberToObject(j, "per_step_growth_mb", round(growth));
    cJSON_AddItemToObject(j, "loadavg_start", cJSON_CreateDoubleArray(load0, 3));
    cJSON_AddItemToObject(j, "loadavg_end", cJSON_CreateDoubleArray(load1, 3));
    cJSON *rows = cJSON_AddArrayToObject(j, "rows");
    for (int r = 0; r < N_ROWS; r++) {
        if (!selected(&o, &ROWS[r])) continue;
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "row", ROWS[r].name);
        cJSON_AddStringToObject(x, "what", ROWS[r].what);
        cJSON_AddNumberToObject(x, "peak_rss_mb", round(res[r].rss_mb));
        cJSON_AddNumberToObject(x, "wall_s", round(res[r].wall_s * 10) / 10);
        cJSON_AddNumberToObject(x, "cpu_s", round(res[r].cpu_s * 10) / 10);
        if (ROWS[r].target_mb > 0) {
            cJSON_AddNumberToObject(x, "target_mb", ROWS[r].target_mb);
            cJSON_AddBoolToObject(x, "pass", res[r].ok && res[r].rss_mb <= ROWS[r].target_mb);
        }
        cJSON_AddStringToObject(x, "status", res[r].status[0] ? res[r].status : "not run");
        cJSON_AddItemToArray(rows, x);
    }
    char *line = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (line && strcmp(o.results, "-")) {
        FILE *fp = fopen(o.results, "a");
        if (fp) {
            fprintf(fp, "%s\n", line);
            fclose(fp);
            printf("appended to %s\n", o.results);
        } else {
            fprintf(stderr, "rss_bench: cannot append to %s\n", o.results);
        }
    }
    printf("BENCH_MEM %s\n", line ? line : "{}");
    free(line);
    /* The logs stay when something failed, for a look. */
    if (all_ran) {
        for (int r = 0; r < N_ROWS; r++) {
            char p[600];
            snprintf(p, sizeof p, "%s/%s.log", o.tmp, ROWS[r].name), remove(p);
            snprintf(p, sizeof p, "%s/%s.png", o.tmp, ROWS[r].name), remove(p);
        }
        remove(lat);
        rmdir(o.tmp);
    } else {
        printf("logs in %s\n", o.tmp);
    }
    return 0;
}

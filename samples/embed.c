/* embed.c: the smallest program around the installed library. Loads a diffusers model folder,
 * generates one image with a progress bar on stderr, stops cleanly on Ctrl-C, and writes the image
 * as a binary PPM (no image library needed).
 *
 *     cc samples/embed.c -o embed $(pkg-config --cflags --libs sd)
 *     ./embed -m tests/fixtures/sd15-tiny/pipeline --steps 10 "a lighthouse at dawn" -o out.ppm
 *
 * Exit status: 0 written, 1 failed (the library's message on stderr), 2 bad usage, 3 cancelled
 * (Ctrl-C, or --cancel-after N, which cancels after N steps so the path can be tested). */
#include <sd.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Set by the SIGINT handler; the only thing a handler may safely touch. The progress callback
 * polls it between steps and asks the library to stop. */
static volatile sig_atomic_t interrupted = 0;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

typedef struct {
    int cancel_after; /* steps before cancelling on purpose; 0: never */
    int bar_open;     /* a progress line is on the terminal without its newline */
} progress;

/* Called by sd_generate after each event; a non-zero return cancels the run, which then returns
 * SD_ERR_CANCELLED. */
static int on_event(void *user, const sd_event *ev) {
    progress *pr = user;
    if (ev->kind == SD_EVENT_STEP) {
        enum { WIDTH = 30 };
        const int done = ev->index + 1;
        const int fill = ev->total > 0 ? done * WIDTH / ev->total : WIDTH;
        char bar[WIDTH + 1];
        memset(bar, '#', (size_t)fill);
        memset(bar + fill, '.', (size_t)(WIDTH - fill));
        bar[WIDTH] = '\0';
        fprintf(stderr, "\r[%s] step %d/%d", bar, done, ev->total);
        pr->bar_open = 1;
        if (done == ev->total) {
            fputc('\n', stderr);
            pr->bar_open = 0;
        }
        if (pr->cancel_after > 0 && done >= pr->cancel_after) return 1;
    }
    return interrupted;
}

/* Binary PPM (P6): a header, then the RGB bytes row by row, as sd_image holds them. */
static int write_ppm(const char *path, const sd_image *im) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    const size_t n = (size_t)im->width * (size_t)im->height * 3;
    int ok = fprintf(f, "P6\n%d %d\n255\n", im->width, im->height) > 0 &&
             fwrite(im->rgb, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    return ok;
}

static int usage(void) {
    fprintf(stderr, "usage: embed -m MODEL_DIR [-o OUT.ppm] [--steps N] [--seed N] [--threads N]\n"
                    "             [--cancel-after N] PROMPT\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *model = NULL, *out_path = "out.ppm", *prompt = NULL;
    int steps = 0, threads = 0;
    unsigned long long seed = 42;
    progress pr = {0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const int has_value = i + 1 < argc;
        if (!strcmp(a, "-m") && has_value) model = argv[++i];
        else if (!strcmp(a, "-o") && has_value) out_path = argv[++i];
        else if (!strcmp(a, "--steps") && has_value) steps = atoi(argv[++i]);
        else if (!strcmp(a, "--seed") && has_value) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--threads") && has_value) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--cancel-after") && has_value) pr.cancel_after = atoi(argv[++i]);
        else if (a[0] == '-') return usage();
        else if (!prompt) prompt = a;
        else return usage();
    }
    if (!model || !prompt) return usage();

    signal(SIGINT, on_sigint);

    sd_load_params lp;
    sd_load_params_init(&lp);
    lp.threads = threads;
    sd_pipeline *p = NULL;
    if (sd_pipeline_load(&p, model, &lp) != SD_OK) {
        fprintf(stderr, "embed: %s\n", sd_last_error());
        return 1;
    }

    sd_gen_params g;
    sd_gen_params_init(&g);
    g.prompt = prompt;
    g.seed = seed;
    g.steps = steps;
    g.on_event = on_event;
    g.user = &pr;

    sd_result r;
    const sd_status st = sd_generate(p, &g, &r);
    if (pr.bar_open) fputc('\n', stderr);
    int rc = 0;
    if (st == SD_ERR_CANCELLED) {
        fprintf(stderr, "embed: cancelled, no image written\n");
        rc = 3;
    } else if (st != SD_OK) {
        fprintf(stderr, "embed: %s\n", sd_last_error());
        rc = 1;
    } else {
        if (write_ppm(out_path, &r.images[0])) {
            fprintf(stderr, "embed: wrote %s (%dx%d, %.1f s)\n", out_path, r.images[0].width,
                    r.images[0].height, r.seconds);
        } else {
            perror(out_path);
            rc = 1;
        }
        sd_result_free(&r);
    }
    sd_pipeline_free(p);
    return rc;
}

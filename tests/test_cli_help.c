/* gen --help and --version are complete: every "--option" the help text names is one the parser
 * accepts, every option the parser accepts is in the help text, and --version names the version.
 * The parser's options are probed through cli_parse: a name it does not know gives "unknown
 * option". */
#include <stdlib.h>
#include <string.h>

#include "../cli/common/options.h"
#include "test.h"
#include "tool_run.h"

/* gen's own options (cli/gen.c parses them beside cli_parse's): probed by running gen. */
static const char *const gen_only[] = {"preview", "preview-every"};

/* Whether cli_parse (or gen, for its own options) knows --name (with a value after it when it
 * takes one). */
static int known(const char *name) {
    char opt[80];
    snprintf(opt, sizeof opt, "--%s", name);
    for (size_t i = 0; i < sizeof gen_only / sizeof *gen_only; i++)
        if (!strcmp(name, gen_only[i])) {
            tool_run("gen", opt, "1", NULL);
            return !strstr(tool_output, "unknown option");
        }
    char *argv[] = {"gen", opt, "1", NULL};
    cli_options o;
    const char *err = NULL;
    bool ok = cli_parse(&o, 3, argv, NULL, NULL, &err);
    cli_options_free(&o);
    return ok || !err || !strstr(err, "unknown option");
}

int main(void) {
    int rc = tool_run("gen", "--help", NULL);
    CHECK(rc == 0, "gen --help: exit %d", rc);
    char *help = strdup(tool_output);
    /* Every --name in the help is accepted. */
    int named = 0;
    for (const char *p = strstr(help, "--"); p; p = strstr(p + 2, "--")) {
        char name[64];
        size_t n = strspn(p + 2, "abcdefghijklmnopqrstuvwxyz0123456789-");
        if (n == 0 || n >= sizeof name) continue;
        memcpy(name, p + 2, n);
        name[n] = '\0';
        named++;
        CHECK(known(name), "gen --help names --%s, which gen does not accept", name);
    }
    /* Every option gen accepts is in the help: the names of options.c's table (a name dropped
     * from the table fails the first check; one added there belongs here too). */
    static const char *const all[] = {
        "model", "negative", "output", "width", "height", "seed", "steps", "guidance",
        "scheduler", "scheduler-opt", "guidance-rescale", "eta", "batch", "clip-skip", "threads",
        "save-latents", "quality", "print-tokens", "prompt-2", "negative-2", "original-size",
        "crop", "target-size", "max-sequence-length", "init-image", "mask", "strength", "help",
        "version", "quiet", "vae-tiny", "preview", "preview-every", "low-memory",
        "keep-resident"};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        char opt[80];
        snprintf(opt, sizeof opt, "--%s ", all[i]);
        CHECK(known(all[i]), "--%s is no longer an option: update this list", all[i]);
        CHECK(strstr(help, opt) != NULL, "gen --help does not describe --%s", all[i]);
    }
    CHECK(!known("no-such-option"), "the probe tells unknown options apart");
    /* Paging on and off at once is a command-line error naming both (issue 19). */
    {
        char *argv[] = {"gen", "--low-memory", "--keep-resident", "x", NULL};
        cli_options o;
        const char *err = NULL;
        const bool ok = cli_parse(&o, 4, argv, NULL, NULL, &err);
        CHECK(!ok && err && strstr(err, "--low-memory") && strstr(err, "--keep-resident"),
              "--low-memory with --keep-resident: %s", ok ? "accepted" : err);
        cli_options_free(&o);
        char *one[] = {"gen", "--keep-resident", "x", NULL};
        sd_load_params lp;
        CHECK(cli_parse(&o, 3, one, NULL, NULL, &err), "--keep-resident parses: %s", err);
        cli_load_params(&o, &lp);
        CHECK(lp.keep_resident && !lp.low_memory, "--keep-resident sets keep_resident only");
        cli_options_free(&o);
    }
    printf("gen --help names %d options, all accepted; all %zu known options described\n", named,
           sizeof all / sizeof *all);
    CHECK(strstr(help, "parameters") != NULL, "gen --help says PNGs carry the parameters");
    free(help);
    rc = tool_run("gen", "--version", NULL);
    char want[64];
    snprintf(want, sizeof want, "gen %s", SD_VERSION);
    CHECK(rc == 0 && strstr(tool_output, want), "gen --version: %s", tool_output);
    return test_summary();
}

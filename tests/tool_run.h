/* Running a built tool from a test: argv NULL-terminated, stdout and stderr captured together. */
#ifndef SD_TEST_TOOL_RUN_H
#define SD_TEST_TOOL_RUN_H

#include <stdarg.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

/* The last run's output (stdout and stderr interleaved). */
static char tool_output[1 << 16];

/* Runs argv[0] (a path) with argv; returns its exit status, or 128 + signal when it crashed. */
static inline int tool_run_argv(const char *const *argv) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t used = 0;
    ssize_t got;
    while ((got = read(fds[0], tool_output + used, sizeof tool_output - 1 - used)) > 0) used += (size_t)got;
    tool_output[used] = '\0';
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* tool_run("vae-check", "-m", dir, ..., NULL): the tool from tool_path(). */
static inline int tool_run(const char *tool, ...) {
    const char *argv[80];
    int n = 0;
    argv[n++] = tool_path(tool);
    va_list ap;
    va_start(ap, tool);
    for (const char *a = va_arg(ap, const char *); a && n < 79; a = va_arg(ap, const char *)) argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    return tool_run_argv(argv);
}

/* The tool from tool_path() with args (NULL-terminated). */
static inline int tool_run_args(const char *tool, const char *const *args) {
    const char *argv[80];
    int n = 0;
    argv[n++] = tool_path(tool);
    for (; *args && n < 79; args++) argv[n++] = *args;
    argv[n] = NULL;
    return tool_run_argv(argv);
}

/* Lines in the last output. */
static inline int tool_output_lines(void) {
    int lines = 0;
    for (const char *c = tool_output; *c; c++) lines += *c == '\n';
    return lines;
}

#endif

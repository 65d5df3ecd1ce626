/* embed NAME < FILE > FILE.c: a C array `const unsigned char NAME[]` holding FILE's bytes and
 * `const size_t NAME_len`, so a program carries a file (sd-server's web page) with no run-time
 * lookup. Built and run by the Makefile; a tiny C tool rather than xxd, which Debian ships in vim's
 * packages. */
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: embed NAME < FILE > FILE.c\n");
        return 2;
    }
    printf("#include <stddef.h>\nconst unsigned char %s[] = {", argv[1]);
    size_t n = 0;
    for (int c; (c = getchar()) != EOF; n++) printf("%s%d,", n % 24 ? "" : "\n", c);
    printf("0};\nconst size_t %s_len = %zu;\n", argv[1], n);
    return ferror(stdin) || fflush(stdout) ? 1 : 0;
}

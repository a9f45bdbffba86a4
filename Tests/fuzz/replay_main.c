/* A main() for the fuzz harnesses without libFuzzer: runs LLVMFuzzerTestOneInput once on
 * every file named on the command line (directories are walked one level deep, in name
 * order). `make test` links each harness with it against the installed library, under
 * AddressSanitizer and UndefinedBehaviorSanitizer, to replay the committed corpus and the
 * crash regressions. A harness aborts when an invariant breaks, so reaching the end means
 * every input passed. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static long replayed = 0;

static void run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    long n;
    uint8_t *buf;
    if (!f) { perror(path); exit(2); }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) { perror(path); exit(2); }
    /* Exactly n bytes, so that a read past the input shows under AddressSanitizer. */
    buf = (uint8_t *)malloc(n > 0 ? (size_t)n : 1);
    if (!buf) exit(2);
    if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) { perror(path); exit(2); }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
    replayed++;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void run_path(const char *path) {
    struct stat st;
    DIR *d;
    struct dirent *ent;
    char **names = NULL;
    size_t count = 0, cap = 0, i;
    if (stat(path, &st) != 0) { perror(path); exit(2); }
    if (!S_ISDIR(st.st_mode)) { run_file(path); return; }
    d = opendir(path);
    if (!d) { perror(path); exit(2); }
    while ((ent = readdir(d)) != NULL) {
        size_t len;
        char *full;
        if (ent->d_name[0] == '.') continue;
        len = strlen(path) + strlen(ent->d_name) + 2;
        full = (char *)malloc(len);
        if (!full) exit(2);
        snprintf(full, len, "%s/%s", path, ent->d_name);
        if (stat(full, &st) != 0 || !S_ISREG(st.st_mode)) { free(full); continue; }
        if (count == cap) {
            cap = cap ? 2 * cap : 64;
            names = (char **)realloc(names, cap * sizeof *names);
            if (!names) exit(2);
        }
        names[count++] = full;
    }
    closedir(d);
    if (count > 0) qsort(names, count, sizeof *names, by_name);
    for (i = 0; i < count; i++) {
        run_file(names[i]);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv) {
    int i;
    for (i = 1; i < argc; i++) run_path(argv[i]);
    printf("%s: %ld inputs replayed, every invariant held\n", argc > 0 ? argv[0] : "replay", replayed);
    return 0;
}

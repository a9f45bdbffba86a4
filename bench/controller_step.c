/* Cost of one aepo_controller_step in C, without any binding in between.
 *   make stage && cc -O2 -std=c99 bench/controller_step.c -o /tmp/controller_step \
 *       $(PKG_CONFIG_PATH=build/stage/lib/pkgconfig pkg-config --cflags --libs aepo) \
 *       -Wl,-rpath,$PWD/build/stage/lib && /tmp/controller_step
 * Prints the median over 7 runs for bang-bang, the fixed-gain PI (1e6 steps each) and the
 * self-tuning controller (2e4 steps: its estimator and gain rule cost far more per step). */
#define _POSIX_C_SOURCE 199309L
#include <aepo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void run(const char *name, const char *json, long STEPS) {
    enum { RUNS = 7 };
    double t[RUNS];
    aepo_controller *ctl = NULL;
    aepo_decision d;
    aepo_error err;
    int r;
    long i;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    if (aepo_controller_create(json, strlen(json), &ctl, &err) != AEPO_OK) {
        fprintf(stderr, "%s\n", err.message);
        exit(1);
    }
    for (r = 0; r < RUNS; r++) {
        double t0 = now();
        for (i = 0; i < STEPS; i++) {
            double y = 0.5 + 0.01 * (double)((i * 7919) % 13 - 6);
            if (aepo_controller_step(ctl, AEPO_CONTROLLER_STATISTIC_NLL, y, AEPO_CONTROLLER_STEP_NEXT, &d, &err)) {
                fprintf(stderr, "%s\n", err.message);
                exit(1);
            }
        }
        t[r] = (now() - t0) / (double)STEPS;
    }
    qsort(t, RUNS, sizeof t[0], cmp);
    printf("%-10s %6.1f ns per step (median of %d x %d steps; min %.1f, max %.1f)\n", name, t[RUNS / 2] * 1e9,
           RUNS, (int)STEPS, t[0] * 1e9, t[RUNS - 1] * 1e9);
    aepo_controller_free(ctl);
}

int main(void) {
    run("bang_bang", "{\"controller\": {\"mode\": \"bang_bang\"}}", 1000000);
    run("fixed PI", "{\"controller\": {\"mode\": \"adaptive\", \"adaptive\": {\"tuning\": \"fixed\"}}}", 1000000);
    run("self-tune", "{\"controller\": {\"mode\": \"adaptive\"}}", 20000);
    return 0;
}

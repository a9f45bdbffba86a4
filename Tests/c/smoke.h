/* Minimal checking helpers shared by the C smoke tests. Each test program ends with a
 * "N passed, M failed" line and exits non-zero on any failure. */
#ifndef AEPO_SMOKE_H
#define AEPO_SMOKE_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int smoke_passed = 0;
static int smoke_failed = 0;

#define CHECK(cond) do { \
    if (cond) { smoke_passed++; } \
    else { smoke_failed++; fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); } \
} while (0)

#define CHECK_STATUS(call, expected, errp) do { \
    int32_t smoke_st_ = (call); \
    if (smoke_st_ == (expected)) { smoke_passed++; } \
    else { smoke_failed++; \
        fprintf(stderr, "%s:%d: %s returned %s (%d), expected %s: %s\n", __FILE__, __LINE__, #call, \
                aepo_status_name(smoke_st_), (int)smoke_st_, aepo_status_name(expected), (errp)->message); } \
} while (0)

#define CHECK_NEAR(a, b, tol) do { \
    double smoke_a_ = (a), smoke_b_ = (b); \
    double smoke_d_ = fabs(smoke_a_ - smoke_b_); \
    if (smoke_d_ <= (tol) * (fabs(smoke_b_) > 1.0 ? fabs(smoke_b_) : 1.0)) { smoke_passed++; } \
    else { smoke_failed++; \
        fprintf(stderr, "%s:%d: %s = %.12g, expected %.12g (diff %.3g, tol %.3g)\n", __FILE__, __LINE__, \
                #a, smoke_a_, smoke_b_, smoke_d_, (double)(tol)); } \
} while (0)

static int smoke_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, smoke_passed, smoke_failed);
    return smoke_failed == 0 ? 0 : 1;
}

#endif

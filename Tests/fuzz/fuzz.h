/* Shared pieces of the libFuzzer harnesses (Tests/fuzz/fuzz_*.c).
 *
 * Every harness decodes one input into a call: shapes, values and flags are read from the
 * input bytes in order, and an exhausted input reads as zeros, so every byte string is a
 * valid input. Sizes are mostly small but sometimes an edge value (negative, 2^31, 2^62,
 * INT64_MAX, ...); floats are mostly ordinary but sometimes NaN, +-Inf, a denormal,
 * +-FLT_MAX or raw bits.
 *
 * The one rule that keeps every AddressSanitizer report a library bug: a non-NULL pointer
 * handed to the library always points to a buffer at least as large as the shapes of the
 * call say it is. When a decoded shape needs more elements than FZ_MAX_ELEMS, the harness
 * passes NULL for that buffer instead (the library must then fail with a status, never
 * read it).
 *
 * After each call the harness checks the library's side of the contract (fz_check): the
 * status is one of the pinned codes and never AEPO_ERR_INTERNAL, the aepo_error agrees with
 * it and holds NUL-terminated strings, a failure names its argument, a success clears the
 * error. Harness-specific invariants (outputs finite, zero under mask = 0, thread-count
 * independence, ...) are checked in each harness. A broken invariant aborts, which
 * libFuzzer reports as a crash. */
#ifndef AEPO_FUZZ_H
#define AEPO_FUZZ_H

#include <aepo.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The largest array a harness allocates, in elements. */
#define FZ_MAX_ELEMS (1 << 14)

typedef struct fz {
    const uint8_t *p;
    size_t n;
    size_t i;
} fz;

static inline fz fz_make(const uint8_t *data, size_t size) {
    fz f;
    f.p = data;
    f.n = size;
    f.i = 0;
    return f;
}

static inline uint8_t fz_u8(fz *f) { return f->i < f->n ? f->p[f->i++] : 0; }

static inline uint32_t fz_u32(fz *f) {
    uint32_t v = 0;
    int k;
    for (k = 0; k < 4; k++) v |= (uint32_t)fz_u8(f) << (8 * k);
    return v;
}

static inline uint64_t fz_u64(fz *f) {
    uint64_t lo = fz_u32(f);
    return lo | ((uint64_t)fz_u32(f) << 32);
}

static inline int fz_bit(fz *f) { return fz_u8(f) & 1; }

/* An integer in [0, n) (n >= 1). */
static inline int64_t fz_below(fz *f, int64_t n) { return (int64_t)(fz_u8(f) % (uint64_t)n); }

/* Sizes at the edges of what int64 sizes, 32-bit BLAS sizes and products can hold. */
static const int64_t FZ_EDGE_SIZES[] = {
    -1, -2, INT64_MIN, INT64_MAX, INT64_MAX / 2 + 1, (int64_t)1 << 31, ((int64_t)1 << 31) - 1,
    ((int64_t)1 << 31) + 1, (int64_t)1 << 32, ((int64_t)1 << 32) + 1, (int64_t)1 << 40, (int64_t)1 << 62,
    3037000500LL /* just above sqrt(2^63) */, 65537, 257, 100000};
#define FZ_N_EDGE_SIZES ((int)(sizeof(FZ_EDGE_SIZES) / sizeof(FZ_EDGE_SIZES[0])))

/* A size: in [0, small] for 15 of 16 byte values, otherwise an edge value. */
static inline int64_t fz_size(fz *f, int64_t small) {
    uint8_t c = fz_u8(f);
    if (c < 240) return (int64_t)(c % (uint64_t)(small + 1));
    return FZ_EDGE_SIZES[(c - 240) % FZ_N_EDGE_SIZES];
}

/* Special floats: the values a non-finite policy is about, and the ones next to them. */
static inline float fz_special_float(uint8_t k) {
    switch (k % 16) {
    case 0: return NAN;
    case 1: return -NAN;
    case 2: return INFINITY;
    case 3: return -INFINITY;
    case 4: return 1.4e-45f;        /* smallest denormal */
    case 5: return -1.1754942e-38f; /* largest negative denormal */
    case 6: return 3.4028235e38f;   /* FLT_MAX */
    case 7: return -3.4028235e38f;
    case 8: return 0.0f;
    case 9: return -0.0f;
    case 10: return 1.17549435e-38f; /* FLT_MIN */
    case 11: return 1e30f;
    case 12: return -1e30f;
    case 13: return 88.73f; /* exp overflows just above */
    case 14: return -104.0f; /* exp underflows to a denormal */
    default: return 1e-30f;
    }
}

/* A float: ordinary values in [lo, hi] for 3 of 4 byte values, raw bits or a special
 * value otherwise. */
static inline float fz_float(fz *f, float lo, float hi) {
    uint8_t c = fz_u8(f);
    if (c < 192) return lo + (hi - lo) * (float)fz_u8(f) / 255.0f;
    if (c < 208) {
        uint32_t bits = fz_u32(f);
        float v;
        memcpy(&v, &bits, sizeof v);
        return v;
    }
    return fz_special_float(c);
}

/* A float that is always finite (for the cases where a harness needs clean data). */
static inline float fz_finite(fz *f, float lo, float hi) { return lo + (hi - lo) * (float)fz_u8(f) / 255.0f; }

static inline double fz_double(fz *f, double lo, double hi) {
    uint8_t c = fz_u8(f);
    if (c < 192) return lo + (hi - lo) * (double)fz_u8(f) / 255.0;
    if (c < 208) {
        uint64_t bits = fz_u64(f);
        double v;
        memcpy(&v, &bits, sizeof v);
        return v;
    }
    switch (c % 12) {
    case 0: return NAN;
    case 1: return INFINITY;
    case 2: return -INFINITY;
    case 3: return 4.9e-324;
    case 4: return 0.0;
    case 5: return -0.0;
    case 6: return 1.7976931348623157e308;
    case 7: return -1.7976931348623157e308;
    case 8: return 1e-31;
    case 9: return 1e300;
    case 10: return -1.0;
    default: return 1e-300;
    }
}

/* --------------------------------------------------------------- buffers --- */

/* a * b and a + b, saturated to the int64 range (decoded sizes are edge values on purpose;
 * the harness itself must not overflow). */
static inline int64_t fz_mul(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r)) return ((a < 0) != (b < 0)) ? INT64_MIN : INT64_MAX;
    return r;
}

static inline int64_t fz_add(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) return a < 0 ? INT64_MIN : INT64_MAX;
    return r;
}

/* Elements needed by a shape, or -1 when it is negative, overflows or exceeds the cap. */
static inline int64_t fz_elems(int64_t a, int64_t b) {
    if (a < 0 || b < 0) return -1;
    if (a != 0 && b > FZ_MAX_ELEMS / a) return -1;
    if (a * b > FZ_MAX_ELEMS) return -1;
    return a * b;
}

/* Allocates exactly `count` elements of `size` bytes (so that AddressSanitizer sees a read
 * one past the end), or returns NULL when count < 0. A zero count still gives a unique
 * pointer unless `null_if_empty`. */
static inline void *fz_alloc(int64_t count, size_t size, int null_if_empty) {
    void *p;
    if (count < 0) return NULL;
    if (count == 0 && null_if_empty) return NULL;
    p = malloc(count == 0 ? 1 : (size_t)count * size);
    if (!p) abort();
    return p;
}

static inline float *fz_floats(fz *f, int64_t count, float lo, float hi, int null_if_empty) {
    float *p = (float *)fz_alloc(count, sizeof(float), null_if_empty);
    int64_t i;
    if (!p) return NULL;
    for (i = 0; i < count; i++) p[i] = fz_float(f, lo, hi);
    return p;
}

/* A 0/1 mask, with the occasional other byte when `wild`. */
static inline uint8_t *fz_mask(fz *f, int64_t count, int wild) {
    uint8_t *p = (uint8_t *)fz_alloc(count, 1, 0);
    int64_t i;
    if (!p) return NULL;
    for (i = 0; i < count; i++) {
        uint8_t c = fz_u8(f);
        p[i] = (wild && c >= 250) ? c : (uint8_t)(c < 48 ? 0 : 1);
    }
    return p;
}

/* Token ids mostly in [0, v), sometimes -100, -1, v or INT32_MAX. */
static inline int32_t *fz_targets(fz *f, int64_t count, int64_t v) {
    int32_t *p = (int32_t *)fz_alloc(count, sizeof(int32_t), 0);
    int64_t i;
    if (!p) return NULL;
    for (i = 0; i < count; i++) {
        uint8_t c = fz_u8(f);
        if (c < 240 && v > 0) p[i] = (int32_t)(fz_u8(f) % (uint64_t)v);
        else if (c % 4 == 0) p[i] = -100;
        else if (c % 4 == 1) p[i] = -1;
        else if (c % 4 == 2) p[i] = (int32_t)(v > INT32_MAX ? INT32_MAX : v);
        else p[i] = INT32_MAX;
    }
    return p;
}

static inline int fz_finite_under(const float *x, const uint8_t *mask, int64_t n) {
    int64_t i;
    if (!x) return 1;
    for (i = 0; i < n; i++)
        if ((!mask || mask[i] == 1) && !isfinite(x[i])) return 0;
    return 1;
}

/* ----------------------------------------------------------------- checks --- */

#define FZ_FAIL(...) do { \
    fprintf(stderr, "fuzz invariant broken at %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); \
    fputc('\n', stderr); \
    abort(); \
} while (0)

#define FZ_ASSERT(cond, ...) do { if (!(cond)) FZ_FAIL(__VA_ARGS__); } while (0)

/* The error-reporting contract every fallible call keeps. `e` is the error the call was
 * given (NULL when the harness passed NULL). */
static inline void fz_check(const char *call, int32_t rc, const aepo_error *e) {
    FZ_ASSERT(rc >= 0 && rc < AEPO_STATUS_COUNT, "%s returned %d, not a status", call, (int)rc);
    if (e) {
        FZ_ASSERT(memchr(e->argument, 0, sizeof e->argument) != NULL, "%s: argument not NUL-terminated", call);
        FZ_ASSERT(memchr(e->message, 0, sizeof e->message) != NULL, "%s: message not NUL-terminated", call);
    }
    FZ_ASSERT(rc != AEPO_ERR_INTERNAL, "%s returned AEPO_ERR_INTERNAL: %s", call, e ? e->message : "");
    if (!e) return;
    FZ_ASSERT(e->status == rc, "%s returned %d but err.status is %d", call, (int)rc, (int)e->status);
    FZ_ASSERT(e->reserved == 0, "%s: err.reserved is %d", call, (int)e->reserved);
    if (rc == AEPO_OK) {
        FZ_ASSERT(e->argument[0] == 0 && e->message[0] == 0 && e->index == -1,
                  "%s succeeded but left an error: %s (%s, %lld)", call, e->message, e->argument,
                  (long long)e->index);
    } else {
        FZ_ASSERT(e->message[0] != 0, "%s failed (%s) with an empty message", call, aepo_status_name(rc));
        FZ_ASSERT(e->argument[0] != 0, "%s failed (%s) without naming an argument: %s", call,
                  aepo_status_name(rc), e->message);
        FZ_ASSERT(e->index >= -1, "%s: err.index is %lld", call, (long long)e->index);
    }
}

/* An error struct filled with garbage, so that a call that forgets to set a field shows. */
static inline aepo_error *fz_err(fz *f, aepo_error *e) {
    if (fz_u8(f) >= 240) return NULL;
    memset(e, 0x5a, sizeof *e);
    return e;
}

#endif

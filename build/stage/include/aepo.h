/*
 * aepo.h - libaepo, controllable policy entropy for reinforcement finetuning.
 *
 * libaepo implements AEPO (Arbitrary Entropy Policy Optimization, arXiv 2510.08141) as a
 * library that a trainer calls once per training step: GRPO/PPO-family policy losses with
 * exact gradients, advantage estimators, temperature-consistent log-prob and entropy
 * kernels, a seeded temperature sampler, the entropy controller, and a fused LM head.
 *
 * This header is the contract. Everything declared here is API; nothing else is.
 *
 * CONVENTIONS
 *   - Every fallible call returns an int32_t status (AEPO_OK is 0) and takes a
 *     caller-owned `aepo_error *err` as its last argument. `err` may be NULL. On failure
 *     the library fills it with the status, the name of the offending argument and a
 *     message that says what was wrong. There is no global or thread-local "last error".
 *   - Dimensions and counts are int64_t (negative values are rejected), capacities are
 *     size_t, strides are in elements, token ids are int32_t, group ids are int64_t,
 *     masks are `const uint8_t *` holding 0 or 1, floating data is float, and reductions
 *     and metrics are double.
 *   - Variable-size text output follows one snprintf-style rule:
 *       call(..., char *buf, size_t cap, size_t *len, err)
 *     writes the text and a terminating NUL when cap > *len, and stores the text length
 *     (without the NUL) in *len whenever len is not NULL. `buf == NULL, cap == 0` asks
 *     for the size and returns AEPO_OK. A non-NULL buffer that is too small returns
 *     AEPO_ERR_BUFFER_TOO_SMALL, sets *len, and leaves buf holding an empty string.
 *   - Bad input never crashes the host: it returns a status. A call that fails leaves
 *     every handle and every output exactly as valid as before (outputs may be partly
 *     written; handle state is untouched).
 *
 * OWNERSHIP
 *   - The caller owns every buffer. The library never keeps a pointer it was given after
 *     the call returns, and never hands back memory the caller must free.
 *   - Handles are created by aepo_X_create and released by aepo_X_free; free(NULL) is a
 *     no-op. Strings returned by aepo_status_name, aepo_version_string and the other
 *     *_name functions are static and live for the life of the process.
 *
 * THREADS
 *   - A handle belongs to one thread at a time. Distinct handles may be used concurrently
 *     from any number of threads. Functions that take no handle are thread-safe.
 *   - Calls that take a `threads` setting split work over rows with plain pthreads that
 *     live for the duration of the call. For a given input and seed, results are
 *     bit-identical for every thread count.
 *   - OpenBLAS's process-wide thread count belongs to the host: libaepo never changes it
 *     (set OPENBLAS_NUM_THREADS, or call openblas_set_num_threads yourself).
 *   - The library keeps no hidden global state: no global RNG, no global error.
 */
#ifndef AEPO_H
#define AEPO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  define AEPO_API
#elif defined(__GNUC__) || defined(__clang__)
#  define AEPO_API __attribute__((visibility("default")))
#else
#  define AEPO_API
#endif

/* ===================================================================== versions === */

#define AEPO_VERSION_MAJOR 0
#define AEPO_VERSION_MINOR 1
#define AEPO_VERSION_PATCH 0
/* MAJOR*10000 + MINOR*100 + PATCH */
#define AEPO_VERSION_NUMBER (AEPO_VERSION_MAJOR * 10000 + AEPO_VERSION_MINOR * 100 + AEPO_VERSION_PATCH)
#define AEPO_VERSION_STRING "0.1.0"
/* The ABI number changes together with the SONAME (libaepo.so.<ABI>). */
#define AEPO_ABI_VERSION 0

/* Runtime versions, to assert against the macros above. */
AEPO_API const char *aepo_version_string(void);
AEPO_API int32_t aepo_version_number(void);
AEPO_API int32_t aepo_abi_version(void);

/* ================================================================ status codes === */
/* Pinned forever: values are never renumbered or reused. */

#define AEPO_OK                    0
#define AEPO_ERR_INVALID_ARGUMENT  1  /* a value out of its domain (T <= 0, mask not 0/1, ...) */
#define AEPO_ERR_NULL_POINTER      2  /* a required pointer was NULL */
#define AEPO_ERR_SHAPE             3  /* negative, overflowing or mismatched sizes and strides */
#define AEPO_ERR_CONFIG            4  /* the JSON config is malformed or breaks a rule */
#define AEPO_ERR_NON_FINITE        5  /* NaN or Inf where a finite value is required */
#define AEPO_ERR_BUFFER_TOO_SMALL  6  /* an output capacity is too small; *len says how big */
#define AEPO_ERR_OUT_OF_MEMORY     7  /* a scratch allocation failed */
#define AEPO_ERR_STATE             8  /* a state blob is malformed or belongs to another config */
#define AEPO_ERR_INTERNAL          9  /* a bug in libaepo; please report it */
#define AEPO_STATUS_COUNT         10

/* Static name of a status ("AEPO_ERR_SHAPE"); "AEPO_ERR_UNKNOWN" for other values. */
AEPO_API const char *aepo_status_name(int32_t status);

/* ===================================================================== errors === */

#define AEPO_ERROR_ARGUMENT_SIZE 64
#define AEPO_ERROR_MESSAGE_SIZE 320

/* Caller-owned error report, passed last to every fallible call (NULL is allowed).
 * On success `status` is set to AEPO_OK and the strings to "". */
typedef struct aepo_error {
    int32_t status;                          /* the status the call returned */
    int32_t reserved;                        /* 0 */
    int64_t index;                           /* element or row the error is about, or -1 */
    char argument[AEPO_ERROR_ARGUMENT_SIZE]; /* offending argument or config path, NUL-terminated */
    char message[AEPO_ERROR_MESSAGE_SIZE];   /* full human-readable message, NUL-terminated */
} aepo_error;

/* ===================================================================== config === */
/* A config is one JSON document (schema_version 1) whose sections configure every
 * handle; see docs/CONFIG.md. NULL or an empty string means all defaults; a partial
 * document is filled with defaults. Unknown keys, duplicate keys, wrong types (including
 * a real for an integer key) and out-of-range values are AEPO_ERR_CONFIG, and the error's
 * `argument` holds the JSON path ("controller.t_high"). Output is canonical: keys sorted,
 * reals in shortest round-trip form. */

/* Writes the default config document. */
AEPO_API int32_t aepo_default_config_json(char *buf, size_t cap, size_t *len, aepo_error *err);

/* Validates a whole document. `json` need not be NUL-terminated; `len` is its length. */
AEPO_API int32_t aepo_config_validate(const char *json, size_t len, aepo_error *err);

/* Validates a document and writes its normalised form: every key present, defaults
 * filled, canonical formatting. */
AEPO_API int32_t aepo_config_normalize(const char *json, size_t len,
                                       char *buf, size_t cap, size_t *len_out, aepo_error *err);

/* ============================================================== opaque handles === */

typedef struct aepo_loss aepo_loss;             /* policy loss, advantages, regulariser */
typedef struct aepo_controller aepo_controller; /* entropy controller */
typedef struct aepo_sampler aepo_sampler;       /* seeded temperature sampler */
typedef struct aepo_fused aepo_fused;           /* fused LM head */

/* @@SECTION loss@@ */

/* @@SECTION controller@@ */

/* @@SECTION kernels@@ */

/* @@SECTION sampler@@ */

/* @@SECTION fused@@ */

#ifdef __cplusplus
}
#endif

#endif /* AEPO_H */

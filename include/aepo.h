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

/* ========================================================= entropy controller === */
/* Once per training step the controller reads an entropy statistic and decides how the
 * next step draws and weighs its regulariser rollouts: the temperature, the cap k_max and
 * halving (combine = "replace"), or the weight alpha (combine = "weighted"). It reads the
 * `controller` section of the config; see docs/CONTROLLER.md.
 *
 * TIMING
 *   - aepo_controller_decision gives the decision for the coming step and does not
 *     advance. Before any observation it comes from `controller.initial_entropy`, so with
 *     the default 0 the first decision is T_high.
 *   - aepo_controller_step / aepo_controller_step_sums record the statistic of the update
 *     that just finished (training step `step`), advance to step + 1, and write the
 *     decision for it. Pass AEPO_CONTROLLER_STEP_NEXT as `step` to mean "the step of the
 *     pending decision" (steps then count 0, 1, 2, ...). A step before the pending
 *     decision's step is an error; a later one skips ahead. Schedules follow `step`.
 *
 * MODES
 *   - "bang_bang", the reference rule: T_high with the full k_max when the last statistic
 *     is <= the target, otherwise T_low, with halve = 1 when halve_above_target.
 *     `hysteresis` h > 0 switches to T_high only at or below target - h and to T_low only
 *     above target + h, holding the level in between (h = 0 is the reference rule).
 *   - "adaptive", a PI controller on target - statistic (incremental form, so saturation
 *     and the rate limit never wind it up). Actuator "temperature": the temperature moves
 *     within [t_min, t_max] by at most t_rate per step; k_max in full, never halved.
 *     Actuator "alpha": alpha moves within [0, alpha_max], drawn at t_high while raising
 *     entropy and at t_low while lowering it.
 *
 * STATISTIC
 *   `controller.statistic` picks what drives the rule: "nll" (the sampled-token negative
 *   log-likelihood, as in the reference code) or "exact" (the full per-token entropy).
 *   Every call says which one it passes; passing the other one is AEPO_ERR_INVALID_ARGUMENT
 *   whose `argument` names the missing statistic ("nll" or "entropy"). A value must be
 *   finite (else AEPO_ERR_NON_FINITE) and >= 0 (else AEPO_ERR_INVALID_ARGUMENT).
 *
 * Every call that fails leaves the controller exactly as it was. */

/* Modes (`controller.mode`); pinned. */
#define AEPO_CONTROLLER_MODE_BANG_BANG 0
#define AEPO_CONTROLLER_MODE_ADAPTIVE  1
#define AEPO_CONTROLLER_MODE_COUNT     2

/* Statistics (`controller.statistic`); pinned. */
#define AEPO_CONTROLLER_STATISTIC_NLL   0  /* sampled-token NLL: "nll" */
#define AEPO_CONTROLLER_STATISTIC_EXACT 1  /* exact token entropy: "exact" */
#define AEPO_CONTROLLER_STATISTIC_COUNT 2

/* Why a decision came out as it did; pinned, new reasons are only appended. */
#define AEPO_CONTROLLER_REASON_INITIAL            0 /* no observation yet: from initial_entropy */
#define AEPO_CONTROLLER_REASON_AT_OR_BELOW_TARGET 1 /* bang-bang: statistic <= target, T_high */
#define AEPO_CONTROLLER_REASON_ABOVE_TARGET       2 /* bang-bang: statistic > target, T_low */
#define AEPO_CONTROLLER_REASON_HYSTERESIS_HOLD    3 /* bang-bang: inside the band, level held */
#define AEPO_CONTROLLER_REASON_TRACKING           4 /* adaptive: the actuator moved freely */
#define AEPO_CONTROLLER_REASON_SATURATED_HIGH     5 /* adaptive: at t_max (or alpha_max at t_high) */
#define AEPO_CONTROLLER_REASON_SATURATED_LOW      6 /* adaptive: at t_min (or alpha_max at t_low) */
#define AEPO_CONTROLLER_REASON_RATE_LIMITED       7 /* adaptive: the change was cut to t_rate */
#define AEPO_CONTROLLER_REASON_COUNT              8

/* `step` value meaning "the step of the pending decision". */
#define AEPO_CONTROLLER_STEP_NEXT (-1)

/* Static names: the config spelling for modes and statistics ("bang_bang", "exact") and
 * snake_case for reasons ("at_or_below_target"); "unknown" for other values. */
AEPO_API const char *aepo_controller_mode_name(int32_t mode);
AEPO_API const char *aepo_controller_statistic_name(int32_t statistic);
AEPO_API const char *aepo_controller_reason_name(int32_t reason);

/* One decision. The caller sets struct_size = sizeof(aepo_decision) before a call; the
 * library fills every field it knows and leaves struct_size, and any later fields of a
 * newer, larger struct, unchanged. A struct_size below AEPO_DECISION_SIZE_V1 (the size of
 * this first version) is AEPO_ERR_INVALID_ARGUMENT naming the struct argument. */
#define AEPO_DECISION_SIZE_V1 80
typedef struct aepo_decision {
    size_t struct_size;
    int64_t step;        /* the training step this decision is for */
    double temperature;  /* draw the regulariser rollouts at this temperature */
    double alpha;        /* regulariser weight for combine = "weighted" when the controller
                            drives it (adaptive, actuator "alpha"); NaN otherwise, meaning
                            "use regularizer.alpha" */
    double target;       /* the target of `step` under the schedule */
    double statistic;    /* the raw statistic the decision was made from */
    double smoothed;     /* the statistic after EMA smoothing (adaptive); = statistic otherwise */
    int64_t k_max;       /* cap on regulariser samples, for select_regularizer */
    int32_t halve;       /* 1: keep the floor-half of the selected positives */
    int32_t mode;        /* AEPO_CONTROLLER_MODE_* */
    int32_t reason;      /* AEPO_CONTROLLER_REASON_* */
    int32_t reserved;    /* 0 */
} aepo_decision;

/* Creates a controller from a whole config document (NULL or "" means all defaults).
 * Config errors are AEPO_ERR_CONFIG naming the JSON path; on any failure *out is NULL. */
AEPO_API int32_t aepo_controller_create(const char *json, size_t len, aepo_controller **out,
                                        aepo_error *err);

/* Releases a controller; NULL is a no-op. */
AEPO_API void aepo_controller_free(aepo_controller *ctl);

/* Writes the effective config document the controller runs with (text rule above). */
AEPO_API int32_t aepo_controller_config_json(const aepo_controller *ctl, char *buf, size_t cap,
                                             size_t *len, aepo_error *err);

/* Writes the decision for the coming step into *out. Does not advance. */
AEPO_API int32_t aepo_controller_decision(const aepo_controller *ctl, aepo_decision *out,
                                          aepo_error *err);

/* Records `value`, the token mean of the statistic `statistic` (AEPO_CONTROLLER_STATISTIC_*)
 * over the update of training step `step` (or AEPO_CONTROLLER_STEP_NEXT), advances, and
 * writes the decision for step + 1 into *next (which may be NULL). */
AEPO_API int32_t aepo_controller_step(aepo_controller *ctl, int32_t statistic, double value,
                                      int64_t step, aepo_decision *next, aepo_error *err);

/* The same, from a sum over `count` tokens as all-reduced across ranks: the statistic is
 * sum / count. `count` must be >= 1; errors name "nll_sum" / "entropy_sum" and "count". */
AEPO_API int32_t aepo_controller_step_sums(aepo_controller *ctl, int32_t statistic, double sum,
                                           int64_t count, int64_t step, aepo_decision *next,
                                           aepo_error *err);

/* Writes the controller's state as JSON (text rule above): the pending decision, the
 * level or actuator, the smoothed statistic, the history, and the controller section of
 * the config. Reals keep 17 significant digits, so restoring continues bit for bit. */
AEPO_API int32_t aepo_controller_state_json(const aepo_controller *ctl, char *buf, size_t cap,
                                            size_t *len, aepo_error *err);

/* Replaces the state with a blob from aepo_controller_state_json (`json` need not be
 * NUL-terminated). A blob saved under another mode, statistic or (adaptive) actuator, or
 * one that is malformed, is AEPO_ERR_STATE naming the field, and changes nothing. Other
 * config keys may differ (a new target or gains); they apply from the next step on. With
 * an equal config the restored controller gives decisions bit-identical to the one that
 * saved it. The history keeps the newest `controller.history` entries. */
AEPO_API int32_t aepo_controller_restore(aepo_controller *ctl, const char *json, size_t len,
                                         aepo_error *err);

/* History: the last `controller.history` decisions, oldest first, the pending one last. */
AEPO_API int32_t aepo_controller_history_count(const aepo_controller *ctl, int64_t *count,
                                               aepo_error *err);
/* Writes entry `index` (0 = oldest, count - 1 = the pending decision) into *out. */
AEPO_API int32_t aepo_controller_history(const aepo_controller *ctl, int64_t index,
                                         aepo_decision *out, aepo_error *err);

/* @@SECTION kernels@@ */

/* @@SECTION sampler@@ */

/* @@SECTION fused@@ */

#ifdef __cplusplus
}
#endif

#endif /* AEPO_H */

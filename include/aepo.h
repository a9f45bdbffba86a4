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

/* ============================================================== logits kernels === */
/* Temperature-consistent log-probs, exact entropy and their gradient, straight from logits
 * (docs/KERNELS.md). With T the policy temperature and z = logits / T, per row:
 *   lse  = log sum_v exp(z_v)
 *   logp = z_target - lse                       (and, on request, the same at T = 1)
 *   H    = lse - sum_v softmax(z)_v * z_v       (exact, not a sampled estimate)
 *
 * LAYOUT. logits is a strided [B, L, V] view: element (b, l, v) is
 *   logits[b * stride_b + l * stride_l + v],
 * so the shifted view logits[:, :-1] of a [B, L+1, V] tensor is (B, L, V, (L+1)*V, V), with
 * no copy; a plain [N, V] matrix is (1, N, V, 0, V). Rows are numbered r = b*L + l, which
 * indexes every per-row array (targets, mask, logp, ...); those are contiguous [B*L].
 * Strides are in elements, >= 0, and the B*L rows must not overlap (for the axes with more
 * than one entry, the smaller stride >= V and the larger >= the smaller times its count).
 * A stride is ignored for an axis of size 1.
 *
 * MASKS. mask may be NULL (all ones). Rows with mask = 0 are not read at all: their
 * logits and targets may hold anything (NaN, -100). Under mask = 1, logits may hold -inf
 * (a banned token) but not NaN or +inf, a row must not be all -inf, and targets must lie in
 * [0, V). Errors name the argument and the row (err->index is the row).
 *
 * THREADS. threads in [1, 256] splits the rows over plain pthreads for the call; every
 * result is bit-identical for every thread count. */

/* aepo_logits_stats: one streaming pass per row (online log-sum-exp).
 *   logits     [B, L, V] float, strided (above)
 *   targets    [B*L] int32, read where mask = 1; may be NULL when logp, logp_t1 and
 *              nll_sum are all NULL
 *   mask       [B*L] uint8 (0/1) or NULL
 *   temperature > 0 and finite (for greedy decoding, see sampler.greedy)
 * Outputs (each may be NULL; rows with mask = 0 get 0):
 *   logp       [B*L] float   log p(target) at T
 *   entropy    [B*L] float   H at T
 *   lse        [B*L] double  lse at T; float64 because logits_backward reads it back and a
 *                            float32 lse would add up to 6e-8*|lse| to every log p there
 *   logp_t1    [B*L] float   log p(target) at T = 1 (computed only when non-NULL)
 *   entropy_sum, nll_sum     double: sum of H and of -logp over rows with mask = 1, added
 *                            in row order (ready to all-reduce)
 *   count                    int64: the number of rows with mask = 1
 * On failure, outputs of rows before the failing one may be written. */
AEPO_API int32_t aepo_logits_stats(const float *logits, int64_t B, int64_t L, int64_t V,
                                   int64_t stride_b, int64_t stride_l,
                                   const int32_t *targets, const uint8_t *mask,
                                   double temperature, int64_t threads,
                                   float *logp, float *entropy, double *lse, float *logp_t1,
                                   double *entropy_sum, double *nll_sum, int64_t *count,
                                   aepo_error *err);

/* aepo_logits_backward: dL/dlogits for L = sum_r grad_logp[r]*logp[r] + grad_entropy[r]*H[r],
 *   dL/dlogits[r, v] = (grad_logp[r] * (onehot(target)_v - p_v)
 *                       - grad_entropy[r] * p_v * (log p_v + H[r])) / T,
 * reusing lse and entropy from aepo_logits_stats at the same temperature: one read of each
 * logit, one write of each output, no extra pass.
 *   logits        [B, L, V] float, strided as for aepo_logits_stats
 *   targets       [B*L] int32; needed only with grad_logp
 *   mask          [B*L] uint8 (0/1) or NULL
 *   lse           [B*L] double, from aepo_logits_stats
 *   entropy       [B*L] float, from aepo_logits_stats; needed only with grad_entropy
 *   grad_logp     [B*L] float upstream gradient of logp, or NULL (no logp term)
 *   grad_entropy  [B*L] float upstream gradient of H, or NULL (no entropy term)
 *   out           [B, L, V] float, element (b, l, v) at out[b*out_stride_b + l*out_stride_l + v]
 * out may be logits itself (the same pointer and strides): the gradient then overwrites
 * the logits in place. Any other overlap of out and logits is AEPO_ERR_INVALID_ARGUMENT.
 * A row whose mask is 0, or whose upstream gradients are both 0, gets a zero output row
 * and nothing else of it is read (its target is not checked). Every active row is
 * validated before anything is written. */
AEPO_API int32_t aepo_logits_backward(const float *logits, int64_t B, int64_t L, int64_t V,
                                      int64_t stride_b, int64_t stride_l,
                                      const int32_t *targets, const uint8_t *mask,
                                      double temperature, const double *lse, const float *entropy,
                                      const float *grad_logp, const float *grad_entropy,
                                      float *out, int64_t out_stride_b, int64_t out_stride_l,
                                      int64_t threads, aepo_error *err);

/* ==================================================================== sampler === */
/* Seeded temperature sampler: temperature, min-p, top-k, top-p and greedy, drawn with a
 * counter-based generator (Philox4x32-10), reporting the truncated law it used so that a
 * trainer can score and replay exactly what was sampled.
 *
 * LAW. For a row x of V logits with max m and temperature T, token i has weight
 * w_i = exp((x_i - m) / T). The truncations act in this order, each on what the previous
 * one left, and each keeps a prefix of the ranking "larger logit first, lower id first
 * among equal logits":
 *   min-p (sampler.min_p; 0 = off)  keeps i when w_i >= min_p, i.e. x_i >= m + T ln(min_p);
 *   top-k (sampler.top_k; 0 = off)  keeps the first k;
 *   top-p (sampler.top_p; 1 = off)  keeps i when the mass ranked strictly above i is
 *                                   < top_p times the mass of what is left.
 * The token is drawn with probability w_i / Z over the kept set K (Z = sum of w over K).
 * Greedy (sampler.greedy) returns the argmax, ties to the lowest id.
 * A logit of -inf means probability 0 (it is never kept or counted); NaN and +inf are
 * AEPO_ERR_NON_FINITE, and a row with no finite logit is AEPO_ERR_INVALID_ARGUMENT.
 *
 * RANDOMNESS. Row i's draw is a pure function of (sampler.seed, step, position,
 * row_offset + i) and the row's logits: the result does not depend on sampler.threads, on
 * how a batch is split into calls, or on call order. Calling twice with the same
 * arguments gives the same tokens.
 *
 * TEMPERATURE. `temperature` may point to a per-call temperature that overrides
 * sampler.temperature (how an entropy controller's T arrives each step); NULL uses the
 * config. It must be finite and >= 1e-30; T <= 0 is AEPO_ERR_INVALID_ARGUMENT and the
 * message points to sampler.greedy. Greedy ignores the value but still checks it. */

/* Creates a sampler from the `sampler` section of a whole config document (NULL or ""
 * means defaults). On success *out owns a new handle; free it with aepo_sampler_free. */
AEPO_API int32_t aepo_sampler_create(const char *json, size_t len, aepo_sampler **out, aepo_error *err);

/* Releases a sampler and its scratch; NULL is a no-op. */
AEPO_API void aepo_sampler_free(aepo_sampler *sampler);

/* Writes the effective config document the sampler runs with (every section, normalised). */
AEPO_API int32_t aepo_sampler_config_json(const aepo_sampler *sampler, char *buf, size_t cap, size_t *len,
                                          aepo_error *err);

/* Draws one token per row.
 *   logits   [n, v] floats, row i at logits + i * row_stride (row_stride >= v)
 *   tokens   [n] int32, the drawn ids                                    (required)
 *   logp     [n] float, log(w_tok / Z): the log-prob under the truncated, tempered law
 *            actually used (0 under greedy)                              (NULL: skipped)
 *   logp_t1  [n] float, log_softmax(x)[tok]: the log-prob under the untruncated T = 1
 *            policy                          (NULL: skipped, which saves an exp per logit)
 *   kept     [n] int32, |K|, the number of tokens the truncation kept (1 under greedy)
 *                                                                        (NULL: skipped)
 * n, v, row_stride >= 0, v <= INT32_MAX, and v >= 1 when n > 0; step, position and
 * row_offset >= 0. n == 0 writes nothing. On failure outputs may be partly written; the
 * error names the lowest failing row in `index`. The sampler keeps scratch between calls
 * (about 20 bytes per vocabulary entry and thread with top-k or top-p); one handle belongs
 * to one thread at a time. */
AEPO_API int32_t aepo_sampler_sample(aepo_sampler *sampler, const float *logits, int64_t n, int64_t v,
                                     int64_t row_stride, int64_t step, int64_t position, int64_t row_offset,
                                     const double *temperature, int32_t *tokens, float *logp, float *logp_t1,
                                     int32_t *kept, aepo_error *err);

/* @@SECTION fused@@ */

#ifdef __cplusplus
}
#endif

#endif /* AEPO_H */

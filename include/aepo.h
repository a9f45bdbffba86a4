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
 *   - A handle shared by mistake never crashes and is never corrupted: loss and fused-head
 *     handles are read-only after creation, so calls on one run concurrently with the
 *     results they give alone; sampler and controller handles hold a lock for each call, so
 *     calls on one run one after the other (a shared controller records every step, in
 *     lock order). Freeing a handle while another thread is in a call on it is a
 *     use-after-free, as for any C object. See docs/RELIABILITY.md.
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

/* The one place the version is written: the Makefile (file names, SONAME), the library,
 * the Python package and its metadata read these lines. */
#define AEPO_VERSION_MAJOR 0
#define AEPO_VERSION_MINOR 2
#define AEPO_VERSION_PATCH 0
/* MAJOR*10000 + MINOR*100 + PATCH */
#define AEPO_VERSION_NUMBER (AEPO_VERSION_MAJOR * 10000 + AEPO_VERSION_MINOR * 100 + AEPO_VERSION_PATCH)
#define AEPO_STRINGIFY_(x) #x
#define AEPO_STRINGIFY(x) AEPO_STRINGIFY_(x)
/* "MAJOR.MINOR.PATCH" */
#define AEPO_VERSION_STRING \
    AEPO_STRINGIFY(AEPO_VERSION_MAJOR) "." AEPO_STRINGIFY(AEPO_VERSION_MINOR) "." AEPO_STRINGIFY(AEPO_VERSION_PATCH)
/* The ABI number changes together with the SONAME (libaepo.so.<ABI>). */
#define AEPO_ABI_VERSION 1

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
 * reals in shortest round-trip form, and each named choice in its own spelling (an alias
 * such as "reinforce" for "gpg", or "exact" for "entropy", is written as the name). */

/* Writes the default config document. */
AEPO_API int32_t aepo_default_config_json(char *buf, size_t cap, size_t *len, aepo_error *err);

/* Validates a whole document. `json` need not be NUL-terminated; `len` is its length. */
AEPO_API int32_t aepo_config_validate(const char *json, size_t len, aepo_error *err);

/* Validates a document and writes its normalised form: every key present, defaults
 * filled, canonical formatting. */
AEPO_API int32_t aepo_config_normalize(const char *json, size_t len,
                                       char *buf, size_t cap, size_t *len_out, aepo_error *err);

/* ================================================================ runtime info === */
/* What this process runs on, as JSON text, under the size-query rule of every text output
 * (docs/API.md). Keys:
 *   version, abi          this library
 *   cpu       vendor, brand, features (the instruction sets the library uses or reports:
 *             "avx2", "fma", "avx512f", ...), os_saves_ymm / os_saves_zmm (whether the OS
 *             saves the AVX / AVX-512 registers, read with XGETBV), level ("SSE", "AVX",
 *             "AVX2" or "AVX-512": what the CPU and OS together support)
 *   kernels   the path each kernel family runs: logits, sampler, fused_head, loss
 *   blas      library (the file that provides cblas_sgemm), openblas (true when OpenBLAS's
 *             query functions are present; looked up at run time, so another CBLAS works
 *             and reports false), core (openblas_get_corename), core_level (null for a
 *             core this library does not classify), config, threads (null when unknown)
 *   warnings  strings, each naming a setup that runs slower than this machine allows and
 *             the exact fix; today an OpenBLAS core below the CPU's level, fixed by
 *             setting OPENBLAS_CORETYPE before the process loads the library.
 * The text is indented, with sorted keys. */
AEPO_API int32_t aepo_runtime_info(char *buf, size_t cap, size_t *len, aepo_error *err);

/* ============================================================== opaque handles === */

typedef struct aepo_loss aepo_loss;             /* policy loss, advantages, regulariser */
typedef struct aepo_controller aepo_controller; /* entropy controller */
typedef struct aepo_sampler aepo_sampler;       /* seeded temperature sampler */
typedef struct aepo_fused_head aepo_fused_head; /* fused LM head */

/* ================================================================ policy loss === */
/* The policy-loss handle reads the `loss`, `advantage` and `regularizer` sections of a
 * config document. It turns per-token log-probs into the loss, its exact gradient with
 * respect to those log-probs (a PyTorch trainer then calls logp.backward(grad)), the
 * gradient with respect to the per-token entropy, and metrics. It also computes outcome
 * advantages and selects AEPO's regulariser rows. See docs/LOSS.md for every formula.
 *
 * loss.policy_loss (verl's semantics; per token, r = e^(logp - old_logp), lo/hi = 1 -/+
 * clip_ratio_low/high; docs/LOSS.md has every formula and metric):
 *   "vanilla"   PPO clip with clip-higher, dual clip for A < 0, log-ratio clamped to +-20;
 *   "gspo"      sequence ratio s = e^min(mean_t(logp - old_logp), 10), clipped like PPO,
 *               gradient through each token's own logp; needs loss_agg_mode
 *               "seq-mean-token-mean" (any other is AEPO_ERR_CONFIG naming loss.loss_agg_mode);
 *   "cispo"     -A sg(clamp(r, lo, hi)) logp, clipped on both sides as verl does;
 *   "gpg", "reinforce" (the same)  -A logp;
 *   "clip_cov"  PPO clip without dual clip, and a random few unclipped tokens whose
 *               covariance (A - mean A)(logp - mean logp) lies in (clip_cov_lb, clip_cov_ub)
 *               detached; the pick is keyed by loss.seed and in->step, so it is the same on
 *               every run and with any thread count;
 *   "kl_cov"    -A r, plus ppo_kl_coef |logp - old_logp| on the kl_cov_ratio share of tokens
 *               with the largest covariance (ties to the lower index).
 * Every mode works with every loss_agg_mode except gspo (above), every kl_loss_type and the
 * entropy term. clip_cov and kl_cov take their statistics over the call (as verl does over
 * its micro-batch), so their micro-batch results do not add up to one call's.
 * advantage.estimator: "grpo" (with or without the std normalisation), "rloo",
 * "reinforce_plus_plus_baseline" (needs lengths), "grpo_passk" (needs 2+ responses per group).
 *
 * Loss = agg(l * is_weight) - entropy_coeff * agg(H) + kl_loss_coef * agg(KL)
 *        [+ reg_alpha * token-mean over regulariser tokens of l with A = 1, `weighted`]
 * where agg is loss_agg_mode with the global counts below, over the main rows.
 *
 * Thread contract: a handle belongs to one thread at a time; compute splits rows over
 * `loss.threads` pthreads for the duration of the call, and the result is bit-identical
 * for every thread count. */

/* Metric indices (pinned; new metrics are only ever appended). */
#define AEPO_LOSS_METRIC_PG_LOSS            0  /* aggregated policy loss of the main rows */
#define AEPO_LOSS_METRIC_PG_CLIPFRAC        1  /* mean(L2 > L1) over valid tokens (+1e-8 in the denominator) */
#define AEPO_LOSS_METRIC_PG_CLIPFRAC_LOWER  2  /* mean(A < 0 and dual clip active) */
#define AEPO_LOSS_METRIC_PPO_KL             3  /* mean(old_logp - logp), log-ratio clamped to +-20 */
#define AEPO_LOSS_METRIC_KL_LOSS            4  /* aggregated KL (before kl_loss_coef); 0 without ref_logp */
#define AEPO_LOSS_METRIC_ENTROPY            5  /* aggregated entropy; 0 without entropy */
#define AEPO_LOSS_METRIC_REG_USED           6  /* 1 if the call had regulariser tokens, else 0 */
#define AEPO_LOSS_METRIC_N_POSITIVE         7  /* regulariser rows in the call (reg_rows = 1) */
#define AEPO_LOSS_METRIC_REG_TOKEN_FRAC     8  /* regulariser tokens / valid tokens */
#define AEPO_LOSS_METRIC_N_TOKENS           9  /* valid tokens in the call, all rows */
#define AEPO_LOSS_METRIC_N_SEQS            10  /* rows with at least one valid token */
#define AEPO_LOSS_METRIC_REG_LOSS          11  /* the `weighted` regulariser term as added to the loss */
/* 12-17: plain token means over this call's valid tokens by row role (main rows: reg_rows = 0;
 * regulariser rows: reg_rows = 1, under either combine), not aggregated by loss_agg_mode: sum
 * mean * count and count over micro-batches and ranks. An empty role has mean 0. */
#define AEPO_LOSS_METRIC_NLL_MAIN          12  /* mean(-logp) over valid main-row tokens */
#define AEPO_LOSS_METRIC_ENTROPY_MAIN      13  /* mean(entropy) over valid main-row tokens; 0 without entropy */
#define AEPO_LOSS_METRIC_N_TOKENS_MAIN     14  /* valid main-row tokens in the call */
#define AEPO_LOSS_METRIC_NLL_REG           15  /* mean(-logp) over valid regulariser-row tokens */
#define AEPO_LOSS_METRIC_ENTROPY_REG       16  /* mean(entropy) over valid regulariser-row tokens; 0 without entropy */
#define AEPO_LOSS_METRIC_N_TOKENS_REG      17  /* valid regulariser-row tokens in the call */
#define AEPO_LOSS_METRIC_COUNT             18

/* Number of metrics this library writes (AEPO_LOSS_METRIC_COUNT of the library's build). */
AEPO_API int32_t aepo_loss_metric_count(void);
/* Static name of metric i ("pg_loss", ...), or NULL when i is out of range. */
AEPO_API const char *aepo_loss_metric_name(int32_t i);

/* The inputs of one aepo_loss_compute call. Caller-owned; read during the call only.
 * Initialise it with aepo_loss_inputs_init, then set what you have. Fields appended in
 * later versions take their default when the caller's struct_size does not cover them;
 * a larger struct_size than this library knows is accepted when the extra bytes are 0.
 * A struct_size below the first version's size is AEPO_ERR_INVALID_ARGUMENT naming
 * struct_size, as for every versioned struct.
 *
 * Shapes: [B, L] arrays are row-major with B*L elements. Positions where mask = 0 are
 * never read for validation and may hold anything (NaN included); their gradients are 0.
 * Every float under mask = 1 must be finite (AEPO_ERR_NON_FINITE names the array and the
 * flat index). */
typedef struct aepo_loss_inputs {
    size_t struct_size;         /* sizeof(aepo_loss_inputs) as the caller compiled it */
    int64_t B;                  /* rows (sequences), >= 0 */
    int64_t L;                  /* tokens per row (padded response length), >= 0 */
    const float *logp;          /* [B, L] current log-probs of the sampled tokens; required */
    const float *old_logp;      /* [B, L] behaviour log-probs; required */
    const float *advantages;    /* [B] per sequence, or [B, L] when adv_per_token = 1; required */
    const uint8_t *mask;        /* [B, L] 0/1 response mask; required */
    const float *ref_logp;      /* [B, L] reference log-probs, or NULL (no KL term);
                                   required when loss.kl_loss_coef > 0 */
    const float *is_weights;    /* [B, L] importance weights multiplying the policy term, or NULL */
    const float *entropy;       /* [B, L] per-token entropy, or NULL; required when
                                   loss.entropy_coeff != 0 */
    const uint8_t *reg_rows;    /* [B] 0/1: regulariser rows (advantage taken as 1), or NULL */
    int32_t adv_per_token;      /* 0: advantages is [B]; 1: [B, L] */
    int32_t reserved;           /* must be 0 */
    double reg_alpha;           /* weight of the `weighted` regulariser term, >= 0;
                                   negative (the default) uses regularizer.alpha */
    int64_t global_tokens;      /* valid main-row tokens of the whole mini-batch over every
                                   micro-batch and rank; negative (default): this call's */
    int64_t global_seqs;        /* non-empty main rows of the whole mini-batch; negative: this call's */
    int64_t global_reg_tokens;  /* regulariser tokens of the whole mini-batch (`weighted`);
                                   negative: this call's */
    int64_t dp_size;            /* data-parallel ranks, >= 1 (default 1) */
    int64_t step;               /* training step: keys clip_cov's random pick (with loss.seed) */
} aepo_loss_inputs;

/* Fills `in` with the defaults (NULL pointers, B = L = 0, reg_alpha = -1, global counts -1,
 * dp_size 1, step 0) and sets in->struct_size = struct_size. Pass sizeof(*in). */
AEPO_API int32_t aepo_loss_inputs_init(aepo_loss_inputs *in, size_t struct_size, aepo_error *err);

/* Creates a loss handle from a whole config document (NULL or "" = defaults). *out is
 * NULL after a failed call. */
AEPO_API int32_t aepo_loss_create(const char *json, size_t len, aepo_loss **out, aepo_error *err);

/* Releases a handle; NULL is a no-op. */
AEPO_API void aepo_loss_free(aepo_loss *loss);

/* Writes the effective config of the handle: the whole normalised document. */
AEPO_API int32_t aepo_loss_config_json(const aepo_loss *loss, char *buf, size_t cap, size_t *len,
                                       aepo_error *err);

/* Computes the loss of one call (a micro-batch, or a whole batch).
 *   value         out: the loss (double), or NULL
 *   grad          out: [B, L] dLoss/dlogp, 0 where mask = 0, or NULL
 *   grad_entropy  out: [B, L] dLoss/dentropy, 0 where mask = 0 (all 0 without entropy), or NULL
 *   metrics       out: the first min(metrics_cap, AEPO_LOSS_METRIC_COUNT) metrics, or NULL
 * Outputs must not overlap the inputs.
 *
 * Aggregation over the main rows (all rows, or the non-regulariser rows under
 * regularizer.combine = "weighted"), with N = global_tokens, G = global_seqs (this call's
 * counts when not given), n_b the valid tokens of row b, K = loss_scale_factor, dp = dp_size:
 *   token-mean              sum(v) / N * dp
 *   token-sum               sum(v) * dp
 *   seq-mean-token-sum      sum_b (sum_t v) / G * dp
 *   seq-mean-token-mean     sum_b (sum_t v) / (n_b + 1e-8) / G * dp
 *   seq-mean-token-sum-norm sum_b (sum_t v) / (G * K) * dp
 * With the global counts, the losses and gradients of the micro-batches of a mini-batch sum
 * to those of one call on the whole mini-batch (times dp before the data-parallel mean).
 * With global counts an empty call returns loss 0; without them, a call whose main rows
 * have no valid token is an error (token-sum excepted), and dp_size > 1 requires them.
 *
 * Regulariser rows (reg_rows = 1) take advantage 1. Under "replace" they are ordinary rows
 * of the batch. Under "weighted" they form a separate term, reg_alpha * token-mean over
 * regulariser tokens (global_reg_tokens) of the policy loss, and take no part in the KL
 * and entropy terms.
 *
 * Everything except finiteness is checked before any output is written. NaN or Inf under
 * mask = 1 is found in the same pass as the loss, so on AEPO_ERR_NON_FINITE `grad` and
 * `grad_entropy` may be partly written (loss and metrics are not); gspo, clip_cov and kl_cov
 * read logp, old_logp (and, for the covariance modes, advantages) in a first pass and report
 * those before writing. */
AEPO_API int32_t aepo_loss_compute(const aepo_loss *loss, const aepo_loss_inputs *in, double *value, float *grad,
                                   float *grad_entropy, double *metrics, size_t metrics_cap,
                                   aepo_error *err);

/* Outcome advantages with the handle's `advantage` section: one float per response.
 *   rewards [n], group_ids [n] (responses to one prompt share an id, in any order),
 *   lengths [n] valid tokens per response or NULL (required by
 *   "reinforce_plus_plus_baseline", unused by the others), out [n].
 * grpo: (r - mean) / (std + epsilon) per group with the unbiased std, or r - mean when
 * advantage.norm_adv_by_std_in_grpo is false; a singleton group uses mean 0 and std 1;
 * a group of equal rewards gets 0.
 * rloo: n/(n-1) (r - mean); a singleton gets 0 (advantage.rloo_singleton "zero") or r
 * ("score").
 * reinforce_plus_plus_baseline: r - group mean (0 for a singleton), whitened over the valid
 * tokens of the batch (each response counted lengths[i] times, Bessel's correction,
 * (x - mu) / sqrt(var + 1e-8)); 0 for a response with no token. NULL lengths, or fewer than
 * 2 tokens in all, is AEPO_ERR_INVALID_ARGUMENT naming lengths.
 * grpo_passk: each group's best response (the first of equal ones) gets r_max - r_second,
 * divided by std + epsilon when norm_adv_by_std_in_grpo; the others 0. A group with one
 * response is AEPO_ERR_INVALID_ARGUMENT naming group_ids, err->index its response.
 * A NaN or Inf reward is AEPO_ERR_NON_FINITE naming rewards; an advantage of finite rewards
 * that overflows float32 (rewards near +-FLT_MAX) is AEPO_ERR_NON_FINITE naming out. */
AEPO_API int32_t aepo_loss_advantages(const aepo_loss *loss, const float *rewards, const int64_t *group_ids,
                                      int64_t n, const int64_t *lengths, float *out, aepo_error *err);

/* AEPO regulariser selection over the n regulariser rollouts: their advantages (handle's
 * estimator, within their groups, as float32) must exceed regularizer.threshold (compared
 * in float32, like the reference code's fp32 tensor); the first
 * min(k_max, n_positive) positives in input order are kept, then the first floor-half of
 * those when halve = 1. Writes the k chosen row indices (ascending) into indices, and k and
 * n_positive. indices == NULL with cap == 0 only reports k and n_positive; a non-NULL
 * buffer with cap < k is AEPO_ERR_BUFFER_TOO_SMALL (k is still written). k = 0 means no
 * regulariser this step. The call has no lengths, so a handle with estimator
 * "reinforce_plus_plus_baseline" fails with AEPO_ERR_INVALID_ARGUMENT naming lengths. */
AEPO_API int32_t aepo_loss_select_regularizer(const aepo_loss *loss, const float *rewards,
                                              const int64_t *group_ids, int64_t n, int64_t k_max,
                                              int32_t halve, int64_t *indices, size_t cap, int64_t *k,
                                              int64_t *n_positive, aepo_error *err);

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
 *   log-likelihood, as in the reference code) or "entropy" (the exact per-token entropy;
 *   "exact" is an older spelling of it).
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
#define AEPO_CONTROLLER_STATISTIC_NLL     0  /* sampled-token NLL: "nll" */
#define AEPO_CONTROLLER_STATISTIC_ENTROPY 1  /* exact token entropy: "entropy" */
#define AEPO_CONTROLLER_STATISTIC_COUNT   2
/* The name of AEPO_CONTROLLER_STATISTIC_ENTROPY before 0.2 (and "exact" its config
 * spelling, still accepted); both are kept for source compatibility. */
#define AEPO_CONTROLLER_STATISTIC_EXACT AEPO_CONTROLLER_STATISTIC_ENTROPY

/* Why a decision came out as it did; pinned, new reasons are only appended. */
#define AEPO_CONTROLLER_REASON_INITIAL            0 /* no observation yet: from initial_entropy */
#define AEPO_CONTROLLER_REASON_AT_OR_BELOW_TARGET 1 /* bang-bang: statistic <= target, T_high */
#define AEPO_CONTROLLER_REASON_ABOVE_TARGET       2 /* bang-bang: statistic > target, T_low */
#define AEPO_CONTROLLER_REASON_HYSTERESIS_HOLD    3 /* bang-bang: inside the band, level held */
#define AEPO_CONTROLLER_REASON_TRACKING           4 /* adaptive: the actuator moved freely */
#define AEPO_CONTROLLER_REASON_SATURATED_HIGH     5 /* adaptive: at t_max (or alpha_max at t_high) */
#define AEPO_CONTROLLER_REASON_SATURATED_LOW      6 /* adaptive: at t_min (or alpha_max at t_low) */
#define AEPO_CONTROLLER_REASON_RATE_LIMITED       7 /* adaptive: the change was cut to t_rate */
#define AEPO_CONTROLLER_REASON_UNREACHABLE        8 /* adaptive: at a bound, error of one sign */
#define AEPO_CONTROLLER_REASON_COUNT              9

/* `step` value meaning "the step of the pending decision". */
#define AEPO_CONTROLLER_STEP_NEXT (-1)

/* Static names: the config spelling for modes and statistics ("bang_bang", "entropy") and
 * snake_case for reasons ("at_or_below_target"); "unknown" for other values. */
AEPO_API const char *aepo_controller_mode_name(int32_t mode);
AEPO_API const char *aepo_controller_statistic_name(int32_t statistic);
AEPO_API const char *aepo_controller_reason_name(int32_t reason);

/* One decision. The caller sets struct_size = sizeof(aepo_decision) before a call; the
 * library fills the fields that struct_size covers and leaves struct_size, and any later
 * fields of a newer, larger struct, unchanged: a caller compiled against version 1 gets
 * the version 1 fields. A struct_size below AEPO_DECISION_SIZE_V1 (the size of the first
 * version) is AEPO_ERR_INVALID_ARGUMENT naming struct_size, as for every versioned struct.
 *
 * Version 2 appends the self-tuning controller's estimate (adaptive, tuning "auto"), for
 * logging: the identified loop and the gains derived from it. They are NaN (est_delay -1)
 * in other modes and before the first observation. */
#define AEPO_DECISION_SIZE_V1 80
#define AEPO_DECISION_SIZE_V2 144
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
    /* version 2 */
    double est_gain;              /* b: statistic change per step per unit of T - 1 */
    double est_same_step;         /* c: same-step response of the statistic per unit of T - 1 */
    double est_process_noise;     /* estimated sd of the entropy's own noise per step, nats */
    double est_measurement_noise; /* estimated sd of the statistic's measurement noise, nats */
    double est_horizon;           /* steps beyond the delay the law aims ahead */
    double est_feedback;          /* proportional gain: temperature per nat of predicted error */
    double est_confidence;        /* b / (b + 2 sd(b)), in (0, 1] */
    int32_t est_delay;            /* identified steps between a decision and its effect; -1 none */
    int32_t reserved2;            /* 0 */
} aepo_decision;

/* Creates a controller from a whole config document (NULL or "" means all defaults).
 * Config errors are AEPO_ERR_CONFIG naming the JSON path; on any failure *out is NULL. */
AEPO_API int32_t aepo_controller_create(const char *json, size_t len, aepo_controller **out,
                                        aepo_error *err);

/* Releases a controller; NULL is a no-op. */
AEPO_API void aepo_controller_free(aepo_controller *controller);

/* Writes the effective config document the controller runs with (text rule above). */
AEPO_API int32_t aepo_controller_config_json(const aepo_controller *controller, char *buf, size_t cap,
                                             size_t *len, aepo_error *err);

/* Writes the decision for the coming step into *out. Does not advance. */
AEPO_API int32_t aepo_controller_decision(const aepo_controller *controller, aepo_decision *out,
                                          aepo_error *err);

/* Records `value`, the token mean of the statistic `statistic` (AEPO_CONTROLLER_STATISTIC_*)
 * over the update of training step `step` (or AEPO_CONTROLLER_STEP_NEXT), advances, and
 * writes the decision for step + 1 into *next (which may be NULL). */
AEPO_API int32_t aepo_controller_step(aepo_controller *controller, int32_t statistic, double value,
                                      int64_t step, aepo_decision *next, aepo_error *err);

/* The same, from a sum over `count` tokens as all-reduced across ranks: the statistic is
 * sum / count. `count` must be >= 1; errors name "nll_sum" / "entropy_sum" and "count". */
AEPO_API int32_t aepo_controller_step_sums(aepo_controller *controller, int32_t statistic, double sum,
                                           int64_t count, int64_t step, aepo_decision *next,
                                           aepo_error *err);

/* The same, from the loss metrics of the update (aepo_loss_compute or
 * aepo_fused_head_loss_and_grad; n >= AEPO_LOSS_METRIC_N_TOKENS_REG + 1): the statistic that
 * controller.statistic picks, over the rows controller.statistic_rows picks ("all", the
 * default: main and regulariser rows weighted by their token counts; "main": the *_main
 * metrics). Errors name "metrics" (err->index the metric);
 * no token in the picked rows is AEPO_ERR_INVALID_ARGUMENT. For "entropy", the metrics must
 * carry entropy (a loss call given the entropy input, or the fused head). */
AEPO_API int32_t aepo_controller_step_metrics(aepo_controller *controller, const double *metrics, size_t n,
                                              int64_t step, aepo_decision *next, aepo_error *err);

/* Writes the controller's state as JSON (text rule above): the pending decision, the
 * level or actuator, the smoothed statistic, the history, and the controller section of
 * the config. Reals keep 17 significant digits, so restoring continues bit for bit. */
AEPO_API int32_t aepo_controller_state_json(const aepo_controller *controller, char *buf, size_t cap,
                                            size_t *len, aepo_error *err);

/* Replaces the state with a blob from aepo_controller_state_json (`json` need not be
 * NUL-terminated). A blob saved under another mode, statistic or (adaptive) actuator, or
 * one that is malformed, is AEPO_ERR_STATE naming the field, and changes nothing. Other
 * config keys may differ (a new target or gains); they apply from the next step on. With
 * an equal config the restored controller gives decisions bit-identical to the one that
 * saved it. The history keeps the newest `controller.history` entries. */
AEPO_API int32_t aepo_controller_restore(aepo_controller *controller, const char *json, size_t len,
                                         aepo_error *err);

/* History: the last `controller.history` decisions, oldest first, the pending one last. */
AEPO_API int32_t aepo_controller_history_count(const aepo_controller *controller, int64_t *count,
                                               aepo_error *err);
/* Writes entry `index` (0 = oldest, count - 1 = the pending decision) into *out. */
AEPO_API int32_t aepo_controller_history(const aepo_controller *controller, int64_t index,
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
 * Strides are in elements; a negative stride means the contiguous one (stride_l = V,
 * stride_b = L*V). The B*L rows must not overlap (for the axes with more than one entry,
 * the smaller stride >= V and the larger >= the smaller times its count). A stride is
 * ignored for an axis of size 1.
 *
 * MASKS. mask may be NULL (all ones). Rows with mask = 0 are not read at all: their
 * logits and targets may hold anything (NaN, -100). Under mask = 1, logits may hold -inf
 * (a banned token) but not NaN or +inf, a row must not be all -inf, and targets must lie in
 * [0, V). A target whose logit is -inf (probability 0) gets log p = -inf exactly (and
 * nll_sum becomes +inf): the one non-finite output of a successful call. Errors name the
 * argument and the row (err->index is the row).
 *
 * THREADS. threads in [1, 256] splits the rows over plain pthreads for the call; every
 * result is bit-identical for every thread count. */

/* ARGUMENTS. Both calls read their shared inputs from an aepo_logits_inputs, versioned as
 * aepo_loss_inputs is: aepo_logits_inputs_init zeroes it and sets the defaults
 * (temperature 1, threads 1, contiguous strides), then the caller sets what it needs. New
 * options are appended to the struct, never added as arguments. */
typedef struct aepo_logits_inputs {
    size_t struct_size;          /* sizeof(aepo_logits_inputs), set by aepo_logits_inputs_init */
    const float *logits;         /* [B, L, V], strided (LAYOUT above) */
    int64_t B, L, V;
    int64_t stride_b, stride_l;  /* in elements; a negative stride means contiguous (L*V, V) */
    const int32_t *targets;      /* [B*L] int32, read where mask = 1 */
    const uint8_t *mask;         /* [B*L] uint8 (0/1) or NULL (all ones) */
    double temperature;          /* > 0 and finite (for greedy decoding, see sampler.greedy) */
    int64_t threads;             /* in [1, 256] */
} aepo_logits_inputs;

/* Zeroes `in` (struct_size bytes) and sets the defaults. struct_size below the first
 * version's size is AEPO_ERR_INVALID_ARGUMENT naming struct_size. */
AEPO_API int32_t aepo_logits_inputs_init(aepo_logits_inputs *in, size_t struct_size, aepo_error *err);

/* aepo_logits_stats: one streaming pass per row (online log-sum-exp).
 *   in->targets may be NULL when logp, logp_t1 and nll_sum are all NULL.
 * Outputs (each may be NULL; rows with mask = 0 get 0):
 *   logp       [B*L] float   log p(target) at T
 *   entropy    [B*L] float   H at T
 *   lse        [B*L] double  lse at T; float64 because logits_backward reads it back and a
 *                            float32 lse would add up to 6e-8*|lse| to every log p there
 *   logp_t1    [B*L] float   log p(target) at T = 1 (computed only when non-NULL)
 *   entropy_sum, nll_sum     double: sum of H and of -logp over rows with mask = 1, added
 *                            in row order (ready to all-reduce)
 *   count                    int64: the number of rows with mask = 1
 * Finite logits too far apart for float32 at T (a log-prob or (x - max) / T beyond
 * +-3.4e38) are AEPO_ERR_NON_FINITE naming the output (logp, logp_t1) or logits, with the
 * row in err->index: never a silent -inf. On failure, outputs of rows before the failing
 * one may be written. */
AEPO_API int32_t aepo_logits_stats(const aepo_logits_inputs *in,
                                   float *logp, float *entropy, double *lse, float *logp_t1,
                                   double *entropy_sum, double *nll_sum, int64_t *count,
                                   aepo_error *err);

/* aepo_logits_backward: dL/dlogits for L = sum_r grad_logp[r]*logp[r] + grad_entropy[r]*H[r],
 *   dL/dlogits[r, v] = (grad_logp[r] * (onehot(target)_v - p_v)
 *                       - grad_entropy[r] * p_v * (log p_v + H[r])) / T,
 * reusing lse and entropy from aepo_logits_stats at the same temperature: one read of each
 * logit, one write of each output, no extra pass.
 *   in            as for aepo_logits_stats; in->targets is needed only with grad_logp
 *   lse           [B*L] double, from aepo_logits_stats
 *   entropy       [B*L] float, from aepo_logits_stats; needed only with grad_entropy
 *   grad_logp     [B*L] float upstream gradient of logp, or NULL (no logp term)
 *   grad_entropy  [B*L] float upstream gradient of H, or NULL (no entropy term)
 *   out           [B, L, V] float, element (b, l, v) at out[b*out_stride_b + l*out_stride_l + v]
 *                 (a negative stride means contiguous, as for the inputs)
 * out may be in->logits itself (the same pointer and strides): the gradient then overwrites
 * the logits in place. Any other overlap of out and logits is AEPO_ERR_INVALID_ARGUMENT.
 * A row whose mask is 0, or whose upstream gradients are both 0, gets a zero output row
 * and nothing else of it is read (its target is not checked). Every active row is
 * validated before anything is written; the one error found while writing is a gradient
 * that overflows float32 although the inputs are finite (AEPO_ERR_NON_FINITE naming "out"
 * with the row in err->index; other rows may then be written). */
AEPO_API int32_t aepo_logits_backward(const aepo_logits_inputs *in, const double *lse, const float *entropy,
                                      const float *grad_logp, const float *grad_entropy,
                                      float *out, int64_t out_stride_b, int64_t out_stride_l,
                                      aepo_error *err);

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
 * means defaults). On success *out owns a new handle; free it with aepo_sampler_free. *out
 * is NULL after a failed call. */
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

/* ================================================================= fused head === */
/* The fused LM head reads the `fused` section of a config document (chunk_n, chunk_v,
 * temperature, threads). From hidden states and the output projection it computes
 * per-token log-probs, exact entropy and log-sum-exp at the policy temperature, their
 * gradients, and, with a policy-loss handle, the loss and every gradient in one call,
 * without ever materialising the [N, V] logits.
 *
 * Shapes shared by every call:
 *   X        [N, D] row-major hidden states
 *   W        [V, D] row-major output projection (the layout of torch.nn.Linear(D, V).weight)
 *   bias     [V], or NULL for none
 *   targets  [N] token ids, in [0, V) under mask = 1 (any value, -100 included, elsewhere)
 *   mask     [N] 0/1, or NULL: every row is valid
 * With T = fused.temperature the logits of row r are z_r = (X_r . W^T + bias) / T, and
 *   logp_r = z_r[targets_r] - lse_r,  lse_r = log sum_j exp z_r[j],
 *   entropy_r = lse_r - sum_j softmax(z_r)_j z_r[j]  (exact, over the whole vocabulary).
 * Rows with mask = 0 are never read (X may hold NaN there); their outputs are 0.
 *
 * Work and memory: every call takes the valid rows chunk_n at a time. forward and backward
 * walk each row block over the vocabulary in chunk_v columns (peak extra memory about
 * chunk_n * (chunk_v + 2 D) floats plus O(N + V)); loss_and_grad makes the chunk_n x V
 * logits of a row block at once (about chunk_n * (V + 2 D) floats plus O(N + V)), so each
 * logit is produced once. The defaults (128, 8192) keep loss_and_grad at 16 MB for
 * V = 32000; a taller chunk_n (384-512) is faster where its memory is affordable, since
 * every row block's products pass over all of W and dW (docs/FUSED.md). The handle keeps
 * nothing between calls.
 *
 * Threads: the library's own loops use fused.threads pthreads and their results are
 * bit-identical for every fused.threads. The three products are cblas_sgemm calls on
 * OpenBLAS's pool, whose size belongs to the host: set OPENBLAS_NUM_THREADS (or call
 * openblas_set_num_threads); libaepo never changes it. OpenBLAS's results can change in the
 * last bits with its thread count: measured with OpenBLAS 0.3.21 (docs/RELIABILITY.md), one
 * thread and two or more threads round differently (about 1e-7 relative in log p and lse,
 * more in entries of dW and dX that cancel), while 2, 3, 4 and 8 threads agree bit for bit.
 * For bit-identical runs, fix OPENBLAS_NUM_THREADS as well as the seeds.
 *
 * Errors, all reported before any output is written: negative or overflowing sizes, D or
 * (for loss_and_grad) V above INT32_MAX (BLAS takes 32-bit sizes) and buffers that do not
 * fit are AEPO_ERR_SHAPE; a mask value other than 0/1, a target out of range under mask = 1,
 * and outputs that overlap an input or each other are AEPO_ERR_INVALID_ARGUMENT; NaN or Inf
 * in X (under mask = 1), W or bias is AEPO_ERR_NON_FINITE with the flat index in err->index.
 * The errors found during or after the pass (outputs may then be partly written): a logits
 * row that overflows float32 although X, W and bias are finite, AEPO_ERR_NON_FINITE naming X
 * with the row in err->index; and an output that is not finite after the call (a value that
 * overflows float32, lse or entropy that are not the forward results of these rows, or
 * dW / dbias holding NaN or Inf before the call), AEPO_ERR_NON_FINITE naming the output with
 * the flat index. A successful call never leaves NaN or Inf in an output. */

/* Creates a fused-head handle from a whole config document (NULL or "" = defaults). A zero
 * chunk or a temperature <= 0 is AEPO_ERR_CONFIG naming the key. *out is NULL after a failed
 * call. */
AEPO_API int32_t aepo_fused_head_create(const char *json, size_t len, aepo_fused_head **out, aepo_error *err);

/* Releases a handle; NULL is a no-op. */
AEPO_API void aepo_fused_head_free(aepo_fused_head *head);

/* Writes the effective config of the handle: the whole normalised document. */
AEPO_API int32_t aepo_fused_head_config_json(const aepo_fused_head *head, char *buf, size_t cap, size_t *len,
                                             aepo_error *err);

/* ARGUMENTS. The three calls read the head's inputs from an aepo_fused_head_inputs,
 * versioned as aepo_loss_inputs is: aepo_fused_head_inputs_init zeroes it (every pointer
 * NULL, every size 0), then the caller sets the fields. New options are appended to the
 * struct, never added as arguments. */
typedef struct aepo_fused_head_inputs {
    size_t struct_size;          /* sizeof(aepo_fused_head_inputs), set by the init call */
    const float *X;              /* [N, D] row-major hidden states */
    const float *W;              /* [V, D] row-major output projection */
    const float *bias;           /* [V], or NULL for none */
    const int32_t *targets;      /* [N] token ids */
    const uint8_t *mask;         /* [N] 0/1, or NULL: every row is valid */
    int64_t N, D, V;
} aepo_fused_head_inputs;

/* Zeroes `in` (struct_size bytes) and sets its struct_size. struct_size below the first
 * version's size is AEPO_ERR_INVALID_ARGUMENT naming struct_size. */
AEPO_API int32_t aepo_fused_head_inputs_init(aepo_fused_head_inputs *in, size_t struct_size, aepo_error *err);

/* Per-token log-prob, entropy and log-sum-exp at the handle's temperature.
 *   logp, entropy [N] float and lse [N] double: outputs, each may be NULL; 0 where mask = 0.
 *   lse is float64 because backward reads it back (as aepo_logits_stats does). */
AEPO_API int32_t aepo_fused_head_forward(const aepo_fused_head *head, const aepo_fused_head_inputs *in,
                                         float *logp, float *entropy, double *lse, aepo_error *err);

/* Gradients of L = sum_r grad_logp[r] * logp_r + grad_entropy[r] * entropy_r.
 *   in: as in forward;
 *   lse [N]: forward's lse (required); entropy [N]: forward's entropy (required with
 *   grad_entropy, else may be NULL); grad_logp, grad_entropy [N]: upstream gradients, each
 *   may be NULL (no such term). All four are read only under mask = 1 and must be finite
 *   there.
 *   dX [N, D] or NULL: written; rows with mask = 0 are set to 0.
 *   dW [V, D] or NULL, dbias [V] or NULL: the gradients are ADDED to what they hold (zero
 *   them first for a fresh gradient), as a trainer accumulates .grad.
 * The logits are recomputed chunk by chunk: dX = G.W, dW += G^T.X, dbias += colsum(G), with
 *   G[r, j] = (grad_logp_r (1[j = targets_r] - p_j) - grad_entropy_r p_j (log p_j + entropy_r)) / T. */
AEPO_API int32_t aepo_fused_head_backward(const aepo_fused_head *head, const aepo_fused_head_inputs *in,
                                          const double *lse, const float *entropy,
                                          const float *grad_logp, const float *grad_entropy,
                                          float *dX, float *dW, float *dbias, aepo_error *err);

/* The policy loss of a batch whose log-probs and entropies come from the head, and every
 * gradient, in one pass.
 *   loss: a loss handle (its config decides the loss, see aepo_loss_compute);
 *   in: the head's inputs as in forward, with in->N = loss_in->B * loss_in->L; the mask is
 *       loss_in->mask, so in->mask must be NULL or that same pointer;
 *   loss_in: the loss inputs as for aepo_loss_compute, except that loss_in->logp and
 *       loss_in->entropy must be NULL (the head computes them);
 *   value: out, the loss, or NULL; metrics: out, the first min(metrics_cap,
 *       AEPO_LOSS_METRIC_COUNT) loss metrics, or NULL (the entropy metrics, ENTROPY,
 *       ENTROPY_MAIN and ENTROPY_REG, are always reported from the head's exact entropies
 *       at fused.temperature, whatever loss.entropy_coeff is);
 *   dX [N, D] or NULL: written, 0 where mask = 0;
 *   dW [V, D] or NULL, dbias [V] or NULL: ADDED to;
 *   logp, entropy [N] or NULL: written, 0 where mask = 0.
 * For losses whose token terms are separable (vanilla, cispo, gpg/reinforce) the loss
 * kernel runs on each chunk_n x V block as soon as its log-probs exist, and each logit is
 * produced once. gspo, clip_cov and kl_cov need every log-prob first (the sequence ratio,
 * the covariance statistics): for them the call runs aepo_fused_head_forward, the loss, then
 * aepo_fused_head_backward, so the logits are produced twice (chunk_n x chunk_v blocks, extra
 * memory as forward and backward). The result equals aepo_fused_head_forward, then
 * aepo_loss_compute (with loss_in->step), then aepo_fused_head_backward, up to float32
 * rounding (bit for bit for the two-pass modes). */
AEPO_API int32_t aepo_fused_head_loss_and_grad(const aepo_fused_head *head, const aepo_loss *loss,
                                               const aepo_fused_head_inputs *in,
                                               const aepo_loss_inputs *loss_in, double *value,
                                               float *dX, float *dW, float *dbias,
                                               double *metrics, size_t metrics_cap,
                                               float *logp, float *entropy, aepo_error *err);

#ifdef __cplusplus
}
#endif

#endif /* AEPO_H */

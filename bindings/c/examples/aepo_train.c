/* aepo_train.c - a complete AEPO training loop in plain C99 against the installed libaepo.
 *
 * Build, against an installed libaepo (`make install`, or `make stage` in the source tree):
 *   cc -std=c99 -O2 aepo_train.c task.c optim.c -o aepo_train $(pkg-config --cflags --libs aepo) -lm
 * Run:
 *   ./aepo_train adaptive.json 200
 *
 * The policy is a small LM head trained on the digit-sum task of task.h (the task of the
 * Python demo, docs/DEMO.md). One training step follows the reference algorithm
 * (arXiv 2510.08141):
 *   1. B prompts x n rollouts at the policy temperature (aepo_sampler_sample), their
 *      rewards, and GRPO advantages within each prompt's group (aepo_loss_advantages);
 *   2. the controller's decision for the step (aepo_controller_decision);
 *   3. regulariser rollouts, n per prompt, drawn at the decision's temperature, and the
 *      positives among them (aepo_loss_select_regularizer);
 *   4. regularizer.combine = "replace": the k selected positives take the place of the first
 *      k main rollouts with advantage 1; "weighted": they are appended and weighted by alpha;
 *   5. old log-probs of the update batch at the policy temperature (aepo_fused_head_forward),
 *      then the policy loss and its gradients in one pass (aepo_fused_head_loss_and_grad);
 *   6. an Adam step on the head's weights and bias (optim.c);
 *   7. the controller is fed the statistic of that update, from the update's loss metrics
 *      (aepo_controller_step_metrics: controller.statistic over the rows that
 *      controller.statistic_rows picks).
 * controller.k_max = 0 turns the regulariser off, and the step is then plain GRPO
 * (grpo.json): the loop is the same, steps 3 and 4 do nothing.
 *
 * The config file is libaepo's own JSON document (docs/CONFIG.md), passed unchanged to
 * every create call; each handle reads its sections. The trainer's own settings (batch,
 * learning rate, seeds) are command-line options. Every library call is checked; a failure
 * prints the call, the status name and the library's message, and the program frees every
 * handle and buffer on every path.
 */
#define _POSIX_C_SOURCE 200809L /* mkdir and clock_gettime; everything else is C99 */

#include <aepo.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "optim.h"
#include "task.h"

/* The task: 6 digits, trained on the sums 15..39 (as the Python demo). */
#define TASK_LENGTH 6
#define TASK_LO 15
#define TASK_HI 39
/* The initial head's logits are N(0, 1.6^2): about 1.55 nats per token to start with. */
#define INIT_SCALE 1.6

/* ------------------------------------------------------------------- settings -- */

typedef struct settings {
    const char *config_path; /* libaepo config document */
    int64_t steps;           /* training steps */
    int64_t prompts;         /* B: prompts per step */
    int64_t rollouts;        /* n: rollouts per prompt (main and regulariser alike) */
    double lr;               /* Adam learning rate */
    uint64_t seed;           /* the prompt stream (the sampler's seed is sampler.seed) */
    uint64_t init_seed;      /* the initial head */
    const char *out_dir;     /* metrics.csv and config.json go here, or NULL */
    int64_t log_every;       /* a log line every this many steps; 0 = summary only */
} settings;

static void usage(FILE *f) {
    fprintf(f,
            "usage: aepo_train CONFIG.json STEPS [options]\n"
            "  CONFIG.json    a libaepo config document (docs/CONFIG.md); controller.k_max = 0 runs GRPO\n"
            "  STEPS          training steps\n"
            "options:\n"
            "  --prompts B    prompts per step (default 32)\n"
            "  --rollouts N   rollouts per prompt (default 8)\n"
            "  --lr X         Adam learning rate (default 0.025)\n"
            "  --seed S       seed of the prompt stream (default 0; the sampler's is sampler.seed)\n"
            "  --init-seed S  seed of the initial policy (default 1)\n"
            "  --out DIR      write DIR/metrics.csv (one row per step) and DIR/config.json\n"
            "  --log-every K  a log line every K steps (default 1; 0 prints only the summary)\n");
}

static int parse_int(const char *s, int64_t lo, int64_t *out) {
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo) return -1;
    *out = (int64_t)v;
    return 0;
}

static int parse_settings(int argc, char **argv, settings *s) {
    int i;
    int64_t v;
    s->prompts = 32;
    s->rollouts = 8;
    s->lr = 0.025;
    s->seed = 0;
    s->init_seed = 1;
    s->out_dir = NULL;
    s->log_every = 1;
    if (argc < 3) return -1;
    s->config_path = argv[1];
    if (parse_int(argv[2], 1, &s->steps) != 0 || s->steps > 100000000) {
        fprintf(stderr, "aepo_train: STEPS must be an integer in [1, 10^8], got '%s'\n", argv[2]);
        return -1;
    }
    for (i = 3; i < argc; i += 2) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (val == NULL) {
            fprintf(stderr, "aepo_train: option %s needs a value\n", opt);
            return -1;
        }
        if (strcmp(opt, "--prompts") == 0) {
            bad = parse_int(val, 1, &s->prompts) != 0;
        } else if (strcmp(opt, "--rollouts") == 0) {
            bad = parse_int(val, 2, &s->rollouts) != 0; /* a group needs two to compare */
        } else if (strcmp(opt, "--lr") == 0) {
            char *end;
            s->lr = strtod(val, &end);
            bad = end == val || *end != '\0' || !(s->lr > 0 && s->lr < 1e3);
        } else if (strcmp(opt, "--seed") == 0) {
            bad = parse_int(val, 0, &v) != 0;
            s->seed = (uint64_t)v;
        } else if (strcmp(opt, "--init-seed") == 0) {
            bad = parse_int(val, 0, &v) != 0;
            s->init_seed = (uint64_t)v;
        } else if (strcmp(opt, "--out") == 0) {
            s->out_dir = val;
        } else if (strcmp(opt, "--log-every") == 0) {
            bad = parse_int(val, 0, &s->log_every) != 0;
        } else {
            fprintf(stderr, "aepo_train: unknown option '%s'\n", opt);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "aepo_train: option %s: '%s' is not a valid value\n", opt, val);
            return -1;
        }
    }
    if (s->prompts > (1 << 20) || s->rollouts > (1 << 12)) {
        fprintf(stderr, "aepo_train: --prompts is at most 2^20 and --rollouts at most 4096\n");
        return -1;
    }
    return 0;
}

/* --------------------------------------------------------------- error report -- */

/* Prints a failed library call: its name (the text of the call up to its '('), the status
 * name and number, and the library's message, which names the offending argument. */
static void report_failure(const char *call, int32_t status, const aepo_error *err) {
    const char *paren = strchr(call, '(');
    int name_len = paren ? (int)(paren - call) : (int)strlen(call);
    fprintf(stderr, "aepo_train: %.*s failed with %s (%d): %s", name_len, call, aepo_status_name(status),
            (int)status, err->message);
    /* The message begins with the argument's name; say it only when it does not. */
    if (err->argument[0] != '\0' && strncmp(err->message, err->argument, strlen(err->argument)) != 0) {
        fprintf(stderr, " [argument %s]", err->argument);
    }
    if (err->index >= 0) fprintf(stderr, " [index %lld]", (long long)err->index);
    fputc('\n', stderr);
}

/* Runs a library call that takes `&err` last; on failure reports it and jumps to `done`,
 * where main frees everything. */
#define AEPO_TRY(call)                              \
    do {                                            \
        int32_t try_status_ = (call);               \
        if (try_status_ != AEPO_OK) {               \
            report_failure(#call, try_status_, &err); \
            goto done;                              \
        }                                           \
    } while (0)

/* -------------------------------------------------------------------- buffers -- */

/* Every array of the loop, allocated once. N = B * n rows of the main batch; the update
 * batch holds up to 2N rows (combine = "weighted" appends up to N regulariser rows). */
typedef struct buffers {
    int32_t *prompts;     /* [N] the sum row i must write */
    int64_t *groups;      /* [N] the prompt slot of row i: the GRPO group */
    int32_t *tokens;      /* [N, L] main rollouts */
    int32_t *states;      /* [N, L] their decoding states (the hot index of the hidden state) */
    float *rewards;       /* [N] */
    float *adv;           /* [N] */
    float *entropy;       /* [N, L] exact per-token entropy of the main rollouts */
    int32_t *reg_tokens;  /* [N, L] regulariser rollouts */
    int32_t *reg_states;  /* [N, L] */
    float *reg_rewards;   /* [N] */
    int64_t *selected;    /* [N] the regulariser rows chosen by the selection */
    int32_t *upd_tokens;  /* [2N, L] the update batch */
    int32_t *upd_states;  /* [2N, L] */
    float *upd_adv;       /* [2N] */
    uint8_t *upd_reg;     /* [2N] 1 for appended regulariser rows ("weighted") */
    uint8_t *mask;        /* [2N, L] response mask: every digit is a valid token */
    float *old_logp;      /* [2N, L] */
    float *X;             /* [2N * L, D] one-hot hidden states */
    float *logits;        /* [N, V] rollout scratch: one position of every row */
    int32_t *need;        /* [N] rollout scratch: the sum still needed */
    int32_t *drawn;       /* [N] rollout scratch: the tokens of one position */
    float *params;        /* W [V, D] then bias [V]: one array, so one Adam covers both */
    float *grads;         /* dW [V, D] then dbias [V] */
} buffers;

static void buffers_free(buffers *b) {
    free(b->prompts); free(b->groups); free(b->tokens); free(b->states); free(b->rewards);
    free(b->adv); free(b->entropy); free(b->reg_tokens); free(b->reg_states); free(b->reg_rewards);
    free(b->selected); free(b->upd_tokens); free(b->upd_states); free(b->upd_adv); free(b->upd_reg);
    free(b->mask); free(b->old_logp); free(b->X); free(b->logits); free(b->need); free(b->drawn);
    free(b->params); free(b->grads);
    memset(b, 0, sizeof *b);
}

static int buffers_alloc(buffers *b, int64_t N, int64_t L, int64_t D) {
    size_t n = (size_t)N, nl = (size_t)(N * L), p = (size_t)(TASK_VOCAB * D + TASK_VOCAB);
    memset(b, 0, sizeof *b);
    b->prompts = malloc(n * sizeof *b->prompts);
    b->groups = malloc(n * sizeof *b->groups);
    b->tokens = malloc(nl * sizeof *b->tokens);
    b->states = malloc(nl * sizeof *b->states);
    b->rewards = malloc(n * sizeof *b->rewards);
    b->adv = malloc(n * sizeof *b->adv);
    b->entropy = malloc(nl * sizeof *b->entropy);
    b->reg_tokens = malloc(nl * sizeof *b->reg_tokens);
    b->reg_states = malloc(nl * sizeof *b->reg_states);
    b->reg_rewards = malloc(n * sizeof *b->reg_rewards);
    b->selected = malloc(n * sizeof *b->selected);
    b->upd_tokens = malloc(2 * nl * sizeof *b->upd_tokens);
    b->upd_states = malloc(2 * nl * sizeof *b->upd_states);
    b->upd_adv = malloc(2 * n * sizeof *b->upd_adv);
    b->upd_reg = malloc(2 * n * sizeof *b->upd_reg);
    b->mask = malloc(2 * nl * sizeof *b->mask);
    b->old_logp = malloc(2 * nl * sizeof *b->old_logp);
    b->X = malloc(2 * nl * (size_t)D * sizeof *b->X);
    b->logits = malloc(n * TASK_VOCAB * sizeof *b->logits);
    b->need = malloc(n * sizeof *b->need);
    b->drawn = malloc(n * sizeof *b->drawn);
    b->params = malloc(p * sizeof *b->params);
    b->grads = malloc(p * sizeof *b->grads);
    if (!b->prompts || !b->groups || !b->tokens || !b->states || !b->rewards || !b->adv || !b->entropy ||
        !b->reg_tokens || !b->reg_states || !b->reg_rewards || !b->selected || !b->upd_tokens || !b->upd_states ||
        !b->upd_adv || !b->upd_reg || !b->mask || !b->old_logp || !b->X || !b->logits || !b->need || !b->drawn ||
        !b->params || !b->grads) {
        buffers_free(b);
        return -1;
    }
    return 0;
}

/* -------------------------------------------------------------------- helpers -- */

/* Reads a whole file into a NUL-terminated malloc'd buffer; NULL on failure. */
static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long size;
    if (f == NULL) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)size + 1);
        if (buf != NULL && fread(buf, 1, (size_t)size, f) == (size_t)size) {
            buf[size] = '\0';
            *len = (size_t)size;
        } else {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

/* The handles write their effective config as canonical JSON: sorted keys, one
 * `"key": value` per line. `regularizer.combine` and `controller.statistic` are the only
 * keys named "combine" and "statistic", so a plain search reads the two string settings the
 * loop itself must follow. (A trainer with its own config system reads its own copy.) */
static int config_says(const char *effective, const char *key_value) {
    return strstr(effective, key_value) != NULL;
}

/* The fused head's inputs over the one-hot hidden states X [n, D] of n tokens. mask may be
 * NULL (every row valid); for aepo_fused_head_loss_and_grad it is the loss inputs' mask. */
static int32_t head_inputs(aepo_fused_head_inputs *in, const float *X, const float *W, const float *bias,
                           const int32_t *tokens, const uint8_t *mask, int64_t n, int64_t D, int64_t V,
                           aepo_error *err) {
    int32_t status = aepo_fused_head_inputs_init(in, sizeof *in, err);
    if (status != AEPO_OK) return status;
    in->X = X;
    in->W = W;
    in->bias = bias;
    in->targets = tokens;
    in->mask = mask;
    in->N = n;
    in->D = D;
    in->V = V;
    return AEPO_OK;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double mean_f(const float *x, int64_t n) {
    double s = 0;
    int64_t i;
    for (i = 0; i < n; i++) s += x[i];
    return n > 0 ? s / (double)n : 0.0;
}

/* Draws one response per row: row i writes L digits for the sum prompts[i]. Fills tokens
 * and states [n, L] and rewards [n] (1 when the digits sum to the prompt).
 *
 * Row i's draw at position j is keyed by (sampler.seed, step, j, row_offset + i) inside
 * the sampler, so the main and the regulariser rollouts of a step take disjoint
 * row_offsets. `temperature` NULL draws at sampler.temperature, the policy temperature. */
static int32_t rollout(const task *t, const float *W, const float *bias, aepo_sampler *sampler,
                       const int32_t *prompts, int64_t n, int64_t step, int64_t row_offset,
                       const double *temperature, buffers *scratch, int32_t *tokens, int32_t *states,
                       float *rewards, aepo_error *err) {
    const int64_t L = t->length, D = t->dim;
    int64_t i, j, v;
    for (i = 0; i < n; i++) scratch->need[i] = prompts[i];
    for (j = 0; j < L; j++) {
        int32_t status;
        /* The logits of row i are x_i W^T + bias with a one-hot x_i: column s of W. A real
         * trainer would run its model here. */
        for (i = 0; i < n; i++) {
            int32_t s = task_state_index(t, scratch->need[i], (int32_t)j);
            states[i * L + j] = s;
            for (v = 0; v < TASK_VOCAB; v++) {
                scratch->logits[i * TASK_VOCAB + v] = W[v * D + s] + bias[v];
            }
        }
        status = aepo_sampler_sample(sampler, scratch->logits, n, TASK_VOCAB, TASK_VOCAB, step, j, row_offset,
                                     temperature, scratch->drawn, NULL, NULL, NULL, err);
        if (status != AEPO_OK) {
            report_failure("aepo_sampler_sample", status, err);
            return status;
        }
        for (i = 0; i < n; i++) {
            tokens[i * L + j] = scratch->drawn[i];
            scratch->need[i] -= scratch->drawn[i];
        }
    }
    for (i = 0; i < n; i++) rewards[i] = scratch->need[i] == 0 ? 1.0f : 0.0f;
    return AEPO_OK;
}

static void copy_row(int32_t *dst_tok, int32_t *dst_st, int64_t dst, const int32_t *src_tok,
                     const int32_t *src_st, int64_t src, int64_t L) {
    memcpy(dst_tok + dst * L, src_tok + src * L, (size_t)L * sizeof *dst_tok);
    memcpy(dst_st + dst * L, src_st + src * L, (size_t)L * sizeof *dst_st);
}

/* ----------------------------------------------------------------------- main -- */

int main(int argc, char **argv) {
    settings cfg;
    task t;
    task_rng prompt_rng;
    buffers buf;
    adam opt;
    aepo_error err;
    aepo_loss *loss = NULL;
    aepo_controller *ctl = NULL;
    aepo_sampler *sampler = NULL;
    aepo_fused_head *fused = NULL;
    char *json = NULL, *effective = NULL;
    size_t json_len = 0, eff_len = 0;
    FILE *csv = NULL;
    int weighted, entropy_statistic, exit_code = 1;
    int64_t N, L, D, V = TASK_VOCAB, step, i;
    float *W, *bias, *dW, *dbias;
    /* Per-step history for the summary. */
    double *hist_stat = NULL, *hist_exact = NULL, *hist_target = NULL, *hist_reward = NULL;
    double t_start;

    memset(&buf, 0, sizeof buf);
    memset(&opt, 0, sizeof opt);
    if (parse_settings(argc, argv, &cfg) != 0) {
        usage(stderr);
        return 2;
    }

    /* The library must be the one this program was compiled against (the ABI number). */
    if (aepo_abi_version() != AEPO_ABI_VERSION) {
        fprintf(stderr, "aepo_train: compiled against libaepo ABI %d, loaded ABI %d\n", AEPO_ABI_VERSION,
                (int)aepo_abi_version());
        return 1;
    }

    /* The task and its sizes: N rows of L tokens, hidden width D, V digits. */
    if (task_init(&t, TASK_LENGTH, TASK_LO, TASK_HI) != 0) return 1;
    N = cfg.prompts * cfg.rollouts;
    L = t.length;
    D = t.dim;

    /* ---- The config: read, validate and normalise once, then create every handle from
     * the same document. Errors name the JSON path ("controller.t_high"). */
    json = read_file(cfg.config_path, &json_len);
    if (json == NULL) {
        fprintf(stderr, "aepo_train: cannot read %s: %s\n", cfg.config_path, strerror(errno));
        goto done;
    }
    AEPO_TRY(aepo_config_normalize(json, json_len, NULL, 0, &eff_len, &err)); /* the size */
    effective = malloc(eff_len + 1);
    if (effective == NULL) goto oom;
    AEPO_TRY(aepo_config_normalize(json, json_len, effective, eff_len + 1, &eff_len, &err));
    AEPO_TRY(aepo_loss_create(json, json_len, &loss, &err));
    AEPO_TRY(aepo_controller_create(json, json_len, &ctl, &err));
    AEPO_TRY(aepo_sampler_create(json, json_len, &sampler, &err));
    AEPO_TRY(aepo_fused_head_create(json, json_len, &fused, &err));
    weighted = config_says(effective, "\"combine\": \"weighted\"");
    /* The normalised document keeps the spelling it was given: "exact" is the older name of
     * "entropy". */
    entropy_statistic = config_says(effective, "\"statistic\": \"entropy\"") ||
                        config_says(effective, "\"statistic\": \"exact\"");

    /* ---- Buffers, the initial policy and its optimizer. */
    if (buffers_alloc(&buf, N, L, D) != 0) goto oom;
    hist_stat = malloc((size_t)cfg.steps * sizeof *hist_stat);
    hist_exact = malloc((size_t)cfg.steps * sizeof *hist_exact);
    hist_target = malloc((size_t)cfg.steps * sizeof *hist_target);
    hist_reward = malloc((size_t)cfg.steps * sizeof *hist_reward);
    if (!hist_stat || !hist_exact || !hist_target || !hist_reward) goto oom;
    W = buf.params;
    bias = buf.params + V * D;
    dW = buf.grads;
    dbias = buf.grads + V * D;
    task_initial_head(&t, cfg.init_seed, INIT_SCALE, W, bias);
    if (adam_init(&opt, V * D + V, cfg.lr) != 0) goto oom;
    memset(buf.mask, 1, (size_t)(2 * N * L)); /* every response is L digits: no padding */
    task_rng_seed(&prompt_rng, cfg.seed);

    if (cfg.out_dir != NULL) {
        char path[4096];
        FILE *f;
        int written;
        if (mkdir(cfg.out_dir, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "aepo_train: cannot create %s: %s\n", cfg.out_dir, strerror(errno));
            goto done;
        }
        snprintf(path, sizeof path, "%s/config.json", cfg.out_dir);
        f = fopen(path, "w");
        written = f != NULL && fputs(effective, f) >= 0 && fputc('\n', f) != EOF;
        if (f != NULL && fclose(f) != 0) written = 0;
        if (!written) {
            fprintf(stderr, "aepo_train: cannot write %s\n", path);
            goto done;
        }
        snprintf(path, sizeof path, "%s/metrics.csv", cfg.out_dir);
        csv = fopen(path, "w");
        if (csv == NULL) {
            fprintf(stderr, "aepo_train: cannot write %s: %s\n", path, strerror(errno));
            goto done;
        }
        fprintf(csv, "step,run,target,statistic,entropy_exact,reward,temperature,k_max,halve,reason,"
                     "decision_statistic,decision_smoothed,alpha,k,n_positive,loss,pg_clipfrac,"
                     "est_gain,est_same_step,est_delay,est_measurement_noise,est_feedback\n");
    }

    {
        aepo_decision d0;
        memset(&d0, 0, sizeof d0);
        d0.struct_size = sizeof d0;
        AEPO_TRY(aepo_controller_decision(ctl, &d0, &err));
        printf("libaepo %s: %s, %lld steps of %lld prompts x %lld rollouts (digit sums %d..%d, %d digits), "
               "lr %g\n",
               aepo_version_string(), cfg.config_path, (long long)cfg.steps, (long long)cfg.prompts,
               (long long)cfg.rollouts, TASK_LO, TASK_HI, TASK_LENGTH, cfg.lr);
        if (d0.k_max == 0) {
            printf("run: GRPO (controller.k_max = 0: no regulariser)\n");
        } else {
            printf("run: AEPO %s, target %g nats, statistic %s, combine %s, k_max %lld\n",
                   aepo_controller_mode_name(d0.mode), d0.target,
                   aepo_controller_statistic_name(entropy_statistic ? AEPO_CONTROLLER_STATISTIC_ENTROPY
                                                                    : AEPO_CONTROLLER_STATISTIC_NLL),
                   weighted ? "weighted" : "replace", (long long)d0.k_max);
        }
    }
    if (cfg.log_every > 0) {
        printf("%5s %8s %8s %7s | %-40s | %-13s %10s\n", "step", "H", "H exact", "reward",
               "decision: T k_max halve reason", "regulariser", "loss");
    }

    t_start = now_seconds();
    for (step = 0; step < cfg.steps; step++) {
        aepo_decision d, next;
        aepo_loss_inputs in;
        aepo_fused_head_inputs head;
        double metrics[AEPO_LOSS_METRIC_COUNT], loss_value = 0, nll, exact, reward, statistic;
        int64_t k = 0, n_positive = 0, rows;
        int is_grpo;

        /* 1. B prompts, each answered n times; the rows of one prompt form its group. */
        for (i = 0; i < cfg.prompts; i++) {
            int32_t s = task_rng_int(&prompt_rng, t.lo, t.hi);
            int64_t r;
            for (r = 0; r < cfg.rollouts; r++) {
                buf.prompts[i * cfg.rollouts + r] = s;
                buf.groups[i * cfg.rollouts + r] = i;
            }
        }
        /*    Main rollouts at the policy temperature, rewards, GRPO advantages. */
        if (rollout(&t, W, bias, sampler, buf.prompts, N, step, 0, NULL, &buf, buf.tokens, buf.states,
                    buf.rewards, &err) != AEPO_OK) {
            goto done;
        }
        AEPO_TRY(aepo_loss_advantages(loss, buf.rewards, buf.groups, N, NULL, buf.adv, &err));
        reward = mean_f(buf.rewards, N);

        /*    The exact full-vocabulary entropy of the on-policy batch, for the log (and the
         *    controller's statistic when controller.statistic = "entropy"). */
        task_one_hot(&t, buf.states, N * L, buf.X);
        AEPO_TRY(head_inputs(&head, buf.X, W, bias, buf.tokens, NULL, N * L, D, V, &err));
        AEPO_TRY(aepo_fused_head_forward(fused, &head, NULL, buf.entropy, NULL, &err));
        exact = mean_f(buf.entropy, N * L);

        /* 2. The controller's decision for this step. */
        memset(&d, 0, sizeof d);
        d.struct_size = sizeof d;
        memset(&next, 0, sizeof next);
        next.struct_size = sizeof next;
        AEPO_TRY(aepo_controller_decision(ctl, &d, &err));
        is_grpo = d.k_max == 0;

        /* 3. Regulariser rollouts at the decision's temperature (the same prompts, rows
         *    numbered after the main ones), and the selection: positives are rows whose
         *    group advantage exceeds regularizer.threshold; the first min(k_max, positives)
         *    are kept, halved when the decision says so. With k_max = 0 nothing can be kept,
         *    so GRPO skips the draw. */
        if (!is_grpo) {
            if (rollout(&t, W, bias, sampler, buf.prompts, N, step, N, &d.temperature, &buf, buf.reg_tokens,
                        buf.reg_states, buf.reg_rewards, &err) != AEPO_OK) {
                goto done;
            }
            AEPO_TRY(aepo_loss_select_regularizer(loss, buf.reg_rewards, buf.groups, N, d.k_max, d.halve,
                                                  buf.selected, (size_t)N, &k, &n_positive, &err));
        }

        /* 4. The update batch. "replace": [selected positives with A = 1] ++ main[k:], the
         *    batch size unchanged. "weighted": main ++ [selected positives], marked in
         *    reg_rows, their term weighted by alpha. */
        if (weighted) {
            for (i = 0; i < N; i++) {
                copy_row(buf.upd_tokens, buf.upd_states, i, buf.tokens, buf.states, i, L);
                buf.upd_adv[i] = buf.adv[i];
                buf.upd_reg[i] = 0;
            }
            for (i = 0; i < k; i++) {
                copy_row(buf.upd_tokens, buf.upd_states, N + i, buf.reg_tokens, buf.reg_states, buf.selected[i], L);
                buf.upd_adv[N + i] = 1.0f;
                buf.upd_reg[N + i] = 1;
            }
            rows = N + k;
        } else {
            for (i = 0; i < k; i++) {
                copy_row(buf.upd_tokens, buf.upd_states, i, buf.reg_tokens, buf.reg_states, buf.selected[i], L);
                buf.upd_adv[i] = 1.0f;
                buf.upd_reg[i] = 1;
            }
            for (i = k; i < N; i++) {
                copy_row(buf.upd_tokens, buf.upd_states, i, buf.tokens, buf.states, i, L);
                buf.upd_adv[i] = buf.adv[i];
                buf.upd_reg[i] = 0;
            }
            rows = N;
        }

        /* 5. Old log-probs at the policy temperature (fused.temperature), with the
         *    parameters the update starts from; their token mean, negated, is the statistic
         *    of this update (the reference code's entropy estimate). */
        task_one_hot(&t, buf.upd_states, rows * L, buf.X);
        AEPO_TRY(head_inputs(&head, buf.X, W, bias, buf.upd_tokens, buf.mask, rows * L, D, V, &err));
        AEPO_TRY(aepo_fused_head_forward(fused, &head, buf.old_logp, NULL, NULL, &err));
        nll = -mean_f(buf.old_logp, rows * L);

        /*    The policy loss and every gradient in one pass through the head. The head
         *    computes logp and entropy itself, so in.logp and in.entropy stay NULL. The
         *    head's inputs are those of the forward pass above: rows * L tokens (the loss inputs'
         *    B * L) under the loss inputs' own mask pointer. dW and dbias are added to, so
         *    they start from zero. */
        AEPO_TRY(aepo_loss_inputs_init(&in, sizeof in, &err));
        in.B = rows;
        in.L = L;
        in.old_logp = buf.old_logp;
        in.advantages = buf.upd_adv;
        in.mask = buf.mask;
        in.step = step;
        /* The regulariser rows are marked under either combine (their advantage is 1 either
         * way), so the loss metrics split the statistic into main and regulariser rows. */
        in.reg_rows = buf.upd_reg;
        if (weighted && k > 0) {
            /* alpha is NaN unless the controller drives it; -1 means regularizer.alpha. */
            in.reg_alpha = isnan(d.alpha) ? -1.0 : d.alpha;
        }
        memset(buf.grads, 0, (size_t)(V * D + V) * sizeof *buf.grads);
        AEPO_TRY(aepo_fused_head_loss_and_grad(fused, loss, &head, &in, &loss_value, NULL, dW, dbias, metrics,
                                               AEPO_LOSS_METRIC_COUNT, NULL, NULL, &err));

        /* 6. The optimizer step, written in this example (optim.c). */
        adam_step(&opt, buf.params, buf.grads);

        /* 7. Feed the controller the statistic of the update that just finished; it
         *    advances to step + 1. The library picks the statistic from the loss metrics
         *    (controller.statistic over controller.statistic_rows); the next decision
         *    records the value it used. GRPO logs the NLL of its update batch. */
        if (is_grpo) {
            statistic = entropy_statistic ? exact : nll;
        } else {
            AEPO_TRY(aepo_controller_step_metrics(ctl, metrics, AEPO_LOSS_METRIC_COUNT, step, &next, &err));
            statistic = next.statistic;
        }

        hist_stat[step] = statistic;
        hist_exact[step] = exact;
        hist_target[step] = d.target;
        hist_reward[step] = reward;
        if (cfg.log_every > 0 && (step % cfg.log_every == 0 || step == cfg.steps - 1)) {
            char decision[64], reg[32];
            if (is_grpo) {
                snprintf(decision, sizeof decision, "grpo");
                snprintf(reg, sizeof reg, "-");
            } else {
                snprintf(decision, sizeof decision, "T %.3f k_max %lld halve %d %s", d.temperature,
                         (long long)d.k_max, (int)d.halve, aepo_controller_reason_name(d.reason));
                snprintf(reg, sizeof reg, "k %lld of %lld", (long long)k, (long long)n_positive);
            }
            printf("%5lld %8.4f %8.4f %7.3f | %-40s | %-13s %10.3g\n", (long long)step, statistic, exact, reward,
                   decision, reg, loss_value);
        }
        if (csv != NULL) {
            fprintf(csv, "%lld,%s,%.17g,%.17g,%.17g,%.17g,%.17g,%lld,%d,%s,%.17g,%.17g,%.17g,%lld,%lld,%.17g,%.17g,"
                         "%.17g,%.17g,%d,%.17g,%.17g\n",
                    (long long)step, is_grpo ? "grpo" : aepo_controller_mode_name(d.mode), d.target, statistic,
                    exact, reward, d.temperature, (long long)d.k_max, (int)d.halve,
                    aepo_controller_reason_name(d.reason), d.statistic, d.smoothed, d.alpha, (long long)k,
                    (long long)n_positive, loss_value, metrics[AEPO_LOSS_METRIC_PG_CLIPFRAC], d.est_gain,
                    d.est_same_step, (int)d.est_delay, d.est_measurement_noise, d.est_feedback);
        }
    }

    /* ---- Summary: start and final entropy, and for AEPO the tracking error over the
     * second half (the numbers docs and the README quote). */
    {
        double elapsed = now_seconds() - t_start, fin = 0, fin_exact = 0, fin_reward = 0, mae = 0;
        int64_t tail = cfg.steps < 10 ? cfg.steps : 10, half = cfg.steps / 2;
        aepo_decision last;
        memset(&last, 0, sizeof last);
        last.struct_size = sizeof last;
        AEPO_TRY(aepo_controller_decision(ctl, &last, &err));
        for (i = cfg.steps - tail; i < cfg.steps; i++) {
            fin += hist_stat[i] / (double)tail;
            fin_exact += hist_exact[i] / (double)tail;
            fin_reward += hist_reward[i] / (double)tail;
        }
        for (i = half; i < cfg.steps; i++) mae += fabs(hist_stat[i] - hist_target[i]) / (double)(cfg.steps - half);
        printf("summary: H start %.4f (exact %.4f), final %.4f (exact %.4f, mean of the last %lld steps), "
               "reward final %.3f\n",
               hist_stat[0], hist_exact[0], fin, fin_exact, (long long)tail, fin_reward);
        if (last.k_max > 0) {
            printf("summary: mean |H - target| over steps %lld..%lld: %.4f (target %g)\n", (long long)half,
                   (long long)(cfg.steps - 1), mae, hist_target[cfg.steps - 1]);
        }
        if (last.est_delay >= 0) {
            printf("summary: identified loop: b %.4f per step, c %.4f same-step, delay %d, "
                   "statistic noise %.4f nats; gain %.3g T per nat\n",
                   last.est_gain, last.est_same_step, (int)last.est_delay, last.est_measurement_noise,
                   last.est_feedback);
        }
        printf("summary: H is the %s (%s); %.2f s, %.1f ms per step\n",
               entropy_statistic ? "exact token entropy" : "token NLL at the policy temperature",
               last.k_max > 0 ? "rows as controller.statistic_rows picks" : "the update batch",
               elapsed, 1e3 * elapsed / (double)cfg.steps);
    }
    exit_code = 0;
    goto done;

oom:
    fprintf(stderr, "aepo_train: out of memory\n");
done:
    /* Every handle and buffer is released on every path; free(NULL) and
     * aepo_X_free(NULL) are no-ops. */
    if (csv != NULL && fclose(csv) != 0) {
        fprintf(stderr, "aepo_train: writing metrics.csv failed\n");
        exit_code = 1;
    }
    aepo_fused_head_free(fused);
    aepo_sampler_free(sampler);
    aepo_controller_free(ctl);
    aepo_loss_free(loss);
    adam_free(&opt);
    buffers_free(&buf);
    free(hist_stat);
    free(hist_exact);
    free(hist_target);
    free(hist_reward);
    free(effective);
    free(json);
    return exit_code;
}

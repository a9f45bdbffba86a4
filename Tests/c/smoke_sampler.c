/* The sampler through the installed header and library only: create, the effective
 * config, draws and their log-probs, determinism, greedy, and bad input. */
#include <aepo.h>
#include <stdlib.h>

#include "smoke.h"

#define N 256
#define V 50

static float logits[N * V];

/* A deterministic row pattern with a -inf and a tie at the top. */
static void fill(void) {
    int64_t i, j;
    for (i = 0; i < N; i++) {
        for (j = 0; j < V; j++) {
            logits[i * V + j] = (float)(2.0 * sin(0.37 * (double)(j * 7 + i * 3)));
        }
        logits[i * V + 5] = -INFINITY;
        logits[i * V + 10] = 2.5f;
        logits[i * V + 20] = 2.5f;
    }
}

/* log_softmax(row)[tok] in double. */
static double log_softmax_at(const float *row, int32_t tok) {
    double m = -INFINITY, s = 0;
    int j;
    for (j = 0; j < V; j++) if (row[j] > m) m = row[j];
    for (j = 0; j < V; j++) s += exp((double)row[j] - m);
    return (double)row[tok] - m - log(s);
}

int main(void) {
    aepo_error err;
    aepo_sampler *s = NULL, *g = NULL;
    int32_t tok[N], tok2[N], kept[N];
    float logp[N], logp_t1[N];
    double t = 1.3, bad_t = 0.0;
    size_t len = 0;
    char buf[4096];
    int64_t i;
    int outside = 0, t1_off = 0;
    const char *cfg = "{\"sampler\": {\"top_k\": 8, \"seed\": 42, \"threads\": 2}}";
    const char *greedy = "{\"sampler\": {\"greedy\": true}}";

    fill();
    CHECK_STATUS(aepo_sampler_create(cfg, strlen(cfg), &s, &err), AEPO_OK, &err);
    CHECK(s != NULL);

    CHECK_STATUS(aepo_sampler_config_json(s, NULL, 0, &len, &err), AEPO_OK, &err);
    CHECK(len > 0 && len < sizeof buf);
    CHECK_STATUS(aepo_sampler_config_json(s, buf, sizeof buf, &len, &err), AEPO_OK, &err);
    CHECK(strstr(buf, "\"top_k\": 8") != NULL && strstr(buf, "\"seed\": 42") != NULL);

    CHECK_STATUS(aepo_sampler_sample(s, logits, N, V, V, 7, 0, 0, &t, tok, logp, logp_t1, kept, &err), AEPO_OK, &err);
    for (i = 0; i < N; i++) {
        if (tok[i] < 0 || tok[i] >= V || tok[i] == 5 || kept[i] != 8 || !(logp[i] <= 0)) outside++;
        if (fabs(logp_t1[i] - log_softmax_at(logits + i * V, tok[i])) > 1e-5) t1_off++;
    }
    CHECK(outside == 0);
    CHECK(t1_off == 0);

    /* Same coordinates, same tokens; optional outputs may be NULL and err may be NULL. */
    CHECK_STATUS(aepo_sampler_sample(s, logits, N, V, V, 7, 0, 0, &t, tok2, NULL, NULL, NULL, NULL), AEPO_OK, &err);
    CHECK(memcmp(tok, tok2, sizeof tok) == 0);
    /* The second half alone, keyed by row_offset, draws the same tokens. */
    CHECK_STATUS(aepo_sampler_sample(s, logits + (N / 2) * V, N / 2, V, V, 7, 0, N / 2, &t, tok2, NULL, NULL, NULL,
                                     &err), AEPO_OK, &err);
    CHECK(memcmp(tok + N / 2, tok2, sizeof(int32_t) * (N / 2)) == 0);

    /* Greedy: the tie at 2.5 goes to id 10; sampling log-prob 0; one token kept. */
    CHECK_STATUS(aepo_sampler_create(greedy, strlen(greedy), &g, &err), AEPO_OK, &err);
    CHECK_STATUS(aepo_sampler_sample(g, logits, N, V, V, 0, 0, 0, NULL, tok, logp, logp_t1, kept, &err), AEPO_OK, &err);
    CHECK(tok[0] == 10 && tok[N - 1] == 10 && logp[0] == 0.0f && kept[0] == 1);
    CHECK_NEAR(logp_t1[0], log_softmax_at(logits, 10), 1e-5);

    /* Bad input: a status and a message, never a crash. */
    CHECK_STATUS(aepo_sampler_sample(s, logits, N, V, V, 0, 0, 0, &bad_t, tok, NULL, NULL, NULL, &err),
                 AEPO_ERR_INVALID_ARGUMENT, &err);
    CHECK(strcmp(err.argument, "temperature") == 0 && strstr(err.message, "sampler.greedy") != NULL);
    CHECK_STATUS(aepo_sampler_sample(s, NULL, N, V, V, 0, 0, 0, NULL, tok, NULL, NULL, NULL, &err),
                 AEPO_ERR_NULL_POINTER, &err);
    CHECK(strcmp(err.argument, "logits") == 0);
    CHECK_STATUS(aepo_sampler_sample(s, logits, N, V, V, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, &err),
                 AEPO_ERR_NULL_POINTER, &err);
    CHECK_STATUS(aepo_sampler_sample(NULL, logits, N, V, V, 0, 0, 0, NULL, tok, NULL, NULL, NULL, &err),
                 AEPO_ERR_NULL_POINTER, &err);
    CHECK_STATUS(aepo_sampler_sample(s, logits, N, V, V - 1, 0, 0, 0, NULL, tok, NULL, NULL, NULL, &err),
                 AEPO_ERR_SHAPE, &err);
    CHECK_STATUS(aepo_sampler_sample(s, logits, -1, V, V, 0, 0, 0, NULL, tok, NULL, NULL, NULL, &err),
                 AEPO_ERR_SHAPE, &err);
    CHECK_STATUS(aepo_sampler_sample(s, logits, N, V, V, -1, 0, 0, NULL, tok, NULL, NULL, NULL, &err),
                 AEPO_ERR_INVALID_ARGUMENT, &err);
    logits[3 * V + 17] = NAN;
    CHECK_STATUS(aepo_sampler_sample(s, logits, N, V, V, 0, 0, 0, NULL, tok, NULL, NULL, NULL, &err),
                 AEPO_ERR_NON_FINITE, &err);
    CHECK(err.index == 3 && strstr(err.message, "logits[3, 17]") != NULL);
    {
        const char *bad = "{\"sampler\": {\"top_p\": 1.5}}";
        aepo_sampler *never = NULL;
        CHECK_STATUS(aepo_sampler_create(bad, strlen(bad), &never, &err), AEPO_ERR_CONFIG, &err);
        CHECK(never == NULL && strcmp(err.argument, "sampler.top_p") == 0);
        CHECK_STATUS(aepo_sampler_create(NULL, 0, NULL, &err), AEPO_ERR_NULL_POINTER, &err);
    }

    aepo_sampler_free(s);
    aepo_sampler_free(g);
    aepo_sampler_free(NULL);
    return smoke_finish("smoke_sampler");
}

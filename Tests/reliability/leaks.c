/* Leak run: every handle created and freed `cycles` times.
 *
 *   leaks [--cycles 10000] [--heap-check]
 *
 * One cycle creates a loss, controller, sampler and fused-head handle, makes one call of
 * every entry point on them (Tests/reliability/workload.h), saves and restores the
 * controller's state, makes calls that fail on the way in and on the way out (so the error
 * paths allocate and free their messages too), tries to create each handle from a broken
 * document, and frees everything.
 *
 * --heap-check compares the heap in use (glibc mallinfo2: uordblks + hblkhd, all arenas)
 * after 10% of the cycles with the heap in use at the end: a leak of even one byte per
 * cycle would show as growth. Run it without a sanitizer (they replace malloc). Under
 * LeakSanitizer or valgrind the same program checks for definite and indirect leaks. */
#define _GNU_SOURCE
#include <malloc.h>

#include "workload.h"

static void error_paths(worker *w) {
    static const char *const broken[] = {"{\"loss\": {\"threads\": 0}}", "{\"controller\": [", "{\"sampler\": 1}",
                                         "{\"fused\": {\"chunk_n\": 0}}"};
    aepo_loss *l = NULL;
    aepo_controller *c = NULL;
    aepo_sampler *s = NULL;
    aepo_fused_head *f = NULL;
    aepo_error e;
    aepo_loss_inputs in;
    aepo_fused_head_inputs hin;
    float nan_logp[WL_N];
    char buf[16], *state;
    size_t n = 0;
    int i;

    if (aepo_loss_create(broken[0], strlen(broken[0]), &l, &e) != AEPO_ERR_CONFIG) WL_FAIL("loss create");
    if (aepo_controller_create(broken[1], strlen(broken[1]), &c, &e) != AEPO_ERR_CONFIG) WL_FAIL("controller create");
    if (aepo_sampler_create(broken[2], strlen(broken[2]), &s, &e) != AEPO_ERR_CONFIG) WL_FAIL("sampler create");
    if (aepo_fused_head_create(broken[3], strlen(broken[3]), &f, &e) != AEPO_ERR_CONFIG) WL_FAIL("fused create");
    if (aepo_config_validate("{\"loss\": {\"bogus\": 1}}", 22, &e) != AEPO_ERR_CONFIG) WL_FAIL("validate");

    /* Fails on the way in (a shape), and during the pass (NaN under the mask). */
    aepo_loss_inputs_init(&in, sizeof in, NULL);
    in.B = -1;
    if (aepo_loss_compute(w->loss, &in, NULL, NULL, NULL, NULL, 0, &e) != AEPO_ERR_SHAPE) WL_FAIL("loss shape");
    for (i = 0; i < WL_N; i++) nan_logp[i] = i == 7 ? NAN : w->logp[i];
    in.B = WL_B;
    in.L = WL_L;
    in.logp = nan_logp;
    in.old_logp = w->old_logp;
    in.advantages = w->adv;
    in.mask = w->mask;
    in.ref_logp = w->ref_logp;
    in.entropy = w->entropy;
    if (aepo_loss_compute(w->loss, &in, NULL, NULL, NULL, NULL, 0, &e) != AEPO_ERR_NON_FINITE) WL_FAIL("loss NaN");
    if (aepo_sampler_sample(w->sampler, nan_logp, 2, 8, 8, 0, 0, 0, NULL, (int32_t *)(void *)buf, NULL, NULL, NULL,
                            &e) != AEPO_ERR_NON_FINITE) WL_FAIL("sampler NaN");
    wl_head_inputs(w, w->X, NULL, &hin);
    hin.V = -3;
    if (aepo_fused_head_forward(w->fused, &hin, NULL, NULL, NULL, &e) != AEPO_ERR_SHAPE) WL_FAIL("fused shape");
    if (aepo_controller_step(w->ctl, AEPO_CONTROLLER_STATISTIC_NLL, NAN, AEPO_CONTROLLER_STEP_NEXT, NULL, &e) !=
        AEPO_ERR_NON_FINITE) WL_FAIL("controller NaN");
    if (aepo_loss_config_json(w->loss, buf, sizeof buf, &n, &e) != AEPO_ERR_BUFFER_TOO_SMALL) WL_FAIL("small buffer");

    /* Save and restore the controller; restore a damaged blob. */
    WL_OK(aepo_controller_state_json(w->ctl, NULL, 0, &n, &e), &e);
    state = (char *)malloc(n + 1);
    WL_OK(aepo_controller_state_json(w->ctl, state, n + 1, &n, &e), &e);
    WL_OK(aepo_controller_restore(w->ctl, state, n, &e), &e);
    if (aepo_controller_restore(w->ctl, state, n / 2, &e) != AEPO_ERR_STATE) WL_FAIL("damaged state");
    free(state);
}

static size_t heap_in_use(void) {
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

int main(int argc, char **argv) {
    long cycles = 10000, c, warm;
    int heap_check = 0, i, k;
    size_t at_warm = 0, at_end;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--cycles") == 0 && i + 1 < argc) cycles = atol(argv[++i]);
        else if (strcmp(argv[i], "--heap-check") == 0) heap_check = 1;
    }
    warm = cycles / 10;
    for (c = 0; c < cycles; c++) {
        worker w;
        worker_init(&w, (uint64_t)c % 5 + 1, 1);
        for (k = 0; k < 8; k++) worker_call(&w, (int)(c + k));
        error_paths(&w);
        worker_free(&w);
        if (c + 1 == warm) at_warm = heap_in_use();
    }
    at_end = heap_in_use();
    if (heap_check) {
        printf("leaks: heap in use after %ld cycles %zu bytes, after %ld cycles %zu bytes\n", warm, at_warm, cycles,
               at_end);
        if (at_end != at_warm) {
            fprintf(stderr, "leaks: the heap grew by %lld bytes over %ld cycles\n",
                    (long long)at_end - (long long)at_warm, cycles - warm);
            return 1;
        }
    }
    printf("leaks: %ld cycles of creating, using and freeing every handle done\n", cycles);
    return 0;
}

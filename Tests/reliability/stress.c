/* Thread-safety stress: every entry point from many threads at once.
 *
 *   stress [--threads 8] [--calls 10000]
 *
 * 1. Distinct handles: each of `threads` workers owns one handle of each kind and makes
 *    `calls` calls (Tests/reliability/workload.h); the digest of every result of every
 *    worker must equal the one the same worker produces alone on the main thread. This runs
 *    twice: with the library's own threads off (threads = 1 in every config and call) and
 *    on (2), so that the callers' threads and the library's pthreads overlap.
 * 2. Shared handles: all threads use ONE handle of each kind at once. Loss and fused-head
 *    handles are read-only and run concurrently; sampler and controller handles serialise
 *    their calls with a per-handle lock. Every thread's results must equal the results of
 *    the same calls made alone, and the shared controller must have recorded exactly every
 *    step made on it.
 * Built with ASan/UBSan by `make test`; any failure aborts. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <time.h>

#include "workload.h"

static int n_calls = 10000;

typedef struct job {
    int id;
    int lib_threads;
    uint64_t digest;
    worker *shared;
    int shared_steps;
} job;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t run_worker(int id, int lib_threads) {
    worker *w = (worker *)malloc(sizeof *w);
    uint64_t d;
    int k;
    if (!w) abort();
    worker_init(w, (uint64_t)id + 1, lib_threads);
    for (k = 0; k < n_calls; k++) worker_call(w, k);
    d = w->digest;
    worker_free(w);
    free(w);
    return d;
}

static void *distinct_thread(void *arg) {
    job *j = (job *)arg;
    j->digest = run_worker(j->id, j->lib_threads);
    return NULL;
}

/* Calls on the shared handles: every entry point except the controller's step, whose
 * outcome depends on the order of the threads, made by shared_controller_thread. */
static uint64_t shared_calls(worker *w, int calls) {
    uint64_t d = 0xcbf29ce484222325ull;
    int k;
    for (k = 0; k < calls; k++)
        if (k % 8 != 5) worker_call_into(w, k, &d);
    return d;
}

static void *shared_thread(void *arg) {
    job *j = (job *)arg;
    aepo_error e;
    aepo_decision d;
    int k;
    j->digest = shared_calls(j->shared, n_calls / 4);
    for (k = 0; k < j->shared_steps; k++) {
        d.struct_size = sizeof d;
        WL_OK(aepo_controller_step(j->shared->ctl, AEPO_CONTROLLER_STATISTIC_NLL, 0.4 + 0.01 * (k % 50),
                                   AEPO_CONTROLLER_STEP_NEXT, &d, &e), &e);
        WL_OK(aepo_controller_decision(j->shared->ctl, &d, &e), &e);
        if (!(d.temperature > 0) || d.k_max < 0) WL_FAIL("shared controller: a bad decision");
    }
    return NULL;
}

static int run_distinct(int threads, int lib_threads, const uint64_t *reference) {
    pthread_t *tid = (pthread_t *)calloc((size_t)threads, sizeof *tid);
    job *jobs = (job *)calloc((size_t)threads, sizeof *jobs);
    int i, bad = 0;
    double t0 = now();
    for (i = 0; i < threads; i++) {
        jobs[i].id = i;
        jobs[i].lib_threads = lib_threads;
        if (pthread_create(&tid[i], NULL, distinct_thread, &jobs[i]) != 0) WL_FAIL("pthread_create");
    }
    for (i = 0; i < threads; i++) pthread_join(tid[i], NULL);
    for (i = 0; i < threads; i++)
        if (jobs[i].digest != reference[i]) {
            fprintf(stderr, "stress: worker %d with library threads %d: digest %016llx, alone %016llx\n", i,
                    lib_threads, (unsigned long long)jobs[i].digest, (unsigned long long)reference[i]);
            bad = 1;
        }
    printf("stress: %d threads x %d calls on distinct handles, library threads %d: %s (%.2f s)\n", threads, n_calls,
           lib_threads, bad ? "RESULTS DIFFER" : "every result equals the single-threaded one", now() - t0);
    free(tid);
    free(jobs);
    return bad;
}

int main(int argc, char **argv) {
    int threads = 8, i, bad = 0, steps = 500;
    uint64_t *reference, alone;
    worker *shared;
    pthread_t *tid;
    job *jobs;
    aepo_decision d;
    aepo_error e;
    double t0;
    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0) threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--calls") == 0) n_calls = atoi(argv[i + 1]);
    }
    reference = (uint64_t *)calloc((size_t)threads, sizeof *reference);

    /* 1. The reference: each worker alone, on the main thread. */
    t0 = now();
    for (i = 0; i < threads; i++) reference[i] = run_worker(i, 1);
    printf("stress: %d workers x %d calls alone on the main thread (%.2f s)\n", threads, n_calls, now() - t0);
    bad |= run_distinct(threads, 1, reference);
    bad |= run_distinct(threads, 2, reference);

    /* 2. Shared handles. */
    shared = (worker *)malloc(sizeof *shared);
    worker_init(shared, 99, 2);
    alone = shared_calls(shared, n_calls / 4);
    tid = (pthread_t *)calloc((size_t)threads, sizeof *tid);
    jobs = (job *)calloc((size_t)threads, sizeof *jobs);
    t0 = now();
    for (i = 0; i < threads; i++) {
        jobs[i].id = i;
        jobs[i].shared = shared;
        jobs[i].shared_steps = steps;
        if (pthread_create(&tid[i], NULL, shared_thread, &jobs[i]) != 0) WL_FAIL("pthread_create");
    }
    for (i = 0; i < threads; i++) pthread_join(tid[i], NULL);
    for (i = 0; i < threads; i++)
        if (jobs[i].digest != alone) {
            fprintf(stderr, "stress: thread %d on shared handles: digest %016llx, alone %016llx\n", i,
                    (unsigned long long)jobs[i].digest, (unsigned long long)alone);
            bad = 1;
        }
    d.struct_size = sizeof d;
    WL_OK(aepo_controller_decision(shared->ctl, &d, &e), &e);
    if (d.step != (int64_t)threads * steps) {
        fprintf(stderr, "stress: the shared controller is at step %lld after %d steps\n", (long long)d.step,
                threads * steps);
        bad = 1;
    }
    printf("stress: %d threads sharing one handle of each kind, %d calls and %d controller steps each: %s (%.2f s)\n",
           threads, n_calls / 4 * 7 / 8, steps,
           bad ? "FAILED" : "every result equals the lone one, every step recorded", now() - t0);
    worker_free(shared);
    free(shared);
    free(tid);
    free(jobs);
    free(reference);
    return bad;
}

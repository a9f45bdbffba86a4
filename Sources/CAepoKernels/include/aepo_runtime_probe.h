/* What the library runs on: the CPU's instruction sets (CPUID, and XGETBV for the register
 * state the OS saves) and the BLAS it was linked against, asked through OpenBLAS's own
 * query functions when they are present (looked up at run time, so that another CBLAS
 * still works). Internal to libaepo; aepo_runtime_info reports it. */
#ifndef AEPO_RUNTIME_PROBE_H
#define AEPO_RUNTIME_PROBE_H

#ifdef __cplusplus
extern "C" {
#endif

#define AEPOK_PROBE_HIDDEN __attribute__((visibility("hidden")))

typedef struct aepok_cpu {
    char vendor[16];   /* "GenuineIntel", "AuthenticAMD", ... ("" off x86) */
    char brand[64];    /* the processor brand string, trimmed */
    int sse42, avx, fma, avx2, avx512f, avx512cd, avx512bw, avx512dq, avx512vl, avx512vnni, avx512bf16,
        avx512fp16, amx_tile;
    int os_ymm;        /* XGETBV: the OS saves XMM and YMM state */
    int os_zmm;        /* XGETBV: the OS saves the opmask and ZMM state */
} aepok_cpu;

/* Fills *out (zeroed first). */
AEPOK_PROBE_HIDDEN void aepok_cpu_probe(aepok_cpu *out);

typedef struct aepok_blas {
    char library[512]; /* the file that provides cblas_sgemm ("" when unknown) */
    char config[256];  /* openblas_get_config() ("" when not OpenBLAS) */
    char core[64];     /* openblas_get_corename() ("" when not OpenBLAS) */
    int threads;       /* openblas_get_num_threads(), or -1 */
    int is_openblas;
} aepok_blas;

AEPOK_PROBE_HIDDEN void aepok_blas_probe(aepok_blas *out);

#ifdef __cplusplus
}
#endif

#endif

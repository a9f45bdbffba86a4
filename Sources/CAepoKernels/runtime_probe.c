/* CPU and BLAS probes for aepo_runtime_info; see include/aepo_runtime_probe.h. */
#define _GNU_SOURCE
#include "aepo_runtime_probe.h"
#include "aepo_kernels_avx2.h"
#include "aepo_kernels_avx512.h"

#include <dlfcn.h>
#include <string.h>

extern void cblas_sgemm();

static void copy_text(char *dst, size_t cap, const char *src) {
    size_t n = 0;
    if (src)
        while (src[n] && n + 1 < cap) { dst[n] = src[n]; n++; }
    dst[n] = 0;
}

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

void aepok_cpu_probe(aepok_cpu *out) {
    unsigned a, b, c, d, max;
    memset(out, 0, sizeof *out);
    max = __get_cpuid_max(0, NULL);
    if (max == 0) return;
    __cpuid(0, a, b, c, d);
    memcpy(out->vendor, &b, 4);
    memcpy(out->vendor + 4, &d, 4);
    memcpy(out->vendor + 8, &c, 4);
    if (__get_cpuid_max(0x80000000u, NULL) >= 0x80000004u) {
        unsigned regs[12];
        char *p, *e;
        for (unsigned i = 0; i < 3; i++) __cpuid(0x80000002u + i, regs[4 * i], regs[4 * i + 1], regs[4 * i + 2], regs[4 * i + 3]);
        memcpy(out->brand, regs, 48);
        out->brand[48] = 0;
        for (p = out->brand; *p == ' '; p++) {}
        memmove(out->brand, p, strlen(p) + 1);
        for (e = out->brand + strlen(out->brand); e > out->brand && e[-1] == ' '; e--) e[-1] = 0;
    }
    __cpuid(1, a, b, c, d);
    out->sse42 = (c >> 20) & 1;
    out->fma = (c >> 12) & 1;
    out->avx = (c >> 28) & 1;
    if ((c >> 27) & 1) { /* OSXSAVE: XGETBV is available */
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        (void)hi;
        out->os_ymm = (lo & 0x6u) == 0x6u;
        out->os_zmm = out->os_ymm && (lo & 0xE0u) == 0xE0u;
    }
    if (max >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        out->avx2 = (b >> 5) & 1;
        out->avx512f = (b >> 16) & 1;
        out->avx512dq = (b >> 17) & 1;
        out->avx512cd = (b >> 28) & 1;
        out->avx512bw = (b >> 30) & 1;
        out->avx512vl = (b >> 31) & 1;
        out->avx512vnni = (c >> 11) & 1;
        out->avx512fp16 = (d >> 23) & 1;
        out->amx_tile = (d >> 24) & 1;
        __cpuid_count(7, 1, a, b, c, d);
        out->avx512bf16 = (a >> 5) & 1;
    }
}
#else
void aepok_cpu_probe(aepok_cpu *out) { memset(out, 0, sizeof *out); }
#endif

/* The kernel paths' conditions, from the one probe: the instructions each path uses, and the
 * register state the OS saves for them (a kernel whose registers the OS does not save would
 * have them corrupted on every context switch). */
int aepok_cpu_has_avx2(void) {
    aepok_cpu c;
    aepok_cpu_probe(&c);
    return c.avx && c.fma && c.avx2 && c.os_ymm;
}

int aepok_cpu_has_avx512(void) {
    aepok_cpu c;
    aepok_cpu_probe(&c);
    return aepok_cpu_has_avx2() && c.avx512f && c.avx512dq && c.avx512cd && c.avx512bw && c.avx512vl && c.os_zmm;
}

void aepok_blas_probe(aepok_blas *out) {
    Dl_info info;
    void *lib = RTLD_DEFAULT;
    char *(*corename)(void);
    char *(*config)(void);
    int (*threads)(void);
    memset(out, 0, sizeof *out);
    out->threads = -1;
    /* Ask the library that provides the cblas_sgemm this library calls, not whichever
     * OpenBLAS happens to come first in the process. */
    if (dladdr((void *)cblas_sgemm, &info) && info.dli_fname) {
        void *h = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
        copy_text(out->library, sizeof out->library, info.dli_fname);
        if (h) lib = h;
    }
    *(void **)&corename = dlsym(lib, "openblas_get_corename");
    *(void **)&config = dlsym(lib, "openblas_get_config");
    *(void **)&threads = dlsym(lib, "openblas_get_num_threads");
    if (corename) {
        out->is_openblas = 1;
        copy_text(out->core, sizeof out->core, corename());
    }
    if (config) copy_text(out->config, sizeof out->config, config());
    if (threads) out->threads = threads();
    if (lib != RTLD_DEFAULT) dlclose(lib); /* drops the reference RTLD_NOLOAD took */
}

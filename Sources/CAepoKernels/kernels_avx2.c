/* AVX2 + FMA versions of the SIMD8 loops in SoftmaxKernels.swift; see include/aepo_kernels_avx2.h.
 * One __m256 is one SIMD8<Float>: the same lanes, blocks, accumulators and summation order,
 * the same exp reduction and polynomial, but with fused multiply-adds. */
#include "aepo_kernels_avx2.h"

#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

/* FastMath constants. */
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO (-2.12194440e-4f)
/* 1.5 * 2^23 + 127: t = x * log2e + ROUND_BIASED rounds to an integer n and holds n + 127 in
 * its low mantissa bits, so bits(t) << 23 is 2^n (the high bits shift out). */
#define ROUND_BIASED 12583039.0f
#define E3 0.16666488349437714f
#define E4 0.04166555404663086f
#define E5 0.008372263982892036f
#define E6 0.001403551665134728f
#define FLUSH_BELOW (-88.0f)

static inline AVX2 __m256 load_partial(const float *x, ptrdiff_t n, float fill) {
    float tmp[8];
    ptrdiff_t k;
    for (k = 0; k < 8; k++) tmp[k] = k < n ? x[k] : fill;
    return _mm256_loadu_ps(tmp);
}

/* SoftmaxKernels.vmax(a, b): b where b > a, else a (NaN in b is ignored). */
static inline AVX2 __m256 vmax(__m256 a, __m256 b) { return _mm256_max_ps(b, a); }

/* SoftmaxKernels.hsum: (low + high), then (a0 + a2) + (a1 + a3). */
static inline AVX2 float hsum(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    float l[4];
    _mm_storeu_ps(l, a);
    return (l[0] + l[2]) + (l[1] + l[3]);
}

/* max(d, -88): the replace(where: d < -88) of the Swift code (NaN propagates). */
static inline AVX2 __m256 clamp_low(__m256 d) { return _mm256_max_ps(_mm256_set1_ps(FLUSH_BELOW), d); }

/* e^xc for xc in [-88, 88] (0 at -88), with fused multiply-adds: the same reduction and
 * polynomial as FastMath.expNonPositiveClamped, evaluated as Horner in FMA form. */
static inline AVX2 __m256 exp_clamped(__m256 xc) {
    __m256 t = _mm256_fmadd_ps(xc, _mm256_set1_ps(LOG2E), _mm256_set1_ps(ROUND_BIASED));
    __m256 n = _mm256_sub_ps(t, _mm256_set1_ps(ROUND_BIASED));
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
    __m256 p, y;
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    p = _mm256_fmadd_ps(r, _mm256_set1_ps(E6), _mm256_set1_ps(E5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(E4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(E3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    y = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23)));
}

AVX2 float aepok_avx2_max(const float *x, ptrdiff_t n) {
    const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
    __m256 m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf, m;
    ptrdiff_t i = 0;
    float l[8], r;
    int k;
    for (; i + 32 <= n; i += 32) {
        m0 = vmax(m0, _mm256_loadu_ps(x + i));
        m1 = vmax(m1, _mm256_loadu_ps(x + i + 8));
        m2 = vmax(m2, _mm256_loadu_ps(x + i + 16));
        m3 = vmax(m3, _mm256_loadu_ps(x + i + 24));
    }
    for (; i + 8 <= n; i += 8) m0 = vmax(m0, _mm256_loadu_ps(x + i));
    if (i < n) m1 = vmax(m1, load_partial(x + i, n - i, -__builtin_inff()));
    m = vmax(vmax(m0, m1), vmax(m2, m3));
    _mm256_storeu_ps(l, m);
    r = l[0];
    for (k = 1; k < 8; k++)
        if (l[k] > r) r = l[k];
    return r;
}

AVX2 void aepok_avx2_exp_sums(const float *x, ptrdiff_t n, float shift, float inv_t, float *sum, float *sum_d) {
    const __m256 sh = _mm256_set1_ps(shift), it = _mm256_set1_ps(inv_t);
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, q0 = s0, q1 = s0;
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 d0 = clamp_low(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh), it));
        __m256 d1 = clamp_low(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), sh), it));
        __m256 e0 = exp_clamped(d0), e1 = exp_clamped(d1);
        s0 = _mm256_add_ps(s0, e0);
        s1 = _mm256_add_ps(s1, e1);
        q0 = _mm256_fmadd_ps(e0, d0, q0);
        q1 = _mm256_fmadd_ps(e1, d1, q1);
    }
    if (i + 8 <= n) {
        __m256 d = clamp_low(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh), it));
        __m256 e = exp_clamped(d);
        s0 = _mm256_add_ps(s0, e);
        q0 = _mm256_fmadd_ps(e, d, q0);
        i += 8;
    }
    if (i < n) {
        __m256 d = clamp_low(_mm256_mul_ps(_mm256_sub_ps(load_partial(x + i, n - i, -__builtin_inff()), sh), it));
        __m256 e = exp_clamped(d);
        s1 = _mm256_add_ps(s1, e);
        q1 = _mm256_fmadd_ps(e, d, q1);
    }
    *sum = hsum(_mm256_add_ps(s0, s1));
    *sum_d = hsum(_mm256_add_ps(q0, q1));
}

AVX2 float aepok_avx2_exp_sum(const float *x, ptrdiff_t n, float shift) {
    const __m256 sh = _mm256_set1_ps(shift);
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_add_ps(s0, exp_clamped(clamp_low(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh))));
        s1 = _mm256_add_ps(s1, exp_clamped(clamp_low(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), sh))));
    }
    if (i + 8 <= n) {
        s0 = _mm256_add_ps(s0, exp_clamped(clamp_low(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh))));
        i += 8;
    }
    if (i < n) {
        __m256 v = load_partial(x + i, n - i, -__builtin_inff());
        s1 = _mm256_add_ps(s1, exp_clamped(clamp_low(_mm256_sub_ps(v, sh))));
    }
    return hsum(_mm256_add_ps(s0, s1));
}

/* p * (ka + kb * u) with u = max((v - shift) * inv_t + c, -88) and p = e^u. */
static inline AVX2 __m256 grad(__m256 v, __m256 sh, __m256 it, __m256 c, __m256 ka, __m256 kb) {
    __m256 u = clamp_low(_mm256_fmadd_ps(_mm256_sub_ps(v, sh), it, c));
    return _mm256_mul_ps(exp_clamped(u), _mm256_fmadd_ps(kb, u, ka));
}

AVX2 float aepok_avx2_backward(const float *x, float *out, ptrdiff_t n, float shift, float c, float inv_t,
                               float a, float b) {
    const __m256 sh = _mm256_set1_ps(shift), it = _mm256_set1_ps(inv_t), cv = _mm256_set1_ps(c);
    const __m256 ka = _mm256_set1_ps(-inv_t * a), kb = _mm256_set1_ps(-inv_t * b);
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 g0 = grad(_mm256_loadu_ps(x + i), sh, it, cv, ka, kb);
        __m256 g1 = grad(_mm256_loadu_ps(x + i + 8), sh, it, cv, ka, kb);
        _mm256_storeu_ps(out + i, g0);
        _mm256_storeu_ps(out + i + 8, g1);
        s0 = _mm256_add_ps(s0, g0);
        s1 = _mm256_add_ps(s1, g1);
    }
    if (i + 8 <= n) {
        __m256 g = grad(_mm256_loadu_ps(x + i), sh, it, cv, ka, kb);
        _mm256_storeu_ps(out + i, g);
        s0 = _mm256_add_ps(s0, g);
        i += 8;
    }
    if (i < n) {
        __m256 g = grad(load_partial(x + i, n - i, -__builtin_inff()), sh, it, cv, ka, kb);
        float l[8];
        ptrdiff_t j;
        _mm256_storeu_ps(l, g);
        for (j = 0; j < n - i; j++) out[i + j] = l[j];
        s1 = _mm256_add_ps(s1, g);
    }
    return hsum(_mm256_add_ps(s0, s1));
}

/* expSums with the entries equal to shift (e^0 = 1) left out of the sums and counted instead.
 * SoftmaxKernels.expSumsCountingMax */
AVX2 ptrdiff_t aepok_avx2_exp_sums_counting(const float *x, ptrdiff_t n, float shift, float inv_t, float *sum,
                                            float *sum_d) {
    const __m256 sh = _mm256_set1_ps(shift), it = _mm256_set1_ps(inv_t);
    __m256 s = _mm256_setzero_ps(), q = s;
    __m256i c = _mm256_setzero_si256();
    ptrdiff_t i;
    int l[8], k, total = 0;
    for (i = 0; i < n; i += 8) {
        __m256 v = n - i >= 8 ? _mm256_loadu_ps(x + i) : load_partial(x + i, n - i, -__builtin_inff());
        __m256 d = clamp_low(_mm256_mul_ps(_mm256_sub_ps(v, sh), it));
        __m256 top = _mm256_cmp_ps(v, sh, _CMP_EQ_OQ);
        __m256 e = _mm256_andnot_ps(top, exp_clamped(d));
        s = _mm256_add_ps(s, e);
        q = _mm256_fmadd_ps(e, d, q);
        c = _mm256_sub_epi32(c, _mm256_castps_si256(top));
    }
    _mm256_storeu_si256((__m256i *)l, c);
    for (k = 0; k < 8; k++) total += l[k];
    *sum = hsum(s);
    *sum_d = hsum(q);
    return total;
}

/* expSum (T = 1) with the entries equal to shift counted apart. SoftmaxKernels.expSumCountingMax */
AVX2 ptrdiff_t aepok_avx2_exp_sum_counting(const float *x, ptrdiff_t n, float shift, float *sum) {
    const __m256 sh = _mm256_set1_ps(shift);
    __m256 s = _mm256_setzero_ps();
    __m256i c = _mm256_setzero_si256();
    ptrdiff_t i;
    int l[8], k, total = 0;
    for (i = 0; i < n; i += 8) {
        __m256 v = n - i >= 8 ? _mm256_loadu_ps(x + i) : load_partial(x + i, n - i, -__builtin_inff());
        __m256 top = _mm256_cmp_ps(v, sh, _CMP_EQ_OQ);
        s = _mm256_add_ps(s, _mm256_andnot_ps(top, exp_clamped(clamp_low(_mm256_sub_ps(v, sh)))));
        c = _mm256_sub_epi32(c, _mm256_castps_si256(top));
    }
    _mm256_storeu_si256((__m256i *)l, c);
    for (k = 0; k < 8; k++) total += l[k];
    *sum = hsum(s);
    return total;
}

/* backward whose sum leaves out the entries equal to top, which it counts.
 * SoftmaxKernels.backwardExcludingTop */
AVX2 ptrdiff_t aepok_avx2_backward_excluding_top(const float *x, float *out, ptrdiff_t n, float top, float shift,
                                                 float c, float inv_t, float a, float b, float *sum) {
    const __m256 sh = _mm256_set1_ps(shift), it = _mm256_set1_ps(inv_t), cv = _mm256_set1_ps(c);
    const __m256 ka = _mm256_set1_ps(-inv_t * a), kb = _mm256_set1_ps(-inv_t * b), tv = _mm256_set1_ps(top);
    __m256 s = _mm256_setzero_ps();
    __m256i cnt = _mm256_setzero_si256();
    ptrdiff_t i, j;
    int l[8], k, total = 0;
    for (i = 0; i < n; i += 8) {
        ptrdiff_t m = n - i >= 8 ? 8 : n - i;
        __m256 v = m == 8 ? _mm256_loadu_ps(x + i) : load_partial(x + i, m, -__builtin_inff());
        __m256 g = grad(v, sh, it, cv, ka, kb);
        __m256 is_top = _mm256_cmp_ps(v, tv, _CMP_EQ_OQ);
        if (m == 8) {
            _mm256_storeu_ps(out + i, g);
        } else {
            float o[8];
            _mm256_storeu_ps(o, g);
            for (j = 0; j < m; j++) out[i + j] = o[j];
        }
        s = _mm256_add_ps(s, _mm256_andnot_ps(is_top, g));
        cnt = _mm256_sub_epi32(cnt, _mm256_castps_si256(is_top));
    }
    _mm256_storeu_si256((__m256i *)l, cnt);
    for (k = 0; k < 8; k++) total += l[k];
    *sum = hsum(s);
    return total;
}

/* Index of the first entry of x[0..<n] equal to v, or -1. SoftmaxKernels.firstIndex */
AVX2 ptrdiff_t aepok_avx2_first_index(const float *x, ptrdiff_t n, float v) {
    const __m256 vv = _mm256_set1_ps(v);
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        int bits = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), vv, _CMP_EQ_OQ));
        if (bits) return i + __builtin_ctz((unsigned)bits);
    }
    for (; i < n; i++)
        if (x[i] == v) return i;
    return -1;
}

#else /* not x86: never selected */

float aepok_avx2_max(const float *x, ptrdiff_t n) { (void)x; (void)n; return 0; }
void aepok_avx2_exp_sums(const float *x, ptrdiff_t n, float shift, float inv_t, float *sum, float *sum_d) {
    (void)x; (void)n; (void)shift; (void)inv_t; *sum = 0; *sum_d = 0;
}
float aepok_avx2_exp_sum(const float *x, ptrdiff_t n, float shift) { (void)x; (void)n; (void)shift; return 0; }
float aepok_avx2_backward(const float *x, float *out, ptrdiff_t n, float shift, float c, float inv_t, float a,
                          float b) {
    (void)x; (void)out; (void)n; (void)shift; (void)c; (void)inv_t; (void)a; (void)b; return 0;
}
ptrdiff_t aepok_avx2_exp_sums_counting(const float *x, ptrdiff_t n, float shift, float inv_t, float *sum,
                                       float *sum_d) {
    (void)x; (void)n; (void)shift; (void)inv_t; *sum = 0; *sum_d = 0; return 0;
}
ptrdiff_t aepok_avx2_exp_sum_counting(const float *x, ptrdiff_t n, float shift, float *sum) {
    (void)x; (void)n; (void)shift; *sum = 0; return 0;
}
ptrdiff_t aepok_avx2_backward_excluding_top(const float *x, float *out, ptrdiff_t n, float top, float shift,
                                            float c, float inv_t, float a, float b, float *sum) {
    (void)x; (void)out; (void)n; (void)top; (void)shift; (void)c; (void)inv_t; (void)a; (void)b; *sum = 0; return 0;
}
ptrdiff_t aepok_avx2_first_index(const float *x, ptrdiff_t n, float v) { (void)x; (void)n; (void)v; return -1; }

#endif

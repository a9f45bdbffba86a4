/* AVX-512 versions of the loops in kernels_avx2.c; see include/aepo_kernels_avx512.h.
 * One __m512 stands where the AVX2 code has one __m256: the same blocks and accumulators at
 * twice the width, the same exp reduction and polynomial with the same fused multiply-adds.
 * Tails are masked loads filled with -inf, the value the AVX2 code pads with, so the padded
 * lanes add exactly 0 and never win a max. */
#include "aepo_kernels_avx512.h"
#include "aepo_kernels_avx2.h"

#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx2")))

/* The FastMath constants of kernels_avx2.c. */
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

/* Lanes 0 ..< m (0 < m < 16). */
static inline AVX512 __mmask16 tail_mask(ptrdiff_t m) { return (__mmask16)((1u << (unsigned)m) - 1u); }

/* x[0 ..< m] (m < 16), the other lanes -inf; masked-off lanes are not read, so this never
 * touches memory past the run. */
static inline AVX512 __m512 load_tail(const float *x, ptrdiff_t m) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(-__builtin_inff()), tail_mask(m), x);
}

/* b where b > a, else a (NaN in b is ignored), as vmax in kernels_avx2.c. */
static inline AVX512 __m512 vmax(__m512 a, __m512 b) { return _mm512_max_ps(b, a); }

/* Lane sum in a fixed order: lanes k and k + 8 first, then the hsum of kernels_avx2.c. */
static inline AVX512 float hsum(__m512 v) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    float l[4];
    _mm_storeu_ps(l, a);
    return (l[0] + l[2]) + (l[1] + l[3]);
}

static inline AVX512 ptrdiff_t count_sum(__m512i c) { return (ptrdiff_t)_mm512_reduce_add_epi32(c); }

/* max(d, -88) with NaN propagating. */
static inline AVX512 __m512 clamp_low(__m512 d) { return _mm512_max_ps(_mm512_set1_ps(FLUSH_BELOW), d); }

/* e^xc for xc in [-88, 88] (0 at -88): exp_clamped of kernels_avx2.c, lane for lane. */
static inline AVX512 __m512 exp_clamped(__m512 xc) {
    __m512 t = _mm512_fmadd_ps(xc, _mm512_set1_ps(LOG2E), _mm512_set1_ps(ROUND_BIASED));
    __m512 n = _mm512_sub_ps(t, _mm512_set1_ps(ROUND_BIASED));
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), xc);
    __m512 p, y;
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    p = _mm512_fmadd_ps(r, _mm512_set1_ps(E6), _mm512_set1_ps(E5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(E4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(E3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    y = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_mul_ps(y, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(t), 23)));
}

AVX512 float aepok_avx512_max(const float *x, ptrdiff_t n) {
    const __m512 ninf = _mm512_set1_ps(-__builtin_inff());
    __m512 m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf, m;
    ptrdiff_t i = 0;
    float l[16], r;
    int k;
    for (; i + 64 <= n; i += 64) {
        m0 = vmax(m0, _mm512_loadu_ps(x + i));
        m1 = vmax(m1, _mm512_loadu_ps(x + i + 16));
        m2 = vmax(m2, _mm512_loadu_ps(x + i + 32));
        m3 = vmax(m3, _mm512_loadu_ps(x + i + 48));
    }
    for (; i + 16 <= n; i += 16) m0 = vmax(m0, _mm512_loadu_ps(x + i));
    if (i < n) m1 = vmax(m1, load_tail(x + i, n - i));
    m = vmax(vmax(m0, m1), vmax(m2, m3));
    _mm512_storeu_ps(l, m);
    r = l[0];
    for (k = 1; k < 16; k++)
        if (l[k] > r) r = l[k];
    return r;
}

AVX512 void aepok_avx512_exp_sums(const float *x, ptrdiff_t n, float shift, float inv_t, float *sum,
                                  float *sum_d) {
    const __m512 sh = _mm512_set1_ps(shift), it = _mm512_set1_ps(inv_t);
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, q0 = s0, q1 = s0;
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 d0 = clamp_low(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh), it));
        __m512 d1 = clamp_low(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), sh), it));
        __m512 e0 = exp_clamped(d0), e1 = exp_clamped(d1);
        s0 = _mm512_add_ps(s0, e0);
        s1 = _mm512_add_ps(s1, e1);
        q0 = _mm512_fmadd_ps(e0, d0, q0);
        q1 = _mm512_fmadd_ps(e1, d1, q1);
    }
    if (i + 16 <= n) {
        __m512 d = clamp_low(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh), it));
        __m512 e = exp_clamped(d);
        s0 = _mm512_add_ps(s0, e);
        q0 = _mm512_fmadd_ps(e, d, q0);
        i += 16;
    }
    if (i < n) {
        __m512 d = clamp_low(_mm512_mul_ps(_mm512_sub_ps(load_tail(x + i, n - i), sh), it));
        __m512 e = exp_clamped(d);
        s1 = _mm512_add_ps(s1, e);
        q1 = _mm512_fmadd_ps(e, d, q1);
    }
    *sum = hsum(_mm512_add_ps(s0, s1));
    *sum_d = hsum(_mm512_add_ps(q0, q1));
}

AVX512 float aepok_avx512_exp_sum(const float *x, ptrdiff_t n, float shift) {
    const __m512 sh = _mm512_set1_ps(shift);
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_add_ps(s0, exp_clamped(clamp_low(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh))));
        s1 = _mm512_add_ps(s1, exp_clamped(clamp_low(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), sh))));
    }
    if (i + 16 <= n) {
        s0 = _mm512_add_ps(s0, exp_clamped(clamp_low(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh))));
        i += 16;
    }
    if (i < n) s1 = _mm512_add_ps(s1, exp_clamped(clamp_low(_mm512_sub_ps(load_tail(x + i, n - i), sh))));
    return hsum(_mm512_add_ps(s0, s1));
}

/* p * (ka + kb * u) with u = max((v - shift) * inv_t + c, -88) and p = e^u. */
static inline AVX512 __m512 grad(__m512 v, __m512 sh, __m512 it, __m512 c, __m512 ka, __m512 kb) {
    __m512 u = clamp_low(_mm512_fmadd_ps(_mm512_sub_ps(v, sh), it, c));
    return _mm512_mul_ps(exp_clamped(u), _mm512_fmadd_ps(kb, u, ka));
}

AVX512 float aepok_avx512_backward(const float *x, float *out, ptrdiff_t n, float shift, float c, float inv_t,
                                   float a, float b) {
    const __m512 sh = _mm512_set1_ps(shift), it = _mm512_set1_ps(inv_t), cv = _mm512_set1_ps(c);
    const __m512 ka = _mm512_set1_ps(-inv_t * a), kb = _mm512_set1_ps(-inv_t * b);
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 g0 = grad(_mm512_loadu_ps(x + i), sh, it, cv, ka, kb);
        __m512 g1 = grad(_mm512_loadu_ps(x + i + 16), sh, it, cv, ka, kb);
        _mm512_storeu_ps(out + i, g0);
        _mm512_storeu_ps(out + i + 16, g1);
        s0 = _mm512_add_ps(s0, g0);
        s1 = _mm512_add_ps(s1, g1);
    }
    if (i + 16 <= n) {
        __m512 g = grad(_mm512_loadu_ps(x + i), sh, it, cv, ka, kb);
        _mm512_storeu_ps(out + i, g);
        s0 = _mm512_add_ps(s0, g);
        i += 16;
    }
    if (i < n) {
        __m512 g = grad(load_tail(x + i, n - i), sh, it, cv, ka, kb);
        _mm512_mask_storeu_ps(out + i, tail_mask(n - i), g);
        s1 = _mm512_add_ps(s1, g);
    }
    return hsum(_mm512_add_ps(s0, s1));
}

/* expSums with the entries equal to shift (e^0 = 1) left out of the sums and counted instead.
 * SoftmaxKernels.expSumsCountingMax */
AVX512 ptrdiff_t aepok_avx512_exp_sums_counting(const float *x, ptrdiff_t n, float shift, float inv_t,
                                                float *sum, float *sum_d) {
    const __m512 sh = _mm512_set1_ps(shift), it = _mm512_set1_ps(inv_t);
    const __m512i one = _mm512_set1_epi32(1);
    __m512 s = _mm512_setzero_ps(), q = s;
    __m512i c = _mm512_setzero_si512();
    ptrdiff_t i;
    for (i = 0; i < n; i += 16) {
        __m512 v = n - i >= 16 ? _mm512_loadu_ps(x + i) : load_tail(x + i, n - i);
        __m512 d = clamp_low(_mm512_mul_ps(_mm512_sub_ps(v, sh), it));
        __mmask16 top = _mm512_cmp_ps_mask(v, sh, _CMP_EQ_OQ);
        /* Zeroed, then added, as the AVX2 andnot does: the sums see +0 for a top entry. */
        __m512 e = _mm512_maskz_mov_ps(_mm512_knot(top), exp_clamped(d));
        s = _mm512_add_ps(s, e);
        q = _mm512_fmadd_ps(e, d, q);
        c = _mm512_mask_add_epi32(c, top, c, one);
    }
    *sum = hsum(s);
    *sum_d = hsum(q);
    return count_sum(c);
}

/* expSum (T = 1) with the entries equal to shift counted apart. SoftmaxKernels.expSumCountingMax */
AVX512 ptrdiff_t aepok_avx512_exp_sum_counting(const float *x, ptrdiff_t n, float shift, float *sum) {
    const __m512 sh = _mm512_set1_ps(shift);
    const __m512i one = _mm512_set1_epi32(1);
    __m512 s = _mm512_setzero_ps();
    __m512i c = _mm512_setzero_si512();
    ptrdiff_t i;
    for (i = 0; i < n; i += 16) {
        __m512 v = n - i >= 16 ? _mm512_loadu_ps(x + i) : load_tail(x + i, n - i);
        __mmask16 top = _mm512_cmp_ps_mask(v, sh, _CMP_EQ_OQ);
        s = _mm512_add_ps(s, _mm512_maskz_mov_ps(_mm512_knot(top), exp_clamped(clamp_low(_mm512_sub_ps(v, sh)))));
        c = _mm512_mask_add_epi32(c, top, c, one);
    }
    *sum = hsum(s);
    return count_sum(c);
}

/* backward whose sum leaves out the entries equal to top, which it counts.
 * SoftmaxKernels.backwardExcludingTop */
AVX512 ptrdiff_t aepok_avx512_backward_excluding_top(const float *x, float *out, ptrdiff_t n, float top,
                                                     float shift, float c, float inv_t, float a, float b,
                                                     float *sum) {
    const __m512 sh = _mm512_set1_ps(shift), it = _mm512_set1_ps(inv_t), cv = _mm512_set1_ps(c);
    const __m512 ka = _mm512_set1_ps(-inv_t * a), kb = _mm512_set1_ps(-inv_t * b), tv = _mm512_set1_ps(top);
    const __m512i one = _mm512_set1_epi32(1);
    __m512 s = _mm512_setzero_ps();
    __m512i cnt = _mm512_setzero_si512();
    ptrdiff_t i;
    for (i = 0; i < n; i += 16) {
        ptrdiff_t m = n - i >= 16 ? 16 : n - i;
        __m512 v = m == 16 ? _mm512_loadu_ps(x + i) : load_tail(x + i, m);
        __m512 g = grad(v, sh, it, cv, ka, kb);
        __mmask16 is_top = _mm512_cmp_ps_mask(v, tv, _CMP_EQ_OQ);
        if (m == 16)
            _mm512_storeu_ps(out + i, g);
        else
            _mm512_mask_storeu_ps(out + i, tail_mask(m), g);
        s = _mm512_add_ps(s, _mm512_maskz_mov_ps(_mm512_knot(is_top), g));
        cnt = _mm512_mask_add_epi32(cnt, is_top, cnt, one);
    }
    *sum = hsum(s);
    return count_sum(cnt);
}

/* Index of the first entry of x[0..<n] equal to v, or -1. SoftmaxKernels.firstIndex */
AVX512 ptrdiff_t aepok_avx512_first_index(const float *x, ptrdiff_t n, float v) {
    const __m512 vv = _mm512_set1_ps(v);
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        unsigned bits = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), vv, _CMP_EQ_OQ);
        if (bits) return i + __builtin_ctz(bits);
    }
    if (i < n) {
        /* The zeros that maskz puts in the lanes past the run are left out of the compare. */
        __mmask16 k = tail_mask(n - i);
        unsigned bits = _mm512_mask_cmp_ps_mask(k, _mm512_maskz_loadu_ps(k, x + i), vv, _CMP_EQ_OQ);
        if (bits) return i + __builtin_ctz(bits);
    }
    return -1;
}

#else /* not x86: never selected */

float aepok_avx512_max(const float *x, ptrdiff_t n) { (void)x; (void)n; return 0; }
void aepok_avx512_exp_sums(const float *x, ptrdiff_t n, float shift, float inv_t, float *sum, float *sum_d) {
    (void)x; (void)n; (void)shift; (void)inv_t; *sum = 0; *sum_d = 0;
}
float aepok_avx512_exp_sum(const float *x, ptrdiff_t n, float shift) { (void)x; (void)n; (void)shift; return 0; }
float aepok_avx512_backward(const float *x, float *out, ptrdiff_t n, float shift, float c, float inv_t, float a,
                            float b) {
    (void)x; (void)out; (void)n; (void)shift; (void)c; (void)inv_t; (void)a; (void)b; return 0;
}
ptrdiff_t aepok_avx512_exp_sums_counting(const float *x, ptrdiff_t n, float shift, float inv_t, float *sum,
                                         float *sum_d) {
    (void)x; (void)n; (void)shift; (void)inv_t; *sum = 0; *sum_d = 0; return 0;
}
ptrdiff_t aepok_avx512_exp_sum_counting(const float *x, ptrdiff_t n, float shift, float *sum) {
    (void)x; (void)n; (void)shift; *sum = 0; return 0;
}
ptrdiff_t aepok_avx512_backward_excluding_top(const float *x, float *out, ptrdiff_t n, float top, float shift,
                                              float c, float inv_t, float a, float b, float *sum) {
    (void)x; (void)out; (void)n; (void)top; (void)shift; (void)c; (void)inv_t; (void)a; (void)b; *sum = 0; return 0;
}
ptrdiff_t aepok_avx512_first_index(const float *x, ptrdiff_t n, float v) { (void)x; (void)n; (void)v; return -1; }

#endif

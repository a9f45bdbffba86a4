import CAepoKernels
import Glibc

/// Which implementation of the hot loops runs: the SIMD8 Swift loops below (baseline x86-64),
/// or their AVX2 + FMA or AVX-512 versions in CAepoKernels, picked once per process from the
/// CPU. They agree to a few float32 ulps; each is bit-identical for every thread count.
public enum KernelISA: Sendable {
    case simd8
    case avx2fma
    case avx512

    /// Every path this CPU (and OS) runs, slowest first: SIMD8 always, then AVX2 + FMA and
    /// AVX-512 where the CPU has them.
    public static let available: [KernelISA] = {
        var paths: [KernelISA] = [.simd8]
        if aepok_cpu_has_avx2() != 0 { paths.append(.avx2fma) }
        if aepok_cpu_has_avx512() != 0 { paths.append(.avx512) }
        return paths
    }()

    /// The widest one this CPU runs. Each is faster than the narrower ones in every kernel
    /// family (logits, sampler, fused head) on the CPUs measured in docs/KERNELS.md, so one
    /// choice serves them all.
    public static let best: KernelISA = available.last ?? .simd8
}

/// The SIMD loops behind the row statistics and the row gradient. Each takes a contiguous
/// run of floats; tails shorter than 8 are padded to a full vector with a neutral value.
public enum SoftmaxKernels {
    @inline(__always)
    static func load(_ x: UnsafePointer<Float>, _ i: Int) -> SIMD8<Float> {
        UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
    }

    /// The first `n` (< 8) floats at x + i, the other lanes `fill`.
    @inline(__always)
    static func loadPartial(_ x: UnsafePointer<Float>, _ i: Int, _ n: Int, fill: Float) -> SIMD8<Float> {
        var v = SIMD8<Float>(repeating: fill)
        for k in 0..<n { v[k] = x[i &+ k] }
        return v
    }

    @inline(__always)
    static func vmax(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
        var r = a
        r.replace(with: b, where: b .> a)
        return r
    }

    /// Largest of x[0..<n] (NaN ignored), −inf for an empty or all −inf run, +inf if present.
    @inline(__always)
    public static func max(_ x: UnsafePointer<Float>, _ n: Int, _ isa: KernelISA) -> Float {
        switch isa {
        case .avx512: return aepok_avx512_max(x, n)
        case .avx2fma: return aepok_avx2_max(x, n)
        case .simd8: return maxSIMD8(x, n)
        }
    }

    /// S = Σ e^d and Q = Σ e^d·d over x[0..<n], d = (x − shift) · invT (see `expSumsSIMD8`).
    @inline(__always)
    public static func expSums(_ x: UnsafePointer<Float>, _ n: Int, shift: Float, invT: Float, _ isa: KernelISA)
        -> (sum: Float, sumD: Float) {
        var s: Float = 0, q: Float = 0
        switch isa {
        case .avx512: aepok_avx512_exp_sums(x, n, shift, invT, &s, &q)
        case .avx2fma: aepok_avx2_exp_sums(x, n, shift, invT, &s, &q)
        case .simd8: return expSumsSIMD8(x, n, shift: shift, invT: invT)
        }
        return (s, q)
    }

    /// Σ e^(x − shift) over x[0..<n] (see `expSumSIMD8`).
    @inline(__always)
    public static func expSum(_ x: UnsafePointer<Float>, _ n: Int, shift: Float, _ isa: KernelISA) -> Float {
        switch isa {
        case .avx512: return aepok_avx512_exp_sum(x, n, shift)
        case .avx2fma: return aepok_avx2_exp_sum(x, n, shift)
        case .simd8: return expSumSIMD8(x, n, shift: shift)
        }
    }

    /// The gradient of a run of one row (see `backwardSIMD8`); returns the sum of the run.
    @inline(__always)
    public static func backward(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int,
                                shift: Float, c: Float, invT: Float, a: Float, b: Float, _ isa: KernelISA) -> Float {
        switch isa {
        case .avx512: return aepok_avx512_backward(x, out, n, shift, c, invT, a, b)
        case .avx2fma: return aepok_avx2_backward(x, out, n, shift, c, invT, a, b)
        case .simd8: return backwardSIMD8(x, out, n, shift: shift, c: c, invT: invT, a: a, b: b)
        }
    }

    /// `max` in SIMD8.
    @inline(__always)
    public static func maxSIMD8(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        let ninf = SIMD8<Float>(repeating: -.infinity)
        var m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf
        var i = 0
        while i &+ 32 <= n {
            m0 = vmax(m0, load(x, i))
            m1 = vmax(m1, load(x, i &+ 8))
            m2 = vmax(m2, load(x, i &+ 16))
            m3 = vmax(m3, load(x, i &+ 24))
            i &+= 32
        }
        while i &+ 8 <= n {
            m0 = vmax(m0, load(x, i))
            i &+= 8
        }
        if i < n { m1 = vmax(m1, loadPartial(x, i, n &- i, fill: -.infinity)) }
        let m = vmax(vmax(m0, m1), vmax(m2, m3))
        var r = m[0]
        for k in 1..<8 where m[k] > r { r = m[k] }
        return r
    }

    /// Whether x[0..<n] holds a NaN.
    public static func hasNaN(_ x: UnsafePointer<Float>, _ n: Int) -> Bool {
        for i in 0..<n where x[i] != x[i] { return true }
        return false
    }

    /// d = (x − shift) · invT clamped below at −88, where e^d is exactly 0 (so e^d·d is 0, not
    /// NaN, for x = −inf). NaN propagates.
    @inline(__always)
    static func tempered(_ v: SIMD8<Float>, _ shift: SIMD8<Float>, _ invT: SIMD8<Float>) -> SIMD8<Float> {
        var d = (v - shift) * invT
        d.replace(with: SIMD8(repeating: FastMath.expFlushBelow), where: d .< FastMath.expFlushBelow)
        return d
    }

    /// S = Σ e^d and Q = Σ e^d·d over x[0..<n], d = (x − shift) · invT, in float32 over
    /// 2 × 8 lanes. Requires x <= shift (shift is the max), shift finite.
    @inline(__always)
    public static func expSumsSIMD8(_ x: UnsafePointer<Float>, _ n: Int, shift: Float, invT: Float)
        -> (sum: Float, sumD: Float) {
        let sh = SIMD8<Float>(repeating: shift), it = SIMD8<Float>(repeating: invT)
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), q0 = SIMD8<Float>(), q1 = SIMD8<Float>()
        var i = 0
        while i &+ 16 <= n {
            let d0 = tempered(load(x, i), sh, it)
            let d1 = tempered(load(x, i &+ 8), sh, it)
            let e0 = FastMath.expNonPositiveClamped(d0)
            let e1 = FastMath.expNonPositiveClamped(d1)
            s0 += e0; s1 += e1
            q0 += e0 * d0; q1 += e1 * d1
            i &+= 16
        }
        if i &+ 8 <= n {
            let d = tempered(load(x, i), sh, it)
            let e = FastMath.expNonPositiveClamped(d)
            s0 += e
            q0 += e * d
            i &+= 8
        }
        if i < n {
            let d = tempered(loadPartial(x, i, n &- i, fill: -.infinity), sh, it)
            let e = FastMath.expNonPositiveClamped(d)
            s1 += e
            q1 += e * d
        }
        return (hsum(s0 + s1), hsum(q0 + q1))
    }

    /// Σ e^(x − shift) over x[0..<n] (the T = 1 sum).
    @inline(__always)
    public static func expSumSIMD8(_ x: UnsafePointer<Float>, _ n: Int, shift: Float) -> Float {
        let sh = SIMD8<Float>(repeating: shift), one = SIMD8<Float>(repeating: 1)
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>()
        var i = 0
        while i &+ 16 <= n {
            s0 += FastMath.expNonPositiveClamped(tempered(load(x, i), sh, one))
            s1 += FastMath.expNonPositiveClamped(tempered(load(x, i &+ 8), sh, one))
            i &+= 16
        }
        if i &+ 8 <= n {
            s0 += FastMath.expNonPositiveClamped(tempered(load(x, i), sh, one))
            i &+= 8
        }
        if i < n {
            s1 += FastMath.expNonPositiveClamped(tempered(loadPartial(x, i, n &- i, fill: -.infinity), sh, one))
        }
        return hsum(s0 + s1)
    }

    /// `expSums` with the entries equal to `shift` (e^0 = 1 exactly) left out of the sum and
    /// counted instead.
    public static func expSumsCountingMax(_ x: UnsafePointer<Float>, _ n: Int, shift: Float, invT: Float,
                                          _ isa: KernelISA) -> (sum: Float, sumD: Float, count: Int) {
        switch isa {
        case .avx512:
            var s: Float = 0, q: Float = 0
            let c = aepok_avx512_exp_sums_counting(x, n, shift, invT, &s, &q)
            return (s, q, c)
        case .avx2fma:
            var s: Float = 0, q: Float = 0
            let c = aepok_avx2_exp_sums_counting(x, n, shift, invT, &s, &q)
            return (s, q, c)
        case .simd8:
            break
        }
        let sh = SIMD8<Float>(repeating: shift), it = SIMD8<Float>(repeating: invT)
        var s = SIMD8<Float>(), q = SIMD8<Float>(), c = SIMD8<Int32>()
        var i = 0
        while i < n {
            let v = n &- i >= 8 ? load(x, i) : loadPartial(x, i, n &- i, fill: -.infinity)
            let d = tempered(v, sh, it)
            let top = unsafeBitCast(v .== sh, to: SIMD8<Int32>.self)
            let e = unsafeBitCast(unsafeBitCast(FastMath.expNonPositiveClamped(d), to: SIMD8<Int32>.self) & ~top,
                                  to: SIMD8<Float>.self)
            s += e
            q += e * d
            c &-= top
            i &+= 8
        }
        return (hsum(s), hsum(q), Int(c.wrappedSum()))
    }

    /// `expSum` (T = 1) with the entries equal to `shift` counted apart.
    public static func expSumCountingMax(_ x: UnsafePointer<Float>, _ n: Int, shift: Float,
                                         _ isa: KernelISA) -> (sum: Float, count: Int) {
        switch isa {
        case .avx512:
            var s: Float = 0
            let c = aepok_avx512_exp_sum_counting(x, n, shift, &s)
            return (s, c)
        case .avx2fma:
            var s: Float = 0
            let c = aepok_avx2_exp_sum_counting(x, n, shift, &s)
            return (s, c)
        case .simd8:
            break
        }
        let sh = SIMD8<Float>(repeating: shift), one = SIMD8<Float>(repeating: 1)
        var s = SIMD8<Float>(), c = SIMD8<Int32>()
        var i = 0
        while i < n {
            let v = n &- i >= 8 ? load(x, i) : loadPartial(x, i, n &- i, fill: -.infinity)
            let top = unsafeBitCast(v .== sh, to: SIMD8<Int32>.self)
            let e = FastMath.expNonPositiveClamped(tempered(v, sh, one))
            s += unsafeBitCast(unsafeBitCast(e, to: SIMD8<Int32>.self) & ~top, to: SIMD8<Float>.self)
            c &-= top
            i &+= 8
        }
        return (hsum(s), Int(c.wrappedSum()))
    }

    /// Lane sum in a fixed order.
    @inline(__always)
    static func hsum(_ v: SIMD8<Float>) -> Float {
        let a = v.lowHalf + v.highHalf
        return (a[0] + a[2]) + (a[1] + a[3])
    }

    /// p · (ka + kb · u) with u = (v − shift) · invT + c clamped at −88 and p = e^u.
    @_transparent
    static func grad(_ v: SIMD8<Float>, _ sh: SIMD8<Float>, _ it: SIMD8<Float>, _ c: SIMD8<Float>,
                     _ ka: SIMD8<Float>, _ kb: SIMD8<Float>) -> SIMD8<Float> {
        var u = (v - sh) * it + c
        u.replace(with: SIMD8(repeating: FastMath.expFlushBelow), where: u .< FastMath.expFlushBelow)
        return FastMath.expNonPositiveClamped(u) * (ka + kb * u)
    }

    /// The gradient of a run of one row of L = g_logp · log p(t) + g_H · H with respect to the
    /// raw logits x, without the one-hot term:
    ///   out_j = −(1/T) · p_j · (g_logp + g_H · (log p_j + H)),   log p_j = x_j / T − lse,
    /// with log p_j evaluated as (x_j − shift) · invT + c.
    /// Returns Σ out_j over the run (float32 over 2 × 8 lanes). `out` may equal `x` (in
    /// place); it must not otherwise overlap it.
    ///
    /// Arguments: `shift` ≈ T · lse in raw-logit units (a float, so x − shift is exact near the
    /// top), `c` = shift / T − lse (the part of lse the float shift misses), `a` = g_logp +
    /// g_H · H, `b` = g_H. −inf logits give exactly 0.
    @inline(__always)
    public static func backwardSIMD8(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int,
                                     shift: Float, c: Float, invT: Float, a: Float, b: Float) -> Float {
        let sh = SIMD8<Float>(repeating: shift), it = SIMD8<Float>(repeating: invT), cv = SIMD8<Float>(repeating: c)
        let ka = SIMD8<Float>(repeating: -invT * a), kb = SIMD8<Float>(repeating: -invT * b)
        let o = UnsafeMutableRawPointer(out)
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>()
        var i = 0
        while i &+ 16 <= n {
            let g0 = grad(load(x, i), sh, it, cv, ka, kb)
            let g1 = grad(load(x, i &+ 8), sh, it, cv, ka, kb)
            o.storeBytes(of: g0, toByteOffset: i &* 4, as: SIMD8<Float>.self)
            o.storeBytes(of: g1, toByteOffset: (i &+ 8) &* 4, as: SIMD8<Float>.self)
            s0 += g0
            s1 += g1
            i &+= 16
        }
        if i &+ 8 <= n {
            let g = grad(load(x, i), sh, it, cv, ka, kb)
            o.storeBytes(of: g, toByteOffset: i &* 4, as: SIMD8<Float>.self)
            s0 += g
            i &+= 8
        }
        if i < n {
            let g = grad(loadPartial(x, i, n &- i, fill: -.infinity), sh, it, cv, ka, kb)
            for k in 0..<(n &- i) { out[i &+ k] = g[k] }
            s1 += g
        }
        return hsum(s0 + s1)
    }

    /// `backward` whose returned sum leaves out the entries equal to `top`, which it counts.
    public static func backwardExcludingTop(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int,
                                            top: Float, shift: Float, c: Float, invT: Float, a: Float, b: Float,
                                            _ isa: KernelISA) -> (sum: Float, count: Int) {
        switch isa {
        case .avx512:
            var s: Float = 0
            let k = aepok_avx512_backward_excluding_top(x, out, n, top, shift, c, invT, a, b, &s)
            return (s, k)
        case .avx2fma:
            var s: Float = 0
            let k = aepok_avx2_backward_excluding_top(x, out, n, top, shift, c, invT, a, b, &s)
            return (s, k)
        case .simd8:
            break
        }
        let sh = SIMD8<Float>(repeating: shift), it = SIMD8<Float>(repeating: invT), cv = SIMD8<Float>(repeating: c)
        let ka = SIMD8<Float>(repeating: -invT * a), kb = SIMD8<Float>(repeating: -invT * b)
        let tv = SIMD8<Float>(repeating: top)
        var s = SIMD8<Float>(), c = SIMD8<Int32>()
        var i = 0
        while i < n {
            let m = min(8, n &- i)
            let v = m == 8 ? load(x, i) : loadPartial(x, i, m, fill: -.infinity)
            let g = grad(v, sh, it, cv, ka, kb)
            if m == 8 {
                UnsafeMutableRawPointer(out).storeBytes(of: g, toByteOffset: i &* 4, as: SIMD8<Float>.self)
            } else {
                for j in 0..<m { out[i &+ j] = g[j] }
            }
            let isTop = unsafeBitCast(v .== tv, to: SIMD8<Int32>.self)
            s += unsafeBitCast(unsafeBitCast(g, to: SIMD8<Int32>.self) & ~isTop, to: SIMD8<Float>.self)
            c &-= isTop
            i &+= 8
        }
        return (hsum(s), Int(c.wrappedSum()))
    }

    /// Index of the first entry of x[0..<n] equal to `v`, or -1.
    public static func firstIndex(of v: Float, in x: UnsafePointer<Float>, _ n: Int, _ isa: KernelISA) -> Int {
        switch isa {
        case .avx512: return aepok_avx512_first_index(x, n, v)
        case .avx2fma: return aepok_avx2_first_index(x, n, v)
        case .simd8: break
        }
        let vv = SIMD8<Float>(repeating: v)
        var i = 0
        while i &+ 8 <= n {
            // Lanes are -1 where equal: any hit makes the lane minimum negative.
            if unsafeBitCast(load(x, i) .== vv, to: SIMD8<Int32>.self).min() < 0 { break }
            i &+= 8
        }
        while i < n {
            if x[i] == v { return i }
            i &+= 1
        }
        return -1
    }
}

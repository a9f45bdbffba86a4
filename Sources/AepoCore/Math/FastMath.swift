/// Vectorised exp and log for `SIMD8<Float>`, written only with the operations that stay in
/// vector registers on baseline x86-64: `+ - * /`, lane comparisons with
/// `.replace(with:where:)`, and bit casts between `Float` and `Int32` lanes. Nothing here
/// calls a per-lane libm function, so a loop over these helpers compiles to straight SSE code
/// (and to AVX when the module is built for a CPU that has it).
///
/// There is no fused multiply-add: `addingProduct` lowers to a per-lane `fmaf` call when the
/// target has no FMA unit, which is the case for the shipped build.
///
/// The scalar versions run the same operations in the same order, so a value computed in a
/// tail loop is bit-identical to the same value computed in a vector lane.
///
/// Numerical properties (measured by `FastMathTests` against float64 libm over a dense sweep):
/// - `exp`: max relative error 8.2e-8 (under one ulp) on [-87.3, 88.7]; results below
///   FLT_MIN underflow gradually, exp(-inf) = 0, exp(x > 88.73) = +inf, exp(NaN) = NaN,
///   exp(0) = 1 exactly.
/// - `expNonPositive`: the same values as `exp` for x in [-87.33, 88]; below x = -87.68 it
///   returns exactly 0 (in between, a subnormal or 0). For inputs known to be <= 0 or -inf, as
///   in a softmax after subtracting the row max.
/// - `log`: max error 7.7e-8, absolute where |log x| < 1 and relative elsewhere on the
///   normal range; log(0) = -inf, log(+inf) = +inf, log(x < 0) = NaN,
///   log(NaN) = NaN. Subnormal inputs are treated as 0.
enum FastMath {
    // Range reduction x = n ln2 + r with |r| <= ln2/2; ln2 is split so that n * ln2Hi is exact.
    @usableFromInline static let log2e: Float = 1.44269504088896341
    @usableFromInline static let ln2Hi: Float = 0.693359375
    @usableFromInline static let ln2Lo: Float = -2.12194440e-4
    /// 1.5 * 2^23: adding and subtracting it rounds a float of magnitude < 2^22 to an integer
    /// (ties to even), and the integer sits in the low mantissa bits of the sum.
    @usableFromInline static let roundMagic: Float = 12582912
    @usableFromInline static let roundMagicBits: Int32 = 0x4B40_0000
    /// roundMagic + 127: the sum then holds n + 127, the biased exponent of 2^n, in its low
    /// mantissa bits (the low 9 bits of roundMagic's pattern are 0, so a shift by 23 keeps
    /// exactly those).
    @usableFromInline static let roundBiased: Float = 12583039

    // exp(r) ~ 1 + r + r^2/2 + e3 r^3 + ... + e6 r^6 on [-ln2/2, ln2/2]: e3...e6 are a minimax
    // fit of the relative error with the first three terms pinned, evaluated by Horner.
    // The fit's own relative error is 4.3e-9; float32 evaluation in the form
    // 1 + r + r^2 * (1/2 + r * (e3 + ...)) stays under 7e-8 on the interval.
    @usableFromInline static let e3: Float = 0.16666488349437714
    @usableFromInline static let e4: Float = 0.04166555404663086
    @usableFromInline static let e5: Float = 0.008372263982892036
    @usableFromInline static let e6: Float = 0.001403551665134728

    /// `expNonPositive` clamps its input here: 2^n is then 2^-127, whose bit pattern is +0.0,
    /// so every input at or below it gives exactly 0 without a separate flush.
    @usableFromInline static let expFlushBelow: Float = -88
    /// Inputs are clamped to [expClampLo, expClampHi]: exp(-104) rounds to 0 and exp(89)
    /// overflows to +inf, so clamping changes no result and keeps n * ln2Hi exact.
    @usableFromInline static let expClampLo: Float = -104
    @usableFromInline static let expClampHi: Float = 89

    // MARK: exp

    /// e^x for every lane. See the type's numerical properties.
    @inline(__always)
    static func exp(_ x: SIMD8<Float>) -> SIMD8<Float> {
        var xc = x
        xc.replace(with: SIMD8(repeating: expClampHi), where: x .> expClampHi)
        xc.replace(with: SIMD8(repeating: expClampLo), where: x .< expClampLo)
        let t = xc * log2e + roundBiased
        let n = t - roundBiased
        let r = (xc - n * ln2Hi) - n * ln2Lo
        let y = expPoly(r)
        // n is in [-150, 129]; 2^n is applied as 2^(n>>1) * 2^(n - n>>1), both normal, so
        // overflow gives +inf and underflow rounds once, gradually, to a subnormal or 0.
        let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- (roundMagicBits &+ 127)
        let n1 = ni &>> 1
        let n2 = ni &- n1
        let s1 = unsafeBitCast((n1 &+ 127) &<< 23, to: SIMD8<Float>.self)
        let s2 = unsafeBitCast((n2 &+ 127) &<< 23, to: SIMD8<Float>.self)
        return y * s1 * s2
    }

    /// e^x for lanes that hold values <= 0, -inf or NaN (NaN propagates); valid up to
    /// x = 88. Results below FLT_MIN may be flushed to 0 (all of them below x = -87.68).
    /// Cheaper than `exp`: one clamp and one scaling step.
    @inline(__always)
    static func expNonPositive(_ x: SIMD8<Float>) -> SIMD8<Float> {
        var xc = x
        xc.replace(with: SIMD8(repeating: expFlushBelow), where: x .< expFlushBelow)
        return expNonPositiveClamped(xc)
    }

    /// `expNonPositive` for an input already clamped below at `expFlushBelow`, for callers
    /// that reuse the clamped value (e^x * x is then 0, not NaN, for x = -inf).
    @inline(__always)
    static func expNonPositiveClamped(_ xc: SIMD8<Float>) -> SIMD8<Float> {
        let t = xc * log2e + roundBiased
        let n = t - roundBiased
        let r = (xc - n * ln2Hi) - n * ln2Lo
        let y = expPoly(r)
        // n is in [-127, 127] and t holds n + 127 in its low mantissa bits, so bits(t) << 23
        // is 2^n (the other bits shift out), or +0.0 for n = -127.
        return y * unsafeBitCast(unsafeBitCast(t, to: SIMD8<Int32>.self) &<< 23, to: SIMD8<Float>.self)
    }

    @inline(__always)
    static func expPoly(_ r: SIMD8<Float>) -> SIMD8<Float> {
        var p = r * e6 + e5
        p = p * r + e4
        p = p * r + e3
        p = p * r + 0.5
        return (p * (r * r) + r) + 1
    }

    @inline(__always)
    static func expPoly(_ r: Float) -> Float {
        var p = r * e6 + e5
        p = p * r + e4
        p = p * r + e3
        p = p * r + 0.5
        return (p * (r * r) + r) + 1
    }

    /// Scalar e^x with the same operations as the vector `exp` (bit-identical per lane).
    @inline(__always)
    static func exp(_ x: Float) -> Float {
        var xc = x
        if x > expClampHi { xc = expClampHi }
        if x < expClampLo { xc = expClampLo }
        let t = xc * log2e + roundBiased
        let n = t - roundBiased
        let r = (xc - n * ln2Hi) - n * ln2Lo
        let y = expPoly(r)
        let ni = Int32(bitPattern: t.bitPattern) &- (roundMagicBits &+ 127)
        let n1 = ni &>> 1
        let n2 = ni &- n1
        let s1 = Float(bitPattern: UInt32(bitPattern: (n1 &+ 127) &<< 23))
        let s2 = Float(bitPattern: UInt32(bitPattern: (n2 &+ 127) &<< 23))
        return y * s1 * s2
    }

    /// Scalar version of `expNonPositive` (bit-identical per lane).
    @inline(__always)
    static func expNonPositive(_ x: Float) -> Float {
        let xc = x < expFlushBelow ? expFlushBelow : x
        let t = xc * log2e + roundBiased
        let n = t - roundBiased
        let r = (xc - n * ln2Hi) - n * ln2Lo
        let y = expPoly(r)
        return y * Float(bitPattern: t.bitPattern &<< 23)
    }

    // MARK: log

    // log(1 + f) = f - f^2/2 + f^3 * P(f) for f in [sqrt(1/2) - 1, sqrt(2) - 1] (Cephes logf).
    @usableFromInline static let l0: Float = 7.0376836292e-2
    @usableFromInline static let l1: Float = -1.1514610310e-1
    @usableFromInline static let l2: Float = 1.1676998740e-1
    @usableFromInline static let l3: Float = -1.2420140846e-1
    @usableFromInline static let l4: Float = 1.4249322787e-1
    @usableFromInline static let l5: Float = -1.6668057665e-1
    @usableFromInline static let l6: Float = 2.0000714765e-1
    @usableFromInline static let l7: Float = -2.4999993993e-1
    @usableFromInline static let l8: Float = 3.3333331174e-1
    @usableFromInline static let sqrtHalf: Float = 0.707106781186547524

    /// Natural log for every lane. See the type's numerical properties.
    @inline(__always)
    static func log(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let bits = unsafeBitCast(x, to: SIMD8<Int32>.self)
        // x = m * 2^e with m in [0.5, 1).
        var e = (bits &>> 23) &- 126
        var m = unsafeBitCast((bits & 0x007F_FFFF) | 0x3F00_0000, to: SIMD8<Float>.self)
        // Move m into [sqrt(1/2), sqrt(2)) so that f = m - 1 is small.
        let small = m .< sqrtHalf
        e.replace(with: e &- 1, where: small)
        var f = m - 1
        f.replace(with: m + m - 1, where: small)
        m = f
        let ef = intToFloat(e)
        let z = m * m
        var p = m * l0 + l1
        p = p * m + l2
        p = p * m + l3
        p = p * m + l4
        p = p * m + l5
        p = p * m + l6
        p = p * m + l7
        p = p * m + l8
        var y = p * m * z
        y = y + ef * ln2Lo
        y = y - z * 0.5
        var result = (m + y) + ef * ln2Hi
        // Special lanes: x <= 0, subnormal, +inf, NaN.
        result.replace(with: SIMD8(repeating: -.infinity), where: x .< .leastNormalMagnitude)
        result.replace(with: SIMD8(repeating: .nan), where: x .< 0)
        result.replace(with: x, where: x .> .greatestFiniteMagnitude)
        result.replace(with: x, where: x .!= x)
        return result
    }

    /// Exact Int32 -> Float for |i| < 2^22 without a conversion instruction: place i in the
    /// mantissa of 1.5 * 2^23 and subtract.
    @inline(__always)
    static func intToFloat(_ i: SIMD8<Int32>) -> SIMD8<Float> {
        unsafeBitCast(i &+ roundMagicBits, to: SIMD8<Float>.self) - roundMagic
    }

    /// Scalar version of `log` (bit-identical per lane).
    @inline(__always)
    static func log(_ x: Float) -> Float {
        if x != x || x > .greatestFiniteMagnitude { return x }
        if x < 0 { return .nan }
        if x < .leastNormalMagnitude { return -.infinity }
        let bits = Int32(bitPattern: x.bitPattern)
        var e = (bits &>> 23) &- 126
        var m = Float(bitPattern: UInt32(bitPattern: (bits & 0x007F_FFFF) | 0x3F00_0000))
        if m < sqrtHalf {
            e = e &- 1
            m = m + m - 1
        } else {
            m = m - 1
        }
        let ef = Float(bitPattern: UInt32(bitPattern: e &+ roundMagicBits)) - roundMagic
        let z = m * m
        var p = m * l0 + l1
        p = p * m + l2
        p = p * m + l3
        p = p * m + l4
        p = p * m + l5
        p = p * m + l6
        p = p * m + l7
        p = p * m + l8
        var y = p * m * z
        y = y + ef * ln2Lo
        y = y - z * 0.5
        return (m + y) + ef * ln2Hi
    }
}

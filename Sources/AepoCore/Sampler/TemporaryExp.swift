import Glibc

// TEMPORARY: lane-wise Glibc expf until the shared SIMD8 exp in Math/FastMath.swift lands.
// Correct (Glibc is faithfully rounded) but slow; remove this file when switching.
@inline(__always)
func samplerExp(_ v: SIMD8<Float>) -> SIMD8<Float> {
    var r = SIMD8<Float>()
    for j in 0..<8 { r[j] = expf(v[j]) }
    return r
}

import Glibc

// Shared by every test file: the one seeded generator the tests draw their inputs from.

/// SplitMix64: a fixed, seeded stream of 64-bit words, with the uniform, integer and normal
/// draws the tests need. Streams are part of the fixtures (tables in docs are generated
/// from them), so the arithmetic of each draw is fixed.
struct SplitMix64 {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1) from the top 53 bits.
    mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 }
    /// Uniform in [lo, hi).
    mutating func uniform(_ lo: Double, _ hi: Double) -> Double {
        lo + (hi - lo) * Double(next() >> 11) / Double(1 << 53)
    }
    /// Uniform in (0, 1].
    mutating func uniformPositive() -> Double { Double((next() >> 11) + 1) * 0x1p-53 }
    /// Uniform in [0, n).
    mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    /// A standard normal from one Box–Muller pair (the cosine half).
    mutating func normal() -> Double {
        let u1 = max(uniform(), 1e-300), u2 = uniform()
        return (-2 * Glibc.log(u1)).squareRoot() * Glibc.cos(2 * Double.pi * u2)
    }
}

/// Seeded standard normals that use both halves of each Box–Muller pair.
struct TestGaussian {
    private var bits: SplitMix64
    private var spare: Double?

    init(seed: UInt64) { bits = SplitMix64(seed: seed) }

    mutating func nextBits() -> UInt64 { bits.next() }

    mutating func next() -> Double {
        if let s = spare {
            spare = nil
            return s
        }
        let u1 = bits.uniformPositive()
        let u2 = bits.uniformPositive()
        let r = (-2 * log(u1)).squareRoot()
        let a = 2 * Double.pi * u2
        spare = r * sin(a)
        return r * cos(a)
    }
}

/// Philox4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw,
/// "Parallel random numbers: as easy as 1, 2, 3" (SC 2011).
///
/// A counter-based generator is a keyed bijection of a 128-bit counter: the output for a
/// counter depends on nothing else, so any draw can be computed directly from its
/// coordinates, in any order, on any thread. The sampler uses this to make a row's token a
/// pure function of (seed, step, position, row).
///
/// Numerical properties: ten rounds of two 32x32 -> 64-bit multiplies each; the output
/// matches the Random123 known-answer vectors (checked by `PhiloxTests`). Passes BigCrush
/// according to its authors.
public struct Philox4x32: Sendable {
    public typealias Block = (UInt32, UInt32, UInt32, UInt32)

    static let m0: UInt32 = 0xD251_1F53
    static let m1: UInt32 = 0xCD9E_8D57
    static let w0: UInt32 = 0x9E37_79B9
    static let w1: UInt32 = 0xBB67_AE85

    public var key: (UInt32, UInt32)

    public init(key: (UInt32, UInt32)) {
        self.key = key
    }

    /// A key from a 64-bit value, low word first.
    public init(key64: UInt64) {
        key = (UInt32(truncatingIfNeeded: key64), UInt32(truncatingIfNeeded: key64 >> 32))
    }

    /// The ten-round Philox4x32 output for `counter`.
    @inline(__always)
    public func block(_ counter: Block) -> Block {
        var c = counter
        var k0 = key.0, k1 = key.1
        for round in 0..<10 {
            if round > 0 {
                k0 &+= Self.w0
                k1 &+= Self.w1
            }
            let p0 = UInt64(Self.m0) &* UInt64(c.0)
            let p1 = UInt64(Self.m1) &* UInt64(c.2)
            let hi0 = UInt32(truncatingIfNeeded: p0 >> 32), lo0 = UInt32(truncatingIfNeeded: p0)
            let hi1 = UInt32(truncatingIfNeeded: p1 >> 32), lo1 = UInt32(truncatingIfNeeded: p1)
            c = (hi1 ^ c.1 ^ k0, lo1, hi0 ^ c.3 ^ k1, lo0)
        }
        return c
    }

    /// The block for a counter given as two 64-bit halves, low word first.
    @inline(__always)
    public func block(_ lo: UInt64, _ hi: UInt64) -> Block {
        block((UInt32(truncatingIfNeeded: lo), UInt32(truncatingIfNeeded: lo >> 32),
               UInt32(truncatingIfNeeded: hi), UInt32(truncatingIfNeeded: hi >> 32)))
    }

    /// A double in [0, 1) with 53 random bits, from the first two words of a block.
    @inline(__always)
    public static func unitDouble(_ b: Block) -> Double {
        let bits = (UInt64(b.1) << 32 | UInt64(b.0)) >> 11
        return Double(bits) * 0x1p-53
    }
}

/// The sampler's random stream: one uniform per (seed, step, position, row).
///
/// Two levels of Philox4x32-10. The stream key is the first 64 bits of the block at
/// counter (step, position) under key `seed`; a row's uniform comes from the block at
/// counter (row, 0) under the stream key. Both levels are keyed bijections, so different
/// rows of one stream never share a block, and two (step, position) pairs share a stream
/// key only with probability 2^-64.
public struct SamplerStream: Sendable {
    let rowGenerator: Philox4x32

    public init(seed: UInt64, step: UInt64, position: UInt64) {
        let top = Philox4x32(key64: seed).block(step, position)
        rowGenerator = Philox4x32(key: (top.0, top.1))
    }

    /// The uniform in [0, 1) of absolute row `row` (row_offset + i).
    @inline(__always)
    public func uniform(row: UInt64) -> Double {
        Philox4x32.unitDouble(rowGenerator.block(row, 0))
    }
}

import Glibc

/// The random stream of Clip-Cov's pick: uniform integers keyed by (seed, step, group),
/// from two levels of Philox4x32-10 as the sampler's stream. The stream key is the first 64
/// bits of the block at counter (step, tag + group) under key `seed` (the tag "ClipCov"
/// keeps these streams apart from the sampler's); draw j is the first 64 bits of the block
/// at counter (j, 0) under the stream key, mapped to [0, m) as floor(x m / 2^64) (bias below
/// m / 2^64).
public struct CovarianceDraws: Sendable {
    let generator: Philox4x32
    static let tag: UInt64 = 0x436C_6970_436F_7600  // "ClipCov\0"

    public init(seed: UInt64, step: Int64, group: UInt64) {
        let top = Philox4x32(key64: seed).block(UInt64(bitPattern: step), Self.tag | group)
        generator = Philox4x32(key: (top.0, top.1))
    }

    /// Draw j, uniform in [0, m).
    @inline(__always)
    public func below(_ m: Int, draw j: Int) -> Int {
        let b = generator.block(UInt64(j), 0)
        let x = UInt64(b.1) << 32 | UInt64(b.0)
        return Int(x.multipliedFullWidth(by: UInt64(m)).high)
    }

    /// k distinct values of [0, n), ascending, uniform over the k-subsets (Floyd's
    /// algorithm: for j = n - k ..< n, draw t in [0, j] with draw number j - (n - k); take t,
    /// or j when t is already taken).
    public func pick(_ k: Int, of n: Int) -> [Int] {
        guard k > 0, n > 0 else { return [] }
        guard k < n else { return Array(0..<n) }
        var taken = Set<Int>(minimumCapacity: k)
        for j in (n - k)..<n {
            let t = below(j + 1, draw: j - (n - k))
            if !taken.insert(t).inserted { taken.insert(j) }
        }
        return taken.sorted()
    }
}

@testable import AepoCore
import Testing

@Suite struct SamplerRandomTests {
    /// Random123's published known-answer vectors for Philox4x32-10 (kat_vectors):
    /// counter (4 words), key (2 words) -> output (4 words).
    @Test func philoxMatchesRandom123KnownAnswers() {
        let cases: [([UInt32], [UInt32], [UInt32])] = [
            ([0, 0, 0, 0], [0, 0], [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]),
            ([0xffff_ffff, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff], [0xffff_ffff, 0xffff_ffff],
             [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]),
            ([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344], [0xa409_3822, 0x299f_31d0],
             [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]),
        ]
        for (ctr, key, want) in cases {
            let out = Philox4x32(key: (key[0], key[1])).block((ctr[0], ctr[1], ctr[2], ctr[3]))
            let got = [out.0, out.1, out.2, out.3]
            #expect(got == want, "counter \(ctr) key \(key): got \(got.map { String($0, radix: 16) })")
        }
    }

    @Test func streamIsAPureFunctionOfItsCoordinates() {
        let a = SamplerStream(seed: 7, step: 3, position: 11)
        let b = SamplerStream(seed: 7, step: 3, position: 11)
        #expect(a.uniform(row: 5) == b.uniform(row: 5))
        let others = [SamplerStream(seed: 8, step: 3, position: 11).uniform(row: 5),
                      SamplerStream(seed: 7, step: 4, position: 11).uniform(row: 5),
                      SamplerStream(seed: 7, step: 3, position: 12).uniform(row: 5),
                      a.uniform(row: 6)]
        for o in others { #expect(o != a.uniform(row: 5)) }
        // Uniforms lie in [0, 1) and look uniform: mean 1/2, variance 1/12 over 1e5 rows.
        let n = 100_000
        var sum = 0.0, sq = 0.0
        for r in 0..<n {
            let u = a.uniform(row: UInt64(r))
            #expect(u >= 0 && u < 1)
            sum += u
            sq += u * u
        }
        let mean = sum / Double(n), variance = sq / Double(n) - mean * mean
        // Standard errors: 0.00091 for the mean, 0.00027 for the variance; 5 sigma.
        #expect(abs(mean - 0.5) < 0.0046, "mean \(mean)")
        #expect(abs(variance - 1.0 / 12) < 0.0014, "variance \(variance)")
    }

    /// Chi-square quantiles from statistical tables: P(X >= x) for df degrees of freedom.
    @Test func chiSquarePValueMatchesTables() {
        let cases: [(Int, Double, Double)] = [
            (1, 3.841458820694124, 0.05),
            (10, 18.307038053275146, 0.05),
            (2, 13.815510557964274, 0.001),   // exactly exp(-x/2) for df = 2
            (5, 20.515005652432873, 0.001),
            (100, 124.34211340400407, 0.05),
            (30, 10.0, 0.9997737463238232),
        ]
        for (df, x, want) in cases {
            let got = chiSquarePValue(x, df: df)
            #expect(abs(got - want) <= 1e-10 * max(1, want) + 1e-12, "df \(df) x \(x): got \(got), want \(want)")
        }
    }
}

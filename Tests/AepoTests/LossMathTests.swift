@testable import AepoCore
import Glibc
import Testing

/// The vector helpers of the loss kernel against float64 libm and exhaustive small cases.
@Suite struct LossMathTests {
    @Test func expMatchesLibmAcrossTheRange() {
        var worst = 0.0, at = 0.0
        for (lo, hi, steps) in [(-20.0, 20.0, 400_003), (-700.0, 700.0, 100_003), (-1e-3, 1e-3, 10_001)] {
            var i = 0
            while i < steps {
                let xs = LossMath.V(lo + (hi - lo) * Double(i) / Double(steps - 1),
                                    lo + (hi - lo) * Double(i + 1) / Double(steps - 1),
                                    lo + (hi - lo) * Double(i + 2) / Double(steps - 1),
                                    lo + (hi - lo) * Double(i + 3) / Double(steps - 1))
                let e = LossMath.exp(xs)
                for j in 0..<4 {
                    let want = Glibc.exp(xs[j])
                    let err = abs(e[j] - want) / want
                    if err > worst { worst = err; at = xs[j] }
                }
                i += 4
            }
        }
        #expect(worst <= 1.5e-15, "max relative error \(worst) at x = \(at)")
        #expect(LossMath.exp(LossMath.V(repeating: 0)) == LossMath.V(repeating: 1))
        let n = LossMath.exp(LossMath.V(.nan, 1, -.nan, 0))
        #expect(n[0].isNaN && n[2].isNaN && n[3] == 1)
    }

    @Test func maskLanesForEveryPattern() {
        for pattern in 0..<16 {
            var word: UInt32 = 0
            for j in 0..<4 where pattern & (1 << j) != 0 { word |= 1 << (8 * UInt32(j)) }
            let m = LossMath.maskLanes(word)
            for j in 0..<4 { #expect(m[j] == (pattern & (1 << j) != 0), "pattern \(pattern) lane \(j)") }
        }
    }

    @Test func keepClampAndCount() {
        let v = LossMath.V(.nan, -.infinity, 2.5, -0.0)
        let m: LossMath.M = [true, false, true, false]
        let k = LossMath.keep(v, m)
        #expect(k[0].isNaN && k[1] == 0 && k[2] == 2.5 && k[3] == 0 && k[1].sign == .plus)
        let c = LossMath.clamp(LossMath.V(-30, 30, 5, .nan), LossMath.V(repeating: -20), LossMath.V(repeating: 20))
        #expect(c[0] == -20 && c[1] == 20 && c[2] == 5 && c[3].isNaN)
        var counter = SIMD4<Int64>()
        LossMath.count(&counter, m)
        LossMath.count(&counter, m)
        #expect(counter == SIMD4<Int64>(2, 0, 2, 0))
    }
}

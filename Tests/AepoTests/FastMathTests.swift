@testable import AepoCore
import Glibc
import Testing

/// FastMath against float64 libm over dense sweeps, plus the special values.
@Suite struct FastMathTests {
    /// Evaluates `vec` on `xs` in SIMD8 blocks and checks each lane against `scalar`.
    static func sweep(_ xs: [Float], vec: (SIMD8<Float>) -> SIMD8<Float>, scalar: (Float) -> Float,
                      ref: (Double) -> Double, absBelow: Double = 0)
        -> (maxRel: Double, worst: Float, mismatches: Int) {
        var maxRel = 0.0, worst: Float = 0, mismatches = 0
        var i = 0
        while i + 8 <= xs.count {
            var v = SIMD8<Float>()
            for k in 0..<8 { v[k] = xs[i + k] }
            let y = vec(v)
            for k in 0..<8 {
                let x = xs[i + k]
                if y[k].bitPattern != scalar(x).bitPattern { mismatches += 1 }
                let r = ref(Double(x))
                let scale = max(abs(r), absBelow)
                let e = scale == 0 ? abs(Double(y[k])) : abs(Double(y[k]) - r) / scale
                if e > maxRel { maxRel = e; worst = x }
            }
            i += 8
        }
        return (maxRel, worst, mismatches)
    }

    static func grid(_ lo: Float, _ hi: Float, count: Int) -> [Float] {
        (0..<count).map { lo + (hi - lo) * Float(Double($0) / Double(count - 1)) }
    }

    // Measured on x86-64 (release): see the printed lines; the bounds are 1e-7.
    @Test func expDenseSweep() {
        // 4M points across the whole normal-result range, plus every float in [-1, 1] near 0.
        var xs = Self.grid(-87.33, 88.72, count: 1 << 22)
        xs += Self.grid(-0.75, 0.75, count: 1 << 20)
        let r = Self.sweep(xs, vec: FastMath.exp, scalar: FastMath.exp, ref: Glibc.exp)
        print("FastMath.exp: max relative error \(r.maxRel) at x = \(r.worst) over \(xs.count) points")
        #expect(r.maxRel <= 1.0e-7, "exp max relative error \(r.maxRel) at \(r.worst)")
        #expect(r.mismatches == 0, "scalar exp differs from the vector lane on \(r.mismatches) inputs")
    }

    @Test func expNonPositiveSweep() {
        let xs = Self.grid(-87.33, 0, count: 1 << 22)
        let r = Self.sweep(xs, vec: FastMath.expNonPositive, scalar: FastMath.expNonPositive, ref: Glibc.exp)
        print("FastMath.expNonPositive: max relative error \(r.maxRel) at x = \(r.worst)")
        #expect(r.maxRel <= 1.0e-7, "expNonPositive max relative error \(r.maxRel) at \(r.worst)")
        #expect(r.mismatches == 0)
        // Agrees with exp bit for bit on the normal range.
        var diff = 0
        for x in xs where FastMath.exp(x).bitPattern != FastMath.expNonPositive(x).bitPattern { diff += 1 }
        #expect(diff == 0, "expNonPositive and exp differ on \(diff) inputs")
    }

    @Test func expSubnormalRange() {
        // Gradual underflow: absolute error within one subnormal ulp (2^-149) plus 2 ulp relative.
        let xs = Self.grid(-104, -87.34, count: 1 << 16)
        var worst = 0.0
        for x in xs {
            let y = Double(FastMath.exp(x)), r = Glibc.exp(Double(x))
            worst = max(worst, abs(y - r) / (Double(Float.leastNonzeroMagnitude) + 2.4e-7 * r))
        }
        #expect(worst <= 1, "subnormal exp error \(worst) in units of the bound")
    }

    @Test func expSpecialValues() {
        let xs: [Float] = [-.infinity, .infinity, .nan, 0, -0.0, 89, 88.73, 88.72, -88, -103.9, -104, -200,
                           1e30, -1e30, .greatestFiniteMagnitude, -.greatestFiniteMagnitude]
        var v = SIMD8<Float>(), w = SIMD8<Float>()
        for k in 0..<8 { v[k] = xs[k]; w[k] = xs[k + 8] }
        let ya = FastMath.exp(v), yb = FastMath.exp(w)
        let y = (0..<8).map { ya[$0] } + (0..<8).map { yb[$0] }
        #expect(y[0] == 0)
        #expect(y[1] == .infinity)
        #expect(y[2].isNaN)
        #expect(y[3] == 1 && y[4] == 1)
        #expect(y[5] == .infinity && y[6] == .infinity)
        #expect(y[7].isFinite && abs(Double(y[7]) / Glibc.exp(Double(Float(88.72))) - 1) < 1e-7)
        #expect(y[8] > 0 && y[8] < Float.leastNormalMagnitude)
        #expect(y[10] == 0 && y[11] == 0 && y[13] == 0 && y[15] == 0)
        #expect(y[12] == .infinity && y[14] == .infinity)
        for (k, x) in xs.enumerated() {
            let s = FastMath.exp(x)
            #expect(s.bitPattern == y[k].bitPattern || (s.isNaN && y[k].isNaN), "scalar exp(\(x))")
        }
        var n = SIMD8<Float>(repeating: -.infinity)
        n[1] = .nan; n[2] = -87.69; n[3] = 0; n[4] = -1e30; n[5] = -87.34; n[6] = -88
        let z = FastMath.expNonPositive(n)
        #expect(z[0] == 0 && z[1].isNaN && z[2] == 0 && z[3] == 1 && z[4] == 0 && z[6] == 0)
        #expect(z[5] > 0 && z[5] < Float.leastNormalMagnitude)
        for k in 0..<8 {
            let s = FastMath.expNonPositive(n[k])
            #expect(s.bitPattern == z[k].bitPattern || (s.isNaN && z[k].isNaN), "scalar expNonPositive(\(n[k]))")
        }
    }

    @Test func logDenseSweep() {
        // Relative error over the normal range, absolute error near x = 1 where log crosses 0.
        var xs = Self.grid(0.5, 2, count: 1 << 21)
        xs += (0..<(1 << 20)).map { Float(bitPattern: UInt32(0x0080_0000) &+ UInt32($0) &* 2027) }
        let r = Self.sweep(xs, vec: FastMath.log, scalar: FastMath.log, ref: Glibc.log, absBelow: 1)
        print("FastMath.log: max error \(r.maxRel) (relative, absolute below |log x| = 1) at x = \(r.worst)")
        #expect(r.maxRel <= 1.0e-7, "log max error \(r.maxRel) at \(r.worst)")
        #expect(r.mismatches == 0, "scalar log differs from the vector lane on \(r.mismatches) inputs")
    }

    @Test func logSpecialValues() {
        let xs: [Float] = [0, -0.0, .infinity, .nan, -1, 1, Float.leastNonzeroMagnitude, .greatestFiniteMagnitude]
        var v = SIMD8<Float>()
        for k in 0..<8 { v[k] = xs[k] }
        let y = FastMath.log(v)
        #expect(y[0] == -.infinity && y[1] == -.infinity)
        #expect(y[2] == .infinity)
        #expect(y[3].isNaN && y[4].isNaN)
        #expect(y[5] == 0)
        #expect(y[6] == -.infinity)
        #expect(abs(Double(y[7]) - Glibc.log(Double(Float.greatestFiniteMagnitude))) < 1e-5)
        for (k, x) in xs.enumerated() {
            let s = FastMath.log(x)
            #expect(s.bitPattern == y[k].bitPattern || (s.isNaN && y[k].isNaN), "scalar log(\(x))")
        }
    }
}

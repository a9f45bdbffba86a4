@testable import AepoCore
import Glibc
import Testing

// The fused head's forward and backward against a float64 transcription of the formulas
// (materialised logits in float64), central differences, other chunk settings and other
// thread counts. Shared fixtures for the other Fused*Tests files live here too.

/// One fused call's inputs as arrays: X [N, D], W [V, D], bias [V], targets [N], mask [N].
struct FusedCase {
    var N: Int
    var D: Int
    var V: Int
    var x: [Float]
    var w: [Float]
    var bias: [Float]?
    var targets: [Int32]
    var mask: [UInt8]?

    /// Random inputs with logits of order `scale`; masked rows hold NaN in X and -100 as
    /// target, so any read of them shows.
    static func random(N: Int, D: Int, V: Int, seed: UInt64, bias: Bool = true, maskedRows: Set<Int> = [],
                       scale: Double = 3) -> FusedCase {
        var g = SplitMix64(seed)
        let xs = 1.0, ws = scale / sqrt(Double(max(D, 1)))
        var x = (0..<(N * D)).map { _ in Float(g.uniform(-xs, xs)) }
        let w = (0..<(V * D)).map { _ in Float(g.uniform(-ws, ws)) }
        let b: [Float]? = bias ? (0..<V).map { _ in Float(g.uniform(-1, 1)) } : nil
        var t = (0..<N).map { _ in Int32(g.int(V)) }
        var m: [UInt8]? = nil
        if !maskedRows.isEmpty {
            m = (0..<N).map { maskedRows.contains($0) ? 0 : 1 }
            for r in maskedRows {
                for k in 0..<D { x[r * D + k] = .nan }
                t[r] = -100
            }
        }
        return FusedCase(N: N, D: D, V: V, x: x, w: w, bias: b, targets: t, mask: m)
    }

    func valid(_ r: Int) -> Bool { mask.map { $0[r] == 1 } ?? true }

    /// Runs `body` with the case as `FusedInputs` (buffers live for the call).
    func withInputs<R>(_ body: (FusedInputs) throws(AepoFailure) -> R) throws(AepoFailure) -> R {
        let xb = buffer(x), wb = buffer(w), tb = buffer(targets)
        let bb = bias.map(buffer), mb = mask.map(buffer)
        defer { release(xb); release(wb); release(tb); release(bb); release(mb) }
        return try body(FusedInputs(x: xb, w: wb, bias: bb, targets: tb, mask: mb, rows: N, dim: D, vocab: V))
    }
}

/// Per-row float64 results of the reference.
struct Ref64Stats {
    var logp: [Double]
    var entropy: [Double]
    var lse: [Double]
}

/// The float64 transcription: z = (X·Wᵀ + b) / T materialised, then log-softmax.
enum Ref64 {
    static func logits(_ c: FusedCase, T: Double, x: [Double]? = nil, w: [Double]? = nil, b: [Double]? = nil) -> [Double] {
        let X = x ?? c.x.map(Double.init), W = w ?? c.w.map(Double.init)
        let B = b ?? c.bias?.map(Double.init)
        var z = [Double](repeating: 0, count: c.N * c.V)
        for r in 0..<c.N where c.valid(r) {
            for j in 0..<c.V {
                var s = B?[j] ?? 0
                for k in 0..<c.D { s += X[r * c.D + k] * W[j * c.D + k] }
                z[r * c.V + j] = s / T
            }
        }
        return z
    }

    static func stats(_ c: FusedCase, T: Double, x: [Double]? = nil, w: [Double]? = nil, b: [Double]? = nil) -> Ref64Stats {
        let z = logits(c, T: T, x: x, w: w, b: b)
        var out = Ref64Stats(logp: .init(repeating: 0, count: c.N), entropy: .init(repeating: 0, count: c.N),
                             lse: .init(repeating: 0, count: c.N))
        for r in 0..<c.N where c.valid(r) {
            let row = z[(r * c.V)..<((r + 1) * c.V)]
            let m = row.max()!
            var s = 0.0
            for v in row { s += Glibc.exp(v - m) }
            let lse = m + Glibc.log(s)
            var pz = 0.0
            for v in row { pz += Glibc.exp(v - lse) * v }
            out.lse[r] = lse
            out.entropy[r] = lse - pz
            out.logp[r] = z[r * c.V + Int(c.targets[r])] - lse
        }
        return out
    }

    /// dX, dW, dbias of Σ gl·logp + gh·H, analytically in float64.
    static func grads(_ c: FusedCase, T: Double, gl: [Double], gh: [Double]) -> (dX: [Double], dW: [Double], db: [Double]) {
        let z = logits(c, T: T)
        let st = stats(c, T: T)
        var dX = [Double](repeating: 0, count: c.N * c.D)
        var dW = [Double](repeating: 0, count: c.V * c.D)
        var db = [Double](repeating: 0, count: c.V)
        for r in 0..<c.N where c.valid(r) {
            for j in 0..<c.V {
                let lpj = z[r * c.V + j] - st.lse[r]
                let p = Glibc.exp(lpj)
                var g = -gl[r] * p - gh[r] * p * (lpj + st.entropy[r])
                if j == Int(c.targets[r]) { g += gl[r] }
                g /= T
                db[j] += g
                for k in 0..<c.D {
                    dX[r * c.D + k] += g * Double(c.w[j * c.D + k])
                    dW[j * c.D + k] += g * Double(c.x[r * c.D + k])
                }
            }
        }
        return (dX, dW, db)
    }
}

/// Outputs of one forward + backward through the fused head.
struct FusedRun {
    var logp: [Float]
    var entropy: [Float]
    var lse: [Double]
    var dX: [Float]
    var dW: [Float]
    var db: [Float]
}

func fusedHead(chunkN: Int64 = 128, chunkV: Int64 = 8192, T: Double = 1, threads: Int64 = 1) -> FusedHead {
    var f = FusedConfig()
    f.chunkN = chunkN
    f.chunkV = chunkV
    f.temperature = T
    f.threads = threads
    return try! FusedHead(config: f)
}

/// forward, then backward with upstream gradients gl, gh (dW and dbias start at `dW0`, `db0`).
func runFused(_ head: FusedHead, _ c: FusedCase, gl: [Float], gh: [Float]?, dW0: Float = 0, db0: Float = 0)
    throws(AepoFailure) -> FusedRun {
    var out = FusedRun(logp: .init(repeating: .nan, count: c.N), entropy: .init(repeating: .nan, count: c.N),
                       lse: [Double](repeating: .nan, count: c.N), dX: .init(repeating: .nan, count: c.N * c.D),
                       dW: .init(repeating: dW0, count: c.V * c.D), db: .init(repeating: db0, count: c.V))
    try c.withInputs { (inp) throws(AepoFailure) in
        try out.logp.withUnsafeMutableBufferPointer { (lp) throws(AepoFailure) in
            try out.entropy.withUnsafeMutableBufferPointer { (en) throws(AepoFailure) in
                try out.lse.withUnsafeMutableBufferPointer { (ls) throws(AepoFailure) in
                    try head.forward(inp, logp: lp, entropy: en, lse: ls)
                }
            }
        }
        let glb = buffer(gl), ghb = gh.map(buffer), lseb = buffer(out.lse), entb = buffer(out.entropy)
        defer { release(glb); release(ghb); release(lseb); release(entb) }
        try out.dX.withUnsafeMutableBufferPointer { (dx) throws(AepoFailure) in
            try out.dW.withUnsafeMutableBufferPointer { (dw) throws(AepoFailure) in
                try out.db.withUnsafeMutableBufferPointer { (db) throws(AepoFailure) in
                    try head.backward(inp, lse: lseb, entropy: entb, gradLogp: glb, gradEntropy: ghb,
                                      dX: dx, dW: dw, dbias: c.bias != nil ? db : nil)
                }
            }
        }
    }
    return out
}

/// max |a - b| / max(max |b|, floor), printed by failing expectations.
func relInf(_ a: [Float], _ b: [Double], floor: Double = 1e-30) -> Double {
    let (d, s) = maxDiff(a, b)
    return d / max(s, floor)
}

func relInf(_ a: [Float], _ b: [Float]) -> Double {
    relInf(a, b.map(Double.init))
}

func relInf(_ a: [Double], _ b: [Double], floor: Double = 1e-30) -> Double {
    var d = 0.0, s = 0.0
    for i in 0..<b.count {
        d = max(d, abs(a[i] - b[i]))
        s = max(s, abs(b[i]))
    }
    return d / max(s, floor)
}

func upstream(_ n: Int, seed: UInt64) -> (gl: [Float], gh: [Float]) {
    var g = SplitMix64(seed)
    return ((0..<n).map { _ in Float(g.uniform(-1, 1)) }, (0..<n).map { _ in Float(g.uniform(-1, 1)) })
}

@Suite struct FusedForwardBackwardTests {
    static let cases: [(N: Int, D: Int, V: Int, bias: Bool, masked: Set<Int>, T: Double, cn: Int64, cv: Int64)] = [
        (7, 16, 37, true, [], 1.0, 3, 8),          // V not a multiple of chunk_v, tail blocks both ways
        (9, 24, 50, false, [1, 2, 6], 0.7, 4, 16),  // holes in the mask: gathered row blocks
        (1, 8, 13, true, [], 1.3, 128, 8192),       // N = 1
        (5, 12, 1, true, [], 1.0, 2, 1),            // V = 1: log p = 0, H = 0
        (6, 32, 300, true, [0, 5], 0.9, 128, 64),
    ]

    @Test(arguments: 0..<cases.count)
    func matchesFloat64Reference(_ k: Int) throws {
        let s = Self.cases[k]
        let c = FusedCase.random(N: s.N, D: s.D, V: s.V, seed: UInt64(100 + k), bias: s.bias, maskedRows: s.masked)
        let (gl, gh) = upstream(s.N, seed: UInt64(200 + k))
        let head = fusedHead(chunkN: s.cn, chunkV: s.cv, T: s.T)
        let run = try runFused(head, c, gl: gl, gh: gh)
        let ref = Ref64.stats(c, T: s.T)
        let g = Ref64.grads(c, T: s.T, gl: gl.map(Double.init), gh: gh.map(Double.init))
        let e = (logp: relInf(run.logp, ref.logp, floor: 1), ent: relInf(run.entropy, ref.entropy, floor: 1),
                 lse: relInf(run.lse, ref.lse, floor: 1), dX: relInf(run.dX, g.dX), dW: relInf(run.dW, g.dW),
                 db: relInf(run.db, g.db))
        #expect(e.logp <= 1e-5, "case \(k): logp rel err \(e.logp)")
        #expect(e.ent <= 1e-5, "case \(k): entropy rel err \(e.ent)")
        #expect(e.lse <= 1e-5, "case \(k): lse rel err \(e.lse)")
        if s.V > 1 {
            #expect(e.dX <= 1e-5, "case \(k): dX rel err \(e.dX)")
            #expect(e.dW <= 1e-5, "case \(k): dW rel err \(e.dW)")
            if s.bias { #expect(e.db <= 1e-5, "case \(k): dbias rel err \(e.db)") }
        } else {
            // One class: log p = 0 and H = 0 for every x, so every gradient is exactly 0.
            #expect(run.logp.allSatisfy { $0 == 0 } && run.entropy.allSatisfy { $0 == 0 })
            #expect(run.dX.allSatisfy { $0 == 0 } && run.dW.allSatisfy { $0 == 0 } && run.db.allSatisfy { $0 == 0 })
        }
        for r in s.masked {
            #expect(run.logp[r] == 0 && run.entropy[r] == 0 && run.lse[r] == 0)
            #expect(run.dX[(r * s.D)..<((r + 1) * s.D)].allSatisfy { $0 == 0 })
        }
    }

    /// The gradient check (docs/API.md): central differences (h = 1e-6) of the float64 transcription of
    /// J = Σ gl·log p + gh·H with respect to every element of X, W and bias.
    @Test func gradientCheckAgainstCentralDifferences() throws {
        let c = FusedCase.random(N: 4, D: 5, V: 6, seed: 7, bias: true, maskedRows: [2])
        let T = 0.8
        let (gl, gh) = upstream(c.N, seed: 8)
        let run = try runFused(fusedHead(chunkN: 2, chunkV: 4, T: T), c, gl: gl, gh: gh)
        func J(x: [Double]? = nil, w: [Double]? = nil, b: [Double]? = nil) -> Double {
            let s = Ref64.stats(c, T: T, x: x, w: w, b: b)
            var j = 0.0
            for r in 0..<c.N where c.valid(r) { j += Double(gl[r]) * s.logp[r] + Double(gh[r]) * s.entropy[r] }
            return j
        }
        let h = 1e-6
        func fd(_ base: [Double], _ eval: ([Double]) -> Double, skip: (Int) -> Bool = { _ in false }) -> [Double] {
            (0..<base.count).map { i in
                if skip(i) { return 0 }
                var p = base, m = base
                p[i] += h
                m[i] -= h
                return (eval(p) - eval(m)) / (2 * h)
            }
        }
        let x0 = c.x.map(Double.init), w0 = c.w.map(Double.init), b0 = c.bias!.map(Double.init)
        let gx = fd(x0, { J(x: $0) }, skip: { !c.valid($0 / c.D) })
        let gw = fd(w0, { J(w: $0) })
        let gb = fd(b0, { J(b: $0) })
        let tol = 1e-5
        #expect(relInf(run.dX, gx) <= tol, "dX vs central differences: \(relInf(run.dX, gx))")
        #expect(relInf(run.dW, gw) <= tol, "dW vs central differences: \(relInf(run.dW, gw))")
        #expect(relInf(run.db, gb) <= tol, "dbias vs central differences: \(relInf(run.db, gb))")
    }

    /// Every pair of chunk settings agrees to 1e-5, including 1 × 1 blocks and blocks wider
    /// than the problem.
    @Test func chunkSettingsAgree() throws {
        let c = FusedCase.random(N: 11, D: 20, V: 97, seed: 31, bias: true, maskedRows: [3, 4, 10])
        let (gl, gh) = upstream(c.N, seed: 32)
        let settings: [(Int64, Int64)] = [(1, 1), (2, 7), (3, 32), (5, 97), (128, 8192), (11, 96)]
        let runs = try settings.map { (s) throws(AepoFailure) in try runFused(fusedHead(chunkN: s.0, chunkV: s.1), c, gl: gl, gh: gh) }
        for i in 0..<runs.count {
            for j in (i + 1)..<runs.count {
                let a = runs[i], b = runs[j]
                let worst = [relInf(a.logp, b.logp), relInf(a.entropy, b.entropy), relInf(a.lse, b.lse),
                             relInf(a.dX, b.dX), relInf(a.dW, b.dW), relInf(a.db, b.db)].max()!
                #expect(worst <= 1e-5, "chunks \(settings[i]) vs \(settings[j]): max rel diff \(worst)")
            }
        }
    }

    /// The library's own threads never change a bit.
    @Test func threadCountsAreBitIdentical() throws {
        let c = FusedCase.random(N: 40, D: 16, V: 4099, seed: 41, bias: true, maskedRows: [0, 17, 18])
        let (gl, gh) = upstream(c.N, seed: 42)
        let one = try runFused(fusedHead(chunkN: 16, chunkV: 1000, threads: 1), c, gl: gl, gh: gh)
        for t in [2, 3, 7] as [Int64] {
            let many = try runFused(fusedHead(chunkN: 16, chunkV: 1000, threads: t), c, gl: gl, gh: gh)
            #expect(one.logp == many.logp && one.entropy == many.entropy && one.lse == many.lse, "threads \(t)")
            #expect(one.dX == many.dX && one.dW == many.dW && one.db == many.db, "threads \(t)")
        }
    }

    /// dW and dbias are added into; dX is overwritten.
    @Test func backwardAccumulatesIntoDWAndDbias() throws {
        let c = FusedCase.random(N: 5, D: 6, V: 9, seed: 51)
        let (gl, gh) = upstream(c.N, seed: 52)
        let fresh = try runFused(fusedHead(chunkN: 2, chunkV: 4), c, gl: gl, gh: gh)
        let added = try runFused(fusedHead(chunkN: 2, chunkV: 4), c, gl: gl, gh: gh, dW0: 0.25, db0: -0.5)
        #expect(added.dX == fresh.dX)
        #expect(relInf(added.dW, fresh.dW.map { Double($0) + 0.25 }) <= 1e-6)
        #expect(relInf(added.db, fresh.db.map { Double($0) - 0.5 }) <= 1e-6)
    }

    /// D = 0: the logits are the bias alone; dX and dW are empty, dbias is still formed.
    @Test func zeroHiddenSize() throws {
        let c = FusedCase.random(N: 3, D: 0, V: 5, seed: 61)
        let (gl, gh) = upstream(c.N, seed: 62)
        let run = try runFused(fusedHead(chunkN: 2, chunkV: 2), c, gl: gl, gh: gh)
        let ref = Ref64.stats(c, T: 1)
        let g = Ref64.grads(c, T: 1, gl: gl.map(Double.init), gh: gh.map(Double.init))
        #expect(relInf(run.logp, ref.logp, floor: 1) <= 1e-6)
        #expect(relInf(run.db, g.db) <= 1e-6)
    }

    /// Near-deterministic rows (p_top = 1 − 1e-5 or closer) with the top token displaced
    /// across chunks: every row's dX, and dW, keep float32 relative precision against the
    /// float64 reference, row by row (a cancelling top entry would lose it).
    @Test func nearDeterministicRowsKeepPrecision() throws {
        var c = FusedCase.random(N: 6, D: 8, V: 200, seed: 81, bias: false)
        // Row r puts a growing logit on column 37 + 50 r % 200, so the running max moves
        // from chunk to chunk; the target is the top token on even rows.
        for r in 0..<c.N {
            let top = (37 + 50 * r) % c.V
            for k in 0..<c.D { c.x[r * c.D + k] = k == r % c.D ? 1 : 0.01 }
            for k in 0..<c.D { c.w[top * c.D + k] += k == r % c.D ? Float(20 + r) : 0 }
            if r % 2 == 0 { c.targets[r] = Int32(top) }
        }
        let (gl, gh) = upstream(c.N, seed: 82)
        let ref = Ref64.grads(c, T: 1, gl: gl.map(Double.init), gh: gh.map(Double.init))
        let st = Ref64.stats(c, T: 1)
        #expect(st.entropy.max()! < 1e-3, "the rows are near-deterministic: H = \(st.entropy)")
        for chunks in [(Int64(2), Int64(16)), (Int64(6), Int64(8192)), (Int64(1), Int64(1))] {
            let run = try runFused(fusedHead(chunkN: chunks.0, chunkV: chunks.1), c, gl: gl, gh: gh)
            for r in 0..<c.N {
                let span = (r * c.D)..<((r + 1) * c.D)
                let e = relInf(Array(run.dX[span]), Array(ref.dX[span]))
                #expect(e <= 1e-5, "chunks \(chunks), row \(r): dX rel err \(e)")
            }
            #expect(relInf(run.dW, ref.dW) <= 1e-5, "chunks \(chunks): dW \(relInf(run.dW, ref.dW))")
            #expect(relInf(run.entropy, st.entropy) <= 1e-4, "chunks \(chunks): small entropies")
        }
    }

    /// Large logits: nothing overflows while the max is subtracted.
    @Test func largeLogitsStayFinite() throws {
        let c = FusedCase.random(N: 4, D: 8, V: 300, seed: 71, scale: 200)
        let (gl, gh) = upstream(c.N, seed: 72)
        let run = try runFused(fusedHead(chunkN: 3, chunkV: 64, T: 0.5), c, gl: gl, gh: gh)
        let ref = Ref64.stats(c, T: 0.5)
        #expect(relInf(run.logp, ref.logp, floor: 1) <= 1e-5)
        #expect(run.dX.allSatisfy(\.isFinite) && run.dW.allSatisfy(\.isFinite))
    }
}

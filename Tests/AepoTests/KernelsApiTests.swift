@testable import AepoCore
import AepoShim
import CAepoAPI
import Glibc
import Testing

// The logits kernels through their C exports: strided views, threads, and every error path
// named in the header (the argument and the row).

/// Inputs for one C call, owned by Swift arrays.
struct KernelsCase {
    var b: Int, l: Int, v: Int, sb: Int, sl: Int
    var logits: [Float]
    var targets: [Int32]
    var mask: [UInt8]?

    /// [B, L + pad, V] storage holding a [B, L, V] view with row stride V.
    init(b: Int, l: Int, v: Int, pad: Int = 0, scale: Double = 2, seed: UInt64 = 1) {
        self.b = b; self.l = l; self.v = v
        sb = (l + pad) * v; sl = v
        var rng = SplitMix64(seed: seed)
        logits = (0..<(b * (l + pad) * v)).map { _ in Float(scale * rng.normal()) }
        targets = (0..<(b * l)).map { _ in Int32(rng.int(v)) }
    }

    struct Stats {
        var status: Int32, err: aepo_error
        var logp: [Float], entropy: [Float], lse: [Double], logpT1: [Float]
        var entropySum: Double, nllSum: Double, count: Int64
    }

    func stats(temperature: Double = 1.2, threads: Int64 = 1, targetsNull: Bool = false) -> Stats {
        let n = max(0, b * l)
        var r = Stats(status: -1, err: aepo_error(), logp: .init(repeating: .nan, count: n),
                      entropy: .init(repeating: .nan, count: n), lse: .init(repeating: .nan, count: n),
                      logpT1: .init(repeating: .nan, count: n), entropySum: .nan, nllSum: .nan, count: -1)
        let maskPtr = mask.map { m in UnsafeMutablePointer<UInt8>.allocate(capacity: max(m.count, 1)) }
        defer { maskPtr?.deallocate() }
        if let mask, let maskPtr { maskPtr.initialize(from: mask, count: mask.count) }
        r.status = cLogitsStats(logits, Int64(b), Int64(l), Int64(v), Int64(sb), Int64(sl),
                                     targetsNull ? nil : targets, maskPtr, temperature, threads,
                                     &r.logp, &r.entropy, &r.lse, &r.logpT1, &r.entropySum, &r.nllSum, &r.count, &r.err)
        return r
    }

    func backward(_ s: Stats, gradLogp: [Float], gradEntropy: [Float], temperature: Double = 1.2,
                  threads: Int64 = 1) -> (status: Int32, err: aepo_error, out: [Float]) {
        var out = [Float](repeating: .nan, count: b * l * v)
        var err = aepo_error()
        let maskPtr = mask.map { m in UnsafeMutablePointer<UInt8>.allocate(capacity: max(m.count, 1)) }
        defer { maskPtr?.deallocate() }
        if let mask, let maskPtr { maskPtr.initialize(from: mask, count: mask.count) }
        let st = cLogitsBackward(logits, Int64(b), Int64(l), Int64(v), Int64(sb), Int64(sl), targets, maskPtr,
                                      temperature, s.lse, s.entropy, gradLogp, gradEntropy,
                                      &out, Int64(l * v), Int64(v), threads, &err)
        return (st, err, out)
    }
}

func message(_ e: aepo_error) -> String {
    withUnsafeBytes(of: e.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

func argument(_ e: aepo_error) -> String {
    withUnsafeBytes(of: e.argument) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

@Suite struct KernelsApiTests {
    /// Bit-identical results for 1, 2 and 3 threads, forward and backward.
    @Test func threadsGiveIdenticalBits() {
        var c = KernelsCase(b: 3, l: 40, v: 3001, pad: 1, scale: 3, seed: 9)
        c.mask = (0..<(c.b * c.l)).map { $0 % 7 == 3 ? 0 : 1 }
        let gl = (0..<(c.b * c.l)).map { Float(($0 % 5) - 2) * 0.3 }
        let gh = (0..<(c.b * c.l)).map { Float(($0 % 3) - 1) * 0.7 }
        let ref = c.stats(threads: 1)
        #expect(ref.status == AEPO_OK, "\(message(ref.err))")
        let refOut = c.backward(ref, gradLogp: gl, gradEntropy: gh, threads: 1)
        #expect(refOut.status == AEPO_OK, "\(message(refOut.err))")
        for t: Int64 in [2, 3] {
            let s = c.stats(threads: t)
            #expect(s.status == AEPO_OK)
            #expect(s.logp.map(\.bitPattern) == ref.logp.map(\.bitPattern), "logp differs at threads = \(t)")
            #expect(s.entropy.map(\.bitPattern) == ref.entropy.map(\.bitPattern), "entropy differs at threads = \(t)")
            #expect(s.lse.map(\.bitPattern) == ref.lse.map(\.bitPattern), "lse differs at threads = \(t)")
            #expect(s.logpT1.map(\.bitPattern) == ref.logpT1.map(\.bitPattern), "logp_t1 differs at threads = \(t)")
            #expect(s.entropySum.bitPattern == ref.entropySum.bitPattern && s.nllSum.bitPattern == ref.nllSum.bitPattern)
            #expect(s.count == ref.count)
            let o = c.backward(s, gradLogp: gl, gradEntropy: gh, threads: t)
            #expect(o.out.map(\.bitPattern) == refOut.out.map(\.bitPattern), "gradient differs at threads = \(t)")
        }
        #expect(ref.count == Int64(c.mask!.filter { $0 == 1 }.count))
    }

    /// A shifted [B, L, V] view of [B, L + 1, V] storage gives the same numbers as a compact copy.
    @Test func shiftedViewNeedsNoCopy() {
        let c = KernelsCase(b: 2, l: 5, v: 77, pad: 1, seed: 4)
        var compact = c
        compact.logits = []
        for bi in 0..<c.b {
            for li in 0..<c.l { compact.logits += c.logits[(bi * c.sb + li * c.sl)..<(bi * c.sb + li * c.sl + c.v)] }
        }
        compact.sb = c.l * c.v
        let a = c.stats(), b = compact.stats()
        #expect(a.status == AEPO_OK && b.status == AEPO_OK)
        #expect(a.logp == b.logp && a.entropy == b.entropy && a.lse == b.lse)
        let gl = [Float](repeating: 1, count: c.b * c.l), gh = [Float](repeating: -0.5, count: c.b * c.l)
        let ga = c.backward(a, gradLogp: gl, gradEntropy: gh), gb = compact.backward(b, gradLogp: gl, gradEntropy: gh)
        #expect(ga.status == AEPO_OK && ga.out == gb.out)
    }

    /// The entropy example of docs/API.md through the C API (logits [2, 1, 0, −1]).
    @Test func anchorsTableThroughCAPI() {
        var c = KernelsCase(b: 1, l: 1, v: 4)
        c.logits = [2, 1, 0, -1]
        c.targets = [0]
        for (t, h, lp) in [(1.0, 0.9475369640, -0.4401896986), (0.7, 0.7020279765, -0.2706738307),
                           (1.3, 1.0907583528, -0.5752478943)] {
            let s = c.stats(temperature: t)
            #expect(s.status == AEPO_OK)
            #expect(abs(Double(s.entropy[0]) - h) <= 2e-7 && abs(Double(s.logp[0]) - lp) <= 2e-7, "T = \(t)")
            #expect(abs(Double(s.logpT1[0]) + 0.4401896986) <= 2e-7)
        }
    }

    // MARK: errors

    @Test func nanUnderMaskNamesLogitsAndRow() {
        var c = KernelsCase(b: 2, l: 4, v: 50)
        c.logits[1 * c.sb + 2 * c.sl + 17] = .nan      // row 6
        let s = c.stats(threads: 2)
        #expect(s.status == AEPO_ERR_NON_FINITE)
        #expect(argument(s.err) == "logits" && s.err.index == 6)
        #expect(message(s.err).contains("row 6") && message(s.err).contains("column 17"), "\(message(s.err))")
        // Under mask = 0 the row is not read.
        c.mask = [1, 1, 1, 1, 1, 1, 0, 1]
        #expect(c.stats().status == AEPO_OK)
        // +inf is rejected too.
        c.mask = nil
        c.logits[1 * c.sb + 2 * c.sl + 17] = .infinity
        #expect(c.stats().status == AEPO_ERR_NON_FINITE)
    }

    @Test func allNegativeInfinityRowIsAnError() {
        var c = KernelsCase(b: 1, l: 14, v: 9)
        for j in 0..<9 { c.logits[13 * 9 + j] = -.infinity }
        let s = c.stats()
        #expect(s.status == AEPO_ERR_INVALID_ARGUMENT)
        #expect(message(s.err) == "logits: row 13 is all -inf under mask = 1", "\(message(s.err))")
        #expect(s.err.index == 13)
        // Some −inf entries are fine.
        c.logits[13 * 9 + 8] = 1.5
        c.targets[13] = 8
        let ok = c.stats()
        #expect(ok.status == AEPO_OK && ok.logp[13] == 0 && ok.entropy[13] == 0,
                "\(message(ok.err)) logp \(ok.logp[13]) H \(ok.entropy[13])")
    }

    @Test func temperatureMustBePositive() {
        let c = KernelsCase(b: 1, l: 2, v: 5)
        for t in [0.0, -1.0, .nan, .infinity] {
            let s = c.stats(temperature: t)
            #expect(s.status == AEPO_ERR_INVALID_ARGUMENT)
            #expect(argument(s.err) == "temperature" && message(s.err).contains("sampler.greedy"), "\(message(s.err))")
            let s0 = c.stats(temperature: 1)
            let o = c.backward(s0, gradLogp: [1, 1], gradEntropy: [0, 0], temperature: t)
            #expect(o.status == AEPO_ERR_INVALID_ARGUMENT && message(o.err).contains("sampler.greedy"))
        }
    }

    @Test func targetOutOfRangeUnderMask() {
        var c = KernelsCase(b: 1, l: 6, v: 10)
        c.targets[4] = 10
        var s = c.stats()
        #expect(s.status == AEPO_ERR_INVALID_ARGUMENT && argument(s.err) == "targets" && s.err.index == 4)
        #expect(message(s.err).contains("targets[4] = 10 is out of range [0, 10)"), "\(message(s.err))")
        c.targets[4] = -100
        c.mask = [1, 1, 1, 1, 0, 1]
        s = c.stats()
        #expect(s.status == AEPO_OK && s.logp[4] == 0 && s.count == 5)
        // Backward checks targets only where grad_logp is used.
        c.mask = nil
        let o = c.backward(s, gradLogp: [1, 1, 1, 1, 1, 1], gradEntropy: [0, 0, 0, 0, 0, 0])
        #expect(o.status == AEPO_ERR_INVALID_ARGUMENT && o.err.index == 4)
        let o2 = c.backward(s, gradLogp: [1, 1, 1, 1, 0, 1], gradEntropy: [0, 0, 0, 0, 0, 0])
        #expect(o2.status == AEPO_OK && o2.out[(4 * 10)..<(5 * 10)].allSatisfy { $0 == 0 })
    }

    @Test func maskValuesAreZeroOrOne() {
        var c = KernelsCase(b: 1, l: 3, v: 4)
        c.mask = [1, 2, 1]
        let s = c.stats()
        #expect(s.status == AEPO_ERR_INVALID_ARGUMENT && argument(s.err) == "mask" && s.err.index == 1)
    }

    @Test func badStridesAndShapes() {
        var c = KernelsCase(b: 2, l: 3, v: 10)
        c.sl = 9  // rows overlap
        var s = c.stats()
        #expect(s.status == AEPO_ERR_SHAPE && argument(s.err) == "stride_l", "\(message(s.err))")
        c.sl = 10; c.sb = 20  // batches overlap
        s = c.stats()
        #expect(s.status == AEPO_ERR_SHAPE && argument(s.err) == "stride_b", "\(message(s.err))")
        // A negative stride means the contiguous one: the same bits as (L*V, V).
        c.sb = 30; c.sl = 10
        let contiguous = c.stats()
        c.sb = -1; c.sl = -7
        let defaulted = c.stats()
        #expect(contiguous.status == AEPO_OK && defaulted.status == AEPO_OK)
        #expect(defaulted.logp.map(\.bitPattern) == contiguous.logp.map(\.bitPattern))
        #expect(defaulted.lse.map(\.bitPattern) == contiguous.lse.map(\.bitPattern))
        c.sb = 30; c.b = -1
        s = c.stats()
        #expect(s.status == AEPO_ERR_SHAPE && argument(s.err) == "B")
        // An overflowing extent.
        var err = aepo_error()
        let st = cLogitsStats(c.logits, 3, 2, 10, Int64.max / 2 + 1, 10, nil, nil, 1, 1, nil, nil, nil, nil, nil, nil, nil, &err)
        #expect(st == AEPO_ERR_SHAPE && message(err).contains("overflows"), "\(message(err))")
        // Time-major views (batch stride smaller than the row stride) are fine.
        var t = KernelsCase(b: 3, l: 2, v: 8)
        t.sb = 8; t.sl = 24
        #expect(t.stats().status == AEPO_OK)
    }

    @Test func nullPointers() {
        var err = aepo_error()
        var lp = [Float](repeating: 0, count: 2), h = lp
        var lse = [Double](repeating: 0, count: 2)
        var st = cLogitsStats(nil, 1, 2, 3, 0, 3, [0, 1], nil, 1, 1, &lp, nil, nil, nil, nil, nil, nil, &err)
        #expect(st == AEPO_ERR_NULL_POINTER && argument(err) == "logits")
        let x: [Float] = [1, 2, 3, 4, 5, 6]
        st = cLogitsStats(x, 1, 2, 3, 0, 3, nil, nil, 1, 1, &lp, nil, nil, nil, nil, nil, nil, &err)
        #expect(st == AEPO_ERR_NULL_POINTER && argument(err) == "targets")
        // Entropy only: no targets needed. err may be NULL.
        st = cLogitsStats(x, 1, 2, 3, 0, 3, nil, nil, 1, 1, nil, &h, &lse, nil, nil, nil, nil, nil)
        #expect(st == AEPO_OK)
        var out = [Float](repeating: 0, count: 6)
        st = cLogitsBackward(x, 1, 2, 3, 0, 3, nil, nil, 1, nil, h, nil, [1, 1], &out, 0, 3, 1, &err)
        #expect(st == AEPO_ERR_NULL_POINTER && argument(err) == "lse")
        st = cLogitsBackward(x, 1, 2, 3, 0, 3, nil, nil, 1, lse, h, nil, [1, 1], nil, 0, 3, 1, &err)
        #expect(st == AEPO_ERR_NULL_POINTER && argument(err) == "out")
        st = cLogitsBackward(x, 1, 2, 3, 0, 3, nil, nil, 1, lse, h, [1, 1], nil, &out, 0, 3, 1, &err)
        #expect(st == AEPO_ERR_NULL_POINTER && argument(err) == "targets")
        st = cLogitsBackward(x, 1, 2, 3, 0, 3, nil, nil, 1, lse, nil, nil, [1, 1], &out, 0, 3, 1, &err)
        #expect(st == AEPO_ERR_NULL_POINTER && argument(err) == "entropy")
        st = cLogitsBackward(x, 1, 2, 3, 0, 3, nil, nil, 1, lse, h, nil, [1, 1], &out, 0, 3, 1, &err)
        #expect(st == AEPO_OK)
        // Empty input: nothing is read; sums are 0.
        var es = 1.0, ns = 1.0
        var cnt: Int64 = 1
        st = cLogitsStats(nil, 0, 5, 3, 0, 3, nil, nil, 1, 1, nil, nil, nil, nil, &es, &ns, &cnt, &err)
        #expect(st == AEPO_OK && es == 0 && ns == 0 && cnt == 0)
    }

    /// aepo_logits_inputs_init sets the documented defaults (T = 1, one thread, contiguous
    /// strides) and zeroes the rest; a NULL struct, a short struct_size and set bytes past
    /// this library's struct are refused by name.
    @Test func inputsStructIsVersioned() {
        var err = aepo_error()
        let size = MemoryLayout<aepo_logits_inputs>.size
        let raw = UnsafeMutableRawPointer.allocate(byteCount: size + 8, alignment: 8)
        defer { raw.deallocate() }
        raw.initializeMemory(as: UInt8.self, repeating: 0xCD, count: size + 8)
        let p = raw.bindMemory(to: aepo_logits_inputs.self, capacity: 1)
        #expect(aepo_logits_inputs_init(p, size + 8, &err) == AEPO_OK)
        let d = p.pointee
        #expect(d.struct_size == size + 8 && d.temperature == 1 && d.threads == 1)
        #expect(d.stride_b < 0 && d.stride_l < 0 && d.logits == nil && d.targets == nil && d.mask == nil)
        #expect(d.B == 0 && d.L == 0 && d.V == 0)
        let x: [Float] = [0, 1, 2, 1, 1, 1]  // row 1 is uniform: H = log 3
        var h = [Float](repeating: .nan, count: 2)
        x.withUnsafeBufferPointer { xb in
            p.pointee.logits = xb.baseAddress
            (p.pointee.B, p.pointee.L, p.pointee.V) = (1, 2, 3)
            #expect(aepo_logits_stats(p, nil, &h, nil, nil, nil, nil, nil, &err) == AEPO_OK)
            raw.storeBytes(of: UInt8(2), toByteOffset: size + 5, as: UInt8.self)
            #expect(aepo_logits_stats(p, nil, &h, nil, nil, nil, nil, nil, &err) == AEPO_ERR_INVALID_ARGUMENT
                    && argument(err) == "struct_size")
            p.pointee.struct_size = size - 8
            #expect(aepo_logits_stats(p, nil, &h, nil, nil, nil, nil, nil, &err) == AEPO_ERR_INVALID_ARGUMENT
                    && argument(err) == "struct_size")
        }
        #expect(abs(Double(h[1]) - log(3.0)) < 1e-6)
        #expect(aepo_logits_stats(nil, nil, &h, nil, nil, nil, nil, nil, &err) == AEPO_ERR_NULL_POINTER
                && argument(err) == "in")
        #expect(aepo_logits_backward(nil, nil, nil, nil, nil, nil, 0, 0, &err) == AEPO_ERR_NULL_POINTER
                && argument(err) == "in")
        #expect(aepo_logits_inputs_init(p, 4, &err) == AEPO_ERR_INVALID_ARGUMENT && argument(err) == "struct_size")
    }

    @Test func threadsOutOfRange() {
        let c = KernelsCase(b: 1, l: 2, v: 5)
        for t: Int64 in [0, -3, 257] {
            let s = c.stats(threads: t)
            #expect(s.status == AEPO_ERR_INVALID_ARGUMENT && argument(s.err) == "threads")
        }
    }

    @Test func outOverlappingLogitsIsRejected() {
        let x = [Float](repeating: 0.5, count: 40)
        var err = aepo_error()
        var lse = [Double](repeating: 0, count: 4), h = [Float](repeating: 0, count: 4)
        var st = cLogitsStats(x, 1, 4, 10, 0, 10, nil, nil, 1, 1, nil, &h, &lse, nil, nil, nil, nil, &err)
        #expect(st == AEPO_OK)
        var buf = x + [Float](repeating: 0, count: 5)
        buf.withUnsafeMutableBufferPointer { b in
            let p = b.baseAddress!
            // Shifted by 5 elements: overlaps without being the same view.
            st = cLogitsBackward(p, 1, 4, 10, 0, 10, nil, nil, 1, lse, h, nil, [1, 1, 1, 1], p + 5, 0, 10, 1, &err)
            #expect(st == AEPO_ERR_INVALID_ARGUMENT && argument(err) == "out", "\(message(err))")
            // The same view is in place, and allowed.
            st = cLogitsBackward(p, 1, 4, 10, 0, 10, nil, nil, 1, lse, h, nil, [1, 1, 1, 1], p, 0, 10, 1, &err)
            #expect(st == AEPO_OK)
        }
        // Uniform row: the entropy gradient is 0 everywhere.
        #expect(buf[0..<40].allSatisfy { abs($0) < 1e-7 })
    }

    @Test func nonFiniteUpstreamGradient() {
        let c = KernelsCase(b: 1, l: 3, v: 5)
        let s = c.stats()
        let o = c.backward(s, gradLogp: [1, .nan, 1], gradEntropy: [0, 0, 0])
        #expect(o.status == AEPO_ERR_NON_FINITE && argument(o.err) == "grad_logp" && o.err.index == 1)
    }
}

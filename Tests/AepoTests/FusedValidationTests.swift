import AepoConfig
@testable import AepoCore
import AepoShim
import CAepoAPI
import Testing

/// The fused exports called directly: bad input gets a status and a message naming the
/// argument, and no output is written.
@Suite struct FusedValidationTests {
    final class Handle {
        var h: OpaquePointer?
        init(_ json: String = "") throws {
            var err = aepo_error()
            let rc = json.withCString { aepo_fused_create($0, json.utf8.count, &h, &err) }
            if rc != AEPO_OK {
                throw LossShimTests.Failure(status: rc, argument: LossShimTests.argument(err),
                                            message: LossShimTests.message(err))
            }
        }
        deinit { aepo_fused_free(h) }
    }

    struct Outcome {
        var status: Int32
        var argument: String
        var message: String
        var index: Int64
        var logp: [Float]
    }

    /// aepo_fused_forward on a case, after `edit` damaged the raw arguments.
    func forward(_ c: FusedCase, json: String = "",
                 edit: (inout UnsafePointer<Float>?, inout UnsafePointer<Float>?, inout UnsafePointer<Int32>?,
                        inout Int64, inout Int64, inout Int64) -> Void = { _, _, _, _, _, _ in }) throws -> Outcome {
        let h = try Handle(json)
        let xb = buffer(c.x), wb = buffer(c.w), tb = buffer(c.targets), bb = c.bias.map(buffer), mb = c.mask.map(buffer)
        defer { release(xb); release(wb); release(tb); release(bb); release(mb) }
        var x = xb.baseAddress, w = wb.baseAddress, t = tb.baseAddress
        var n = Int64(c.N), d = Int64(c.D), v = Int64(c.V)
        edit(&x, &w, &t, &n, &d, &v)
        var logp = [Float](repeating: 42, count: c.N)
        var err = aepo_error()
        let rc = logp.withUnsafeMutableBufferPointer {
            aepo_fused_forward(h.h, x, w, bb?.baseAddress, t, mb?.baseAddress, n, d, v, $0.baseAddress, nil, nil, &err)
        }
        #expect(err.status == rc)
        return Outcome(status: rc, argument: LossShimTests.argument(err), message: LossShimTests.message(err),
                       index: err.index, logp: logp)
    }

    func expectFailure(_ o: Outcome, _ status: Int32, _ argument: String, _ needle: String, index: Int64? = nil,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(o.status == status, "status \(o.status): \(o.message)", sourceLocation: sourceLocation)
        #expect(o.argument == argument, "argument '\(o.argument)': \(o.message)", sourceLocation: sourceLocation)
        #expect(o.message.contains(needle), "message: \(o.message)", sourceLocation: sourceLocation)
        if let index { #expect(o.index == index, "index \(o.index)", sourceLocation: sourceLocation) }
        #expect(o.logp.allSatisfy { $0 == 42 }, "an output was written before the error", sourceLocation: sourceLocation)
    }

    let base = FusedCase.random(N: 4, D: 3, V: 6, seed: 9, bias: true, maskedRows: [1])

    @Test func goodCallSucceeds() throws {
        let o = try forward(base)
        #expect(o.status == AEPO_OK && o.message.isEmpty && o.index == -1)
        #expect(o.logp[1] == 0 && o.logp[0] < 0)
    }

    @Test func nullWeight() throws {
        expectFailure(try forward(base) { _, w, _, _, _, _ in w = nil }, AEPO_ERR_NULL_POINTER, "W", "W is NULL")
        expectFailure(try forward(base) { x, _, _, _, _, _ in x = nil }, AEPO_ERR_NULL_POINTER, "X", "X is NULL")
        expectFailure(try forward(base) { _, _, t, _, _, _ in t = nil }, AEPO_ERR_NULL_POINTER, "targets", "NULL")
    }

    @Test func nonFiniteX() throws {
        var c = base
        c.x[2 * 3 + 1] = .infinity
        expectFailure(try forward(c), AEPO_ERR_NON_FINITE, "X", "X[2, 1] is inf", index: 7)
        // A NaN on a masked row is never read (the fixture's row 1 is all NaN already).
        var ok = base
        ok.x[1 * 3] = .infinity
        #expect(try forward(ok).status == AEPO_OK)
    }

    @Test func nonFiniteWeightsAndBias() throws {
        var c = base
        c.w[4 * 3 + 2] = .nan
        expectFailure(try forward(c), AEPO_ERR_NON_FINITE, "W", "W[4, 2] is nan", index: 14)
        var b = base
        b.bias![5] = -.infinity
        expectFailure(try forward(b), AEPO_ERR_NON_FINITE, "bias", "bias[5] is -inf", index: 5)
    }

    @Test func zeroChunkAndBadTemperature() {
        for (json, path, needle) in [(#"{"fused": {"chunk_n": 0}}"#, "fused.chunk_n", "out of range"),
                                     (#"{"fused": {"chunk_v": 0}}"#, "fused.chunk_v", "out of range"),
                                     (#"{"fused": {"temperature": 0}}"#, "fused.temperature", "sampler.greedy"),
                                     (#"{"fused": {"threads": 0}}"#, "fused.threads", "out of range")] {
            do {
                _ = try Handle(json)
                Issue.record("\(json) was accepted")
            } catch let f as LossShimTests.Failure {
                #expect(f.status == AEPO_ERR_CONFIG && f.argument == path && f.message.contains(needle), "\(f.message)")
            } catch { Issue.record("\(error)") }
        }
        var f = FusedConfig()
        f.chunkN = 0
        #expect(throws: AepoFailure.config("fused.chunk_n", "0 is out of range; expected an integer in [1, 16777216]")) {
            try FusedHead(config: f)
        }
    }

    /// Mismatched D: W holds rows of another width. Through C the sizes are one D, so the
    /// mismatch shows as a W buffer of the wrong length in the core API.
    @Test func mismatchedHiddenSize() throws {
        var c = base
        c.w = [Float](repeating: 0.5, count: c.V * (c.D + 1))
        let f: AepoFailure? = {
            do throws(AepoFailure) {
                try c.withInputs { (inp) throws(AepoFailure) in try fusedHead().forward(inp) }
                return nil
            } catch { return error }
        }()
        #expect(f?.kind == .shape && f?.argument == "W")
        #expect(f?.message == "W: has 24 elements, expected 18 (V * D = 6 * 3)")
    }

    @Test func sizesAndTargets() throws {
        expectFailure(try forward(base) { _, _, _, n, _, _ in n = -1 }, AEPO_ERR_SHAPE, "N", "must be >= 0")
        expectFailure(try forward(base) { _, _, _, _, d, _ in d = -2 }, AEPO_ERR_SHAPE, "D", "must be >= 0")
        expectFailure(try forward(FusedCase.random(N: 0, D: 0, V: 0, seed: 1)) { _, _, _, _, d, _ in d = 1 << 31 },
                      AEPO_ERR_SHAPE, "D", "32-bit")
        expectFailure(try forward(base) { _, _, _, n, d, _ in n = 1 << 40; d = 1 << 40 }, AEPO_ERR_SHAPE, "X", "overflows")
        var c = base
        c.targets[2] = 6
        expectFailure(try forward(c), AEPO_ERR_INVALID_ARGUMENT, "targets", "targets[2] = 6 is out of range [0, 6)", index: 2)
        c = base
        c.mask![3] = 2
        expectFailure(try forward(c), AEPO_ERR_INVALID_ARGUMENT, "mask", "mask[3] = 2", index: 3)
    }

    @Test func outputsMustNotAliasInputs() throws {
        let h = try Handle()
        var c = FusedCase.random(N: 3, D: 2, V: 3, seed: 3)
        let lse = buffer([Double](repeating: 1, count: 3)), gl = buffer([Float](repeating: 1, count: 3))
        defer { release(lse); release(gl) }
        var err = aepo_error()
        let rc = c.x.withUnsafeMutableBufferPointer { x in
            c.w.withUnsafeBufferPointer { w in
                c.targets.withUnsafeBufferPointer { t in
                    aepo_fused_backward(h.h, x.baseAddress, w.baseAddress, nil, t.baseAddress, nil, 3, 2, 3,
                                        lse.baseAddress, nil, gl.baseAddress, nil, x.baseAddress, nil, nil, &err)
                }
            }
        }
        #expect(rc == AEPO_ERR_INVALID_ARGUMENT && LossShimTests.argument(err) == "dX")
        #expect(LossShimTests.message(err).contains("overlaps the input X"))
    }

    @Test func backwardChecksItsOwnInputs() throws {
        let h = try Handle()
        let c = FusedCase.random(N: 3, D: 2, V: 4, seed: 4, maskedRows: [0])
        let x = buffer(c.x), w = buffer(c.w), t = buffer(c.targets), m = buffer(c.mask!)
        let lse = buffer([Double.nan, 1, .infinity]), good = buffer([Float](repeating: 1, count: 3))
        let goodLse = buffer([Double](repeating: 1, count: 3))
        defer { release(x); release(w); release(t); release(m); release(lse); release(good); release(goodLse) }
        var dX = [Float](repeating: 42, count: 6)
        var err = aepo_error()
        // lse[0] is NaN but masked; lse[2] is not.
        var rc = aepo_fused_backward(h.h, x.baseAddress, w.baseAddress, nil, t.baseAddress, m.baseAddress, 3, 2, 4,
                                     lse.baseAddress, nil, good.baseAddress, nil, &dX, nil, nil, &err)
        #expect(rc == AEPO_ERR_NON_FINITE && LossShimTests.argument(err) == "lse" && err.index == 2)
        #expect(dX.allSatisfy { $0 == 42 })
        rc = aepo_fused_backward(h.h, x.baseAddress, w.baseAddress, nil, t.baseAddress, m.baseAddress, 3, 2, 4,
                                 nil, nil, good.baseAddress, nil, &dX, nil, nil, &err)
        #expect(rc == AEPO_ERR_NULL_POINTER && LossShimTests.argument(err) == "lse")
        rc = aepo_fused_backward(h.h, x.baseAddress, w.baseAddress, nil, t.baseAddress, m.baseAddress, 3, 2, 4,
                                 goodLse.baseAddress, nil, good.baseAddress, good.baseAddress, &dX, nil, nil, &err)
        #expect(rc == AEPO_ERR_NULL_POINTER && LossShimTests.argument(err) == "entropy")
    }

    @Test func lossAndGradArguments() throws {
        let h = try Handle()
        var lossH: OpaquePointer?
        var err = aepo_error()
        #expect(aepo_loss_create(nil, 0, &lossH, &err) == AEPO_OK)
        defer { aepo_loss_free(lossH) }
        let c = FusedLossCase.random(B: 2, L: 2, D: 3, V: 5, T: 1, seed: 5, holes: [])
        let x = buffer(c.head.x), w = buffer(c.head.w), t = buffer(c.head.targets)
        let olp = buffer(c.loss.oldLogp), adv = buffer(c.loss.advantages), mask = buffer(c.loss.mask)
        defer { release(x); release(w); release(t); release(olp); release(adv); release(mask) }
        var input = aepo_loss_inputs()
        #expect(aepo_loss_inputs_init(&input, MemoryLayout<aepo_loss_inputs>.size, &err) == AEPO_OK)
        input.B = 2
        input.L = 2
        input.old_logp = olp.baseAddress
        input.advantages = adv.baseAddress
        input.mask = mask.baseAddress
        var loss = Double.nan
        var metrics = [Double](repeating: .nan, count: Int(AEPO_LOSS_METRIC_COUNT))
        func call(_ fh: OpaquePointer?, _ lh: OpaquePointer?, _ inp: inout aepo_loss_inputs) -> Int32 {
            metrics.withUnsafeMutableBufferPointer { m in
                aepo_fused_loss_and_grad(fh, lh, x.baseAddress, w.baseAddress, nil, t.baseAddress, 3, 5, &inp, &loss,
                                         nil, nil, nil, m.baseAddress, m.count, nil, nil, &err)
            }
        }
        #expect(call(h.h, lossH, &input) == AEPO_OK)
        #expect(loss.isFinite && metrics[Int(AEPO_LOSS_METRIC_N_TOKENS)] == 4 && metrics[Int(AEPO_LOSS_METRIC_ENTROPY)] > 0)
        #expect(call(h.h, nil, &input) == AEPO_ERR_NULL_POINTER && LossShimTests.argument(err) == "policy_loss")
        #expect(call(nil, lossH, &input) == AEPO_ERR_NULL_POINTER && LossShimTests.argument(err) == "h")
        input.logp = olp.baseAddress
        #expect(call(h.h, lossH, &input) == AEPO_ERR_INVALID_ARGUMENT && LossShimTests.argument(err) == "in.logp")
        input.logp = nil
        input.old_logp = nil
        #expect(call(h.h, lossH, &input) == AEPO_ERR_NULL_POINTER && LossShimTests.argument(err) == "old_logp")
    }

    @Test func configRoundTripAndFreeNull() throws {
        let h = try Handle(#"{"fused": {"chunk_n": 7, "temperature": 0.75}}"#)
        var len = 0
        var err = aepo_error()
        #expect(aepo_fused_config_json(h.h, nil, 0, &len, &err) == AEPO_OK)
        var buf = [CChar](repeating: 0, count: len + 1)
        #expect(aepo_fused_config_json(h.h, &buf, buf.count, &len, &err) == AEPO_OK)
        let text = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let c = try ConfigCodec.parse(text)
        #expect(c.fused.chunkN == 7 && c.fused.temperature == 0.75 && c.fused.chunkV == 8192)
        aepo_fused_free(nil)
    }
}

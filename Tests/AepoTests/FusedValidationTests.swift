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
            let rc = json.withCString { aepo_fused_head_create($0, json.utf8.count, &h, &err) }
            if rc != AEPO_OK {
                throw LossShimTests.Failure(status: rc, argument: LossShimTests.argument(err),
                                            message: LossShimTests.message(err))
            }
        }
        deinit { aepo_fused_head_free(h) }
    }

    struct Outcome {
        var status: Int32
        var argument: String
        var message: String
        var index: Int64
        var logp: [Float]
    }

    /// aepo_fused_head_forward on a case, after `edit` damaged the raw arguments.
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
            cFusedForward(h.h, x, w, bb?.baseAddress, t, mb?.baseAddress, n, d, v, $0.baseAddress, nil, nil, &err)
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
                    cFusedBackward(h.h, x.baseAddress, w.baseAddress, nil, t.baseAddress, nil, 3, 2, 3,
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
        var rc = cFusedBackward(h.h, x.baseAddress, w.baseAddress, nil, t.baseAddress, m.baseAddress, 3, 2, 4,
                                     lse.baseAddress, nil, good.baseAddress, nil, &dX, nil, nil, &err)
        #expect(rc == AEPO_ERR_NON_FINITE && LossShimTests.argument(err) == "lse" && err.index == 2)
        #expect(dX.allSatisfy { $0 == 42 })
        rc = cFusedBackward(h.h, x.baseAddress, w.baseAddress, nil, t.baseAddress, m.baseAddress, 3, 2, 4,
                                 nil, nil, good.baseAddress, nil, &dX, nil, nil, &err)
        #expect(rc == AEPO_ERR_NULL_POINTER && LossShimTests.argument(err) == "lse")
        rc = cFusedBackward(h.h, x.baseAddress, w.baseAddress, nil, t.baseAddress, m.baseAddress, 3, 2, 4,
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
                cFusedLossAndGrad(fh, lh, x.baseAddress, w.baseAddress, nil, t.baseAddress, 3, 5, &inp, &loss,
                                         nil, nil, nil, m.baseAddress, m.count, nil, nil, &err)
            }
        }
        #expect(call(h.h, lossH, &input) == AEPO_OK)
        #expect(loss.isFinite && metrics[Int(AEPO_LOSS_METRIC_N_TOKENS)] == 4 && metrics[Int(AEPO_LOSS_METRIC_ENTROPY)] > 0)
        #expect(call(h.h, nil, &input) == AEPO_ERR_NULL_POINTER && LossShimTests.argument(err) == "loss")
        #expect(call(nil, lossH, &input) == AEPO_ERR_NULL_POINTER && LossShimTests.argument(err) == "head")
        input.logp = olp.baseAddress
        #expect(call(h.h, lossH, &input) == AEPO_ERR_INVALID_ARGUMENT && LossShimTests.argument(err) == "loss_in.logp")
        input.logp = nil
        input.old_logp = nil
        #expect(call(h.h, lossH, &input) == AEPO_ERR_NULL_POINTER && LossShimTests.argument(err) == "old_logp")
        input.old_logp = olp.baseAddress

        // The head's inputs struct: its N must be the loss's B * L, its mask NULL or the
        // loss inputs' own, and a NULL struct or a short struct_size is named.
        func direct(_ head: inout aepo_fused_head_inputs) -> Int32 {
            aepo_fused_head_loss_and_grad(h.h, lossH, &head, &input, &loss, nil, nil, nil, nil, 0, nil, nil, &err)
        }
        var head = headInputs(x.baseAddress, w.baseAddress, nil, t.baseAddress, nil, 4, 3, 5)
        #expect(direct(&head) == AEPO_OK)
        head.mask = mask.baseAddress
        #expect(direct(&head) == AEPO_OK)
        let other = buffer([UInt8](repeating: 1, count: 4))
        defer { release(other) }
        head.mask = UnsafePointer(other.baseAddress)
        #expect(direct(&head) == AEPO_ERR_INVALID_ARGUMENT && LossShimTests.argument(err) == "mask")
        head.mask = nil
        head.N = 3
        #expect(direct(&head) == AEPO_ERR_SHAPE && LossShimTests.argument(err) == "N")
        head.N = 4
        head.struct_size = 8
        #expect(direct(&head) == AEPO_ERR_INVALID_ARGUMENT && LossShimTests.argument(err) == "struct_size")
        #expect(aepo_fused_head_loss_and_grad(h.h, lossH, nil, &input, &loss, nil, nil, nil, nil, 0, nil, nil, &err)
                == AEPO_ERR_NULL_POINTER && LossShimTests.argument(err) == "in")
        head.struct_size = MemoryLayout<aepo_fused_head_inputs>.size
        #expect(aepo_fused_head_loss_and_grad(h.h, lossH, &head, nil, &loss, nil, nil, nil, nil, 0, nil, nil, &err)
                == AEPO_ERR_NULL_POINTER && LossShimTests.argument(err) == "loss_in")
    }

    /// aepo_fused_head_inputs_init zeroes the whole caller-sized struct and sets
    /// struct_size; a short size is refused; bytes past this library's struct must be 0.
    @Test func headInputsAreVersioned() throws {
        var err = aepo_error()
        let size = MemoryLayout<aepo_fused_head_inputs>.size
        let raw = UnsafeMutableRawPointer.allocate(byteCount: size + 16, alignment: 8)
        defer { raw.deallocate() }
        raw.initializeMemory(as: UInt8.self, repeating: 0xAB, count: size + 16)
        let p = raw.bindMemory(to: aepo_fused_head_inputs.self, capacity: 1)
        #expect(aepo_fused_head_inputs_init(p, size + 16, &err) == AEPO_OK)
        #expect(p.pointee.struct_size == size + 16 && p.pointee.X == nil && p.pointee.N == 0)
        #expect((size..<(size + 16)).allSatisfy { raw.load(fromByteOffset: $0, as: UInt8.self) == 0 })
        #expect(aepo_fused_head_inputs_init(p, size - 1, &err) == AEPO_ERR_INVALID_ARGUMENT
                && LossShimTests.argument(err) == "struct_size")
        #expect(aepo_fused_head_inputs_init(nil, size, &err) == AEPO_ERR_NULL_POINTER && LossShimTests.argument(err) == "in")
        let h = try Handle()
        #expect(aepo_fused_head_inputs_init(p, size + 16, &err) == AEPO_OK)
        raw.storeBytes(of: UInt8(1), toByteOffset: size + 3, as: UInt8.self)
        var lp = Float.nan
        #expect(aepo_fused_head_forward(h.h, p, &lp, nil, nil, &err) == AEPO_ERR_INVALID_ARGUMENT
                && LossShimTests.argument(err) == "struct_size")
        raw.storeBytes(of: UInt8(0), toByteOffset: size + 3, as: UInt8.self)
        #expect(aepo_fused_head_forward(h.h, p, &lp, nil, nil, &err) == AEPO_OK)
    }

    @Test func configRoundTripAndFreeNull() throws {
        let h = try Handle(#"{"fused": {"chunk_n": 7, "temperature": 0.75}}"#)
        var len = 0
        var err = aepo_error()
        #expect(aepo_fused_head_config_json(h.h, nil, 0, &len, &err) == AEPO_OK)
        var buf = [CChar](repeating: 0, count: len + 1)
        #expect(aepo_fused_head_config_json(h.h, &buf, buf.count, &len, &err) == AEPO_OK)
        let text = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let c = try ConfigCodec.parse(text)
        #expect(c.fused.chunkN == 7 && c.fused.temperature == 0.75 && c.fused.chunkV == 8192)
        aepo_fused_head_free(nil)
    }
}

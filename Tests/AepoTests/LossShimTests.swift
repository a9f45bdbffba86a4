import AepoConfig
@testable import AepoCore
import AepoShim
import CAepoAPI
import Testing

/// The C exports, called directly: validation, error messages, struct_size handling.
@Suite struct LossShimTests {
    final class Handle {
        var h: OpaquePointer?
        init(_ json: String = "") throws {
            var err = aepo_error()
            let rc = json.withCString { aepo_loss_create($0, json.utf8.count, &h, &err) }
            if rc != AEPO_OK { throw Failure(status: rc, argument: argument(err), message: message(err)) }
        }
        deinit { aepo_loss_free(h) }
    }

    struct Failure: Error {
        var status: Int32
        var argument: String
        var message: String
    }

    static func argument(_ e: aepo_error) -> String {
        var e = e
        return withUnsafeBytes(of: &e.argument) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
    }
    static func message(_ e: aepo_error) -> String {
        var e = e
        return withUnsafeBytes(of: &e.message) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
    }
    func argument(_ e: aepo_error) -> String { Self.argument(e) }
    func message(_ e: aepo_error) -> String { Self.message(e) }

    /// Calls aepo_loss_compute on a case; `edit` may damage the inputs struct.
    func compute(_ h: OpaquePointer?, _ c: LossCase, edit: (inout aepo_loss_inputs) -> Void = { _ in })
        -> (status: Int32, err: aepo_error, loss: Double, grad: [Float], metrics: [Double])
    {
        let lp = buffer(c.logp), olp = buffer(c.oldLogp), adv = buffer(c.advantages), mask = buffer(c.mask)
        let ref = c.ref.map(buffer), isw = c.isw.map(buffer), ent = c.entropy.map(buffer), reg = c.regRows.map(buffer)
        defer { release(lp); release(olp); release(adv); release(mask); release(ref); release(isw); release(ent); release(reg) }
        var input = aepo_loss_inputs()
        var err = aepo_error()
        #expect(aepo_loss_inputs_init(&input, MemoryLayout<aepo_loss_inputs>.size, &err) == AEPO_OK)
        input.B = Int64(c.B)
        input.L = Int64(c.L)
        input.logp = lp.baseAddress
        input.old_logp = olp.baseAddress
        input.advantages = adv.baseAddress
        input.adv_per_token = c.perToken ? 1 : 0
        input.mask = mask.baseAddress
        input.ref_logp = ref?.baseAddress
        input.is_weights = isw?.baseAddress
        input.entropy = ent?.baseAddress
        input.reg_rows = reg?.baseAddress
        if let a = c.regAlpha { input.reg_alpha = a }
        if let g = c.globalTokens { input.global_tokens = Int64(g) }
        if let g = c.globalSeqs { input.global_seqs = Int64(g) }
        if let g = c.globalRegTokens { input.global_reg_tokens = Int64(g) }
        input.dp_size = Int64(c.dp)
        edit(&input)
        var loss = 0.0
        var grad = [Float](repeating: 0, count: max(c.B * c.L, 1))
        var metrics = [Double](repeating: -1, count: Int(AEPO_LOSS_METRIC_COUNT))
        let rc = grad.withUnsafeMutableBufferPointer { g in
            metrics.withUnsafeMutableBufferPointer { m in
                aepo_loss_compute(h, &input, &loss, g.baseAddress, nil, m.baseAddress, m.count, &err)
            }
        }
        return (rc, err, loss, grad, metrics)
    }

    @Test func anchorThroughTheCABI() throws {
        let h = try Handle(#"{"loss": {"clip_ratio_high": 0.28}}"#)
        let r = compute(h.h, anchorCase())
        #expect(r.status == AEPO_OK, "\(message(r.err))")
        #expect(relErr(r.loss, 0.4436971975) <= 1e-7)
        #expect(relErr(r.metrics[Int(AEPO_LOSS_METRIC_PG_CLIPFRAC)], 0.2857142853) <= 1e-7)
        #expect(r.metrics[Int(AEPO_LOSS_METRIC_N_TOKENS)] == 7)
        #expect(r.err.status == AEPO_OK && message(r.err).isEmpty)
    }

    @Test func metricNamesArePinned() {
        let want = ["pg_loss", "pg_clipfrac", "pg_clipfrac_lower", "ppo_kl", "kl_loss", "entropy", "reg_used",
                    "n_positive", "reg_token_frac", "n_tokens", "n_seqs", "reg_loss", "nll_main", "entropy_main",
                    "n_tokens_main", "nll_reg", "entropy_reg", "n_tokens_reg"]
        #expect(aepo_loss_metric_count() == AEPO_LOSS_METRIC_COUNT)
        #expect(Int(AEPO_LOSS_METRIC_COUNT) == want.count)
        for (i, n) in want.enumerated() { #expect(String(cString: aepo_loss_metric_name(Int32(i))!) == n) }
        #expect(aepo_loss_metric_name(-1) == nil && aepo_loss_metric_name(AEPO_LOSS_METRIC_COUNT) == nil)
        #expect(AEPO_LOSS_METRIC_REG_TOKEN_FRAC == 8 && AEPO_LOSS_METRIC_N_SEQS == 10)
        #expect(AEPO_LOSS_METRIC_NLL_MAIN == 12 && AEPO_LOSS_METRIC_N_TOKENS_REG == 17)
    }

    @Test func unknownModesAndUnsupportedAggregation() {
        for (json, path, fragment) in [
            (#"{"loss": {"policy_loss": "nonsense"}}"#, "loss.policy_loss", "unknown value"),
            (#"{"loss": {"policy_loss": "geo_mean"}}"#, "loss.policy_loss", "unknown value"),
            (#"{"loss": {"policy_loss": "gspo"}}"#, "loss.loss_agg_mode", "seq-mean-token-mean"),
            (#"{"loss": {"policy_loss": "gspo", "loss_agg_mode": "token-sum"}}"#, "loss.loss_agg_mode", "\"token-sum\""),
            (#"{"advantage": {"estimator": "gae"}}"#, "advantage.estimator", "unknown value"),
            (#"{"loss": {"loss_agg_mode": "mean"}}"#, "loss.loss_agg_mode", "unknown value"),
            (#"{"loss": {"kl_loss_type": "full"}}"#, "loss.kl_loss_type", "unknown value"),
            (#"{"loss": {"loss_agg_mode": "seq-mean-token-sum-norm"}}"#, "loss.loss_scale_factor", "loss_scale_factor"),
        ] {
            do {
                _ = try Handle(json)
                Issue.record("\(json) was accepted")
            } catch let f as Failure {
                #expect(f.status == AEPO_ERR_CONFIG && f.argument == path && f.message.contains(fragment),
                        "\(json): \(f.argument): \(f.message)")
            } catch { Issue.record("\(error)") }
        }
    }

    @Test func badInputsNameTheArgument() throws {
        let h = try Handle(#"{"loss": {"kl_loss_coef": 0.1}}"#)
        var c = anchorCase()
        c.ref = c.oldLogp
        #expect(compute(h.h, c).status == AEPO_OK)

        func expectError(_ c: LossCase, _ status: Int32, _ arg: String, _ fragment: String, index: Int64? = nil,
                         edit: (inout aepo_loss_inputs) -> Void = { _ in }, sourceLocation: SourceLocation = #_sourceLocation) {
            let r = compute(h.h, c, edit: edit)
            #expect(r.status == status && argument(r.err) == arg && message(r.err).contains(fragment),
                    "got \(r.status) \(argument(r.err)): \(message(r.err))", sourceLocation: sourceLocation)
            if let index { #expect(r.err.index == index, sourceLocation: sourceLocation) }
        }
        // Mask other than 0/1, with its index.
        var m = c
        m.mask[5] = 2
        expectError(m, AEPO_ERR_INVALID_ARGUMENT, "mask", "mask[5] is 2", index: 5)
        // NaN / Inf under the mask, each argument, with its flat index; masked NaN is fine.
        for (name, i) in [("logp", 2), ("old_logp", 6), ("ref_logp", 0)] {
            var bad = c
            switch name {
            case "logp": bad.logp[i] = .nan
            case "old_logp": bad.oldLogp[i] = .infinity
            default: bad.ref![i] = -.infinity
            }
            expectError(bad, AEPO_ERR_NON_FINITE, name, "\(name)[\(i)]", index: Int64(i))
        }
        var adv = c
        adv.advantages[1] = .nan
        expectError(adv, AEPO_ERR_NON_FINITE, "advantages", "advantages[1]", index: 1)
        var masked = c
        masked.logp[3] = .nan
        masked.oldLogp[3] = .infinity
        masked.ref![3] = .nan
        #expect(compute(h.h, masked).status == AEPO_OK)
        // Empty batch without global counts.
        var empty = c
        empty.mask = [UInt8](repeating: 0, count: 8)
        expectError(empty, AEPO_ERR_INVALID_ARGUMENT, "global_tokens", "no valid tokens")
        // dp_size > 1 without global counts.
        var dp = c
        dp.dp = 2
        expectError(dp, AEPO_ERR_INVALID_ARGUMENT, "global_tokens", "dp_size > 1")
        // A global count below the local one.
        var g = c
        g.globalTokens = 3
        expectError(g, AEPO_ERR_INVALID_ARGUMENT, "global_tokens", "this call alone has 7")
        // KL coefficient without reference log-probs.
        var noRef = c
        noRef.ref = nil
        expectError(noRef, AEPO_ERR_INVALID_ARGUMENT, "ref_logp", "kl_loss_coef")
        // Shapes and pointers at the C boundary.
        expectError(c, AEPO_ERR_SHAPE, "B", ">= 0", edit: { $0.B = -1 })
        expectError(c, AEPO_ERR_SHAPE, "B", "overflows", edit: { $0.B = Int64.max / 2; $0.L = 4 })
        expectError(c, AEPO_ERR_NULL_POINTER, "old_logp", "NULL", edit: { $0.old_logp = nil })
        expectError(c, AEPO_ERR_NULL_POINTER, "mask", "NULL", edit: { $0.mask = nil })
        expectError(c, AEPO_ERR_INVALID_ARGUMENT, "adv_per_token", "0", edit: { $0.adv_per_token = 2 })
        expectError(c, AEPO_ERR_INVALID_ARGUMENT, "dp_size", ">= 1", edit: { $0.dp_size = 0 })
        expectError(c, AEPO_ERR_INVALID_ARGUMENT, "reg_alpha", "finite", edit: { $0.reg_alpha = .nan })
        expectError(c, AEPO_ERR_INVALID_ARGUMENT, "struct_size", "at least", edit: { $0.struct_size = 16 })
        var r = c
        r.regRows = [0, 3]
        expectError(r, AEPO_ERR_INVALID_ARGUMENT, "reg_rows", "reg_rows[1] is 3", index: 1)
        // NULL handle, NULL inputs.
        var err = aepo_error()
        #expect(aepo_loss_compute(nil, nil, nil, nil, nil, nil, 0, &err) == AEPO_ERR_NULL_POINTER && argument(err) == "loss")
        #expect(aepo_loss_compute(h.h, nil, nil, nil, nil, nil, 0, &err) == AEPO_ERR_NULL_POINTER && argument(err) == "in")
    }

    /// Mismatched buffer lengths reach the core from Swift callers (and from the bindings'
    /// shape checks); each names the argument.
    @Test func mismatchedShapesInTheCore() throws {
        let e = engine()
        var c = anchorCase()
        c.oldLogp.removeLast()
        #expect(throws: AepoFailure.shape("old_logp", "has 7 elements, expected 8 (B * L)")) { try runLoss(e, c) }
        c = anchorCase()
        c.advantages = [1, 2, 3]
        #expect(throws: AepoFailure.shape("advantages", "has 3 elements, expected 2 (B, per sequence)")) { try runLoss(e, c) }
        c = anchorCase()
        c.entropy = [0, 0]
        #expect(throws: AepoFailure.shape("entropy", "has 2 elements, expected 8 (B * L)")) { try runLoss(e, c) }
        c = anchorCase()
        c.regRows = [0]
        #expect(throws: AepoFailure.shape("reg_rows", "has 1 elements, expected 2 (B)")) { try runLoss(e, c) }
    }

    @Test func structSizeGrowsBothWays() throws {
        let h = try Handle()
        // A larger struct from a newer header is accepted when the extra bytes are 0.
        let size = MemoryLayout<aepo_loss_inputs>.size
        let raw = UnsafeMutableRawPointer.allocate(byteCount: size + 16, alignment: 16)
        defer { raw.deallocate() }
        let p = raw.bindMemory(to: aepo_loss_inputs.self, capacity: 1)
        var err = aepo_error()
        #expect(aepo_loss_inputs_init(p, size + 16, &err) == AEPO_OK)
        #expect(p.pointee.struct_size == size + 16 && p.pointee.dp_size == 1 && p.pointee.global_tokens == -1)
        #expect(p.pointee.reg_alpha == -1 && p.pointee.logp == nil)
        let c = anchorCase()
        let lp = buffer(c.logp), olp = buffer(c.oldLogp), adv = buffer(c.advantages), mask = buffer(c.mask)
        defer { release(lp); release(olp); release(adv); release(mask) }
        p.pointee.B = 2
        p.pointee.L = 4
        p.pointee.logp = lp.baseAddress
        p.pointee.old_logp = olp.baseAddress
        p.pointee.advantages = adv.baseAddress
        p.pointee.mask = mask.baseAddress
        var loss = 0.0
        #expect(aepo_loss_compute(h.h, p, &loss, nil, nil, nil, 0, &err) == AEPO_OK)
        #expect(loss == (try runLoss(engine(), c)).result.loss)
        raw.storeBytes(of: UInt8(1), toByteOffset: size + 3, as: UInt8.self)
        #expect(aepo_loss_compute(h.h, p, &loss, nil, nil, nil, 0, &err) == AEPO_ERR_INVALID_ARGUMENT)
        #expect(argument(err) == "struct_size" && message(err).contains("upgrade"))
        #expect(aepo_loss_inputs_init(nil, size, &err) == AEPO_ERR_NULL_POINTER)
        #expect(aepo_loss_inputs_init(p, 8, &err) == AEPO_ERR_INVALID_ARGUMENT)
    }

    @Test func configJsonIsTheNormalisedDocument() throws {
        let h = try Handle(#"{"loss": {"clip_ratio_high": 0.28, "threads": 2}, "regularizer": {"combine": "weighted"}}"#)
        var len = 0
        var err = aepo_error()
        #expect(aepo_loss_config_json(h.h, nil, 0, &len, &err) == AEPO_OK && len > 0)
        var buf = [CChar](repeating: 0, count: len + 1)
        #expect(aepo_loss_config_json(h.h, &buf, buf.count, &len, &err) == AEPO_OK)
        let text = String(decoding: buf.prefix(len).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var want = Config()
        want.loss.clipRatioHigh = 0.28
        want.loss.threads = 2
        want.regularizer.combine = "weighted"
        #expect(text == ConfigWriter.emit(want))
        #expect(aepo_loss_config_json(h.h, &buf, 4, &len, &err) == AEPO_ERR_BUFFER_TOO_SMALL)
        #expect(aepo_loss_config_json(nil, &buf, buf.count, &len, &err) == AEPO_ERR_NULL_POINTER)
        aepo_loss_free(nil)
    }

    @Test func advantagesAndSelectionThroughTheCABI() throws {
        let h = try Handle()
        let rewards: [Float] = [1, 0, 0, 1, 0.5]
        let groups: [Int64] = [7, 7, 7, 7, 3]
        var out = [Float](repeating: 0, count: 5)
        var err = aepo_error()
        #expect(aepo_loss_advantages(h.h, rewards, groups, 5, nil, &out, &err) == AEPO_OK)
        #expect(relErr(Double(out[0]), 0.866023904) <= 1e-7 && relErr(Double(out[4]), 0.4999995) <= 1e-7)
        var bad = rewards
        bad[2] = .nan
        #expect(aepo_loss_advantages(h.h, bad, groups, 5, nil, &out, &err) == AEPO_ERR_NON_FINITE)
        #expect(argument(err) == "rewards" && err.index == 2)
        #expect(aepo_loss_advantages(h.h, rewards, nil, 5, nil, &out, &err) == AEPO_ERR_NULL_POINTER && argument(err) == "group_ids")
        #expect(aepo_loss_advantages(h.h, rewards, groups, 5, [3, -1, 2, 2, 2], &out, &err) == AEPO_ERR_INVALID_ARGUMENT)
        #expect(argument(err) == "lengths" && err.index == 1)
        #expect(aepo_loss_advantages(h.h, rewards, groups, -2, nil, &out, &err) == AEPO_ERR_SHAPE && argument(err) == "n")

        // Selection: positives are rows 0 and 3 (0.866) and the singleton 4 (0.4999995).
        var k: Int64 = -1, np: Int64 = -1
        #expect(aepo_loss_select_regularizer(h.h, rewards, groups, 5, 60, 0, nil, 0, &k, &np, &err) == AEPO_OK)
        #expect(k == 3 && np == 3)
        var idx = [Int64](repeating: -1, count: 3)
        #expect(aepo_loss_select_regularizer(h.h, rewards, groups, 5, 60, 1, &idx, 3, &k, &np, &err) == AEPO_OK)
        #expect(k == 1 && idx[0] == 0)
        #expect(aepo_loss_select_regularizer(h.h, rewards, groups, 5, 60, 0, &idx, 2, &k, &np, &err) == AEPO_ERR_BUFFER_TOO_SMALL)
        #expect(k == 3 && argument(err) == "indices")
        #expect(aepo_loss_select_regularizer(h.h, rewards, groups, 5, 60, 2, &idx, 3, &k, &np, &err) == AEPO_ERR_INVALID_ARGUMENT)
        #expect(argument(err) == "halve")
        #expect(aepo_loss_select_regularizer(h.h, rewards, groups, 5, -1, 0, &idx, 3, &k, &np, &err) == AEPO_ERR_INVALID_ARGUMENT)
        #expect(argument(err) == "k_max")
    }
}

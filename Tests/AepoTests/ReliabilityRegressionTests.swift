import AepoConfig
@testable import AepoCore
import AepoShim
import CAepoAPI
import Testing

/// Regression tests for the library bugs the fuzz harnesses (Tests/fuzz) found. Each input
/// that once broke an invariant also sits in Tests/fuzz/regressions/<harness>/ and is
/// replayed by `make test`; the tests here pin the intended behaviour itself.
@Suite struct ReliabilityRegressionTests {
    static func configError(_ json: String) -> (status: Int32, argument: String, message: String) {
        var err = aepo_error()
        let bytes = Array(json.utf8)
        let rc = bytes.withUnsafeBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) {
                aepo_config_validate($0, b.count, &err)
            }
        }
        return (rc, LossShimTests.argument(err), LossShimTests.message(err))
    }

    /// `{"": ...}` was read as the root object and `{"loss.threads": 2}` as loss.threads:
    /// a key is one path component, so both are unknown keys.
    @Test(arguments: [
        (#"{"": "x"}"#, "config", #"unknown key """#),
        (#"{"": {"loss": {"threads": 2}}}"#, "config", #"unknown key """#),
        (#"{"loss.threads": 2}"#, "loss.threads", #"unknown key "loss.threads""#),
        (#"{"controller": {"adaptive.kp": 1}}"#, "controller.adaptive.kp", #"unknown key "adaptive.kp""#),
        (#"{"loss": {"": 1}}"#, "loss.", #"unknown key """#),
    ])
    func keysAreSinglePathComponents(_ json: String, _ argument: String, _ fragment: String) {
        let e = Self.configError(json)
        #expect(e.status == AEPO_ERR_CONFIG)
        #expect(e.argument == argument)
        #expect(e.message.contains(fragment), "\(e.message)")
    }

    /// A NUL byte inside a key of a malformed document went into the error path verbatim
    /// and cut the C strings short (empty argument and message).
    @Test func controlBytesInKeysAreEscapedInErrors() {
        let e = Self.configError("{\"a\u{0}b\": [")
        #expect(e.status == AEPO_ERR_CONFIG)
        #expect(e.argument == "a\\u0000b")
        #expect(e.message.hasPrefix("a\\u0000b: malformed JSON"), "\(e.message)")
    }

    /// aepo_fused_head_create left *out untouched on failure, unlike the other create functions.
    @Test func failedFusedCreateClearsOut() {
        var h = OpaquePointer(bitPattern: 0x10)
        var err = aepo_error()
        let json = #"{"fused": {"chunk_n": 0}}"#
        let rc = json.withCString { aepo_fused_head_create($0, json.utf8.count, &h, &err) }
        #expect(rc == AEPO_ERR_CONFIG)
        #expect(h == nil)
    }

    /// A per-sequence advantage of -Inf took the A < 0 branch, which did not flag it, and
    /// the call succeeded with a meaningless loss. Every non-finite advantage of a row with
    /// valid tokens is AEPO_ERR_NON_FINITE naming the row.
    @Test(arguments: [-Float.infinity, Float.infinity, Float.nan])
    func nonFiniteRowAdvantageFails(_ a: Float) throws {
        let h = try LossShimTests.Handle()
        var c = anchorCase()
        c.advantages = [1, a]
        let r = LossShimTests().compute(h.h, c)
        #expect(r.status == AEPO_ERR_NON_FINITE)
        #expect(LossShimTests.argument(r.err) == "advantages" && r.err.index == 1)
    }

    /// B = 2^40 rows of length 0 (no buffer is B long with per-token advantages) made the
    /// aggregation plan allocate per row and trap; rows of length 0 need no per-row state.
    @Test func hugeBatchOfEmptyRowsAllocatesNothing() throws {
        let h = try LossShimTests.Handle()
        var input = aepo_loss_inputs()
        var err = aepo_error()
        #expect(aepo_loss_inputs_init(&input, MemoryLayout<aepo_loss_inputs>.size, &err) == AEPO_OK)
        input.B = 1 << 40
        input.L = 0
        input.adv_per_token = 1
        input.global_tokens = 10
        var loss = -1.0
        var metrics = [Double](repeating: -1, count: Int(AEPO_LOSS_METRIC_COUNT))
        let rc = aepo_loss_compute(h.h, &input, &loss, nil, nil, &metrics, metrics.count, &err)
        #expect(rc == AEPO_OK, "\(LossShimTests.message(err))")
        #expect(loss == 0 && metrics[Int(AEPO_LOSS_METRIC_N_TOKENS)] == 0)
        // Without global counts the empty batch is the documented error, not a trap.
        input.global_tokens = -1
        #expect(aepo_loss_compute(h.h, &input, &loss, nil, nil, nil, 0, &err) == AEPO_ERR_INVALID_ARGUMENT)
    }

    /// Finite inputs whose gradient does not fit a float (|A| near FLT_MAX times a ratio
    /// above 1) wrote -Inf into grad and returned AEPO_OK. The overflow is now
    /// AEPO_ERR_NON_FINITE naming grad and the token; a gradient just inside the range
    /// (which trips the same cheap in-loop test) still succeeds.
    @Test func gradientOverflowIsReported() throws {
        let h = try LossShimTests.Handle(#"{"loss": {"loss_agg_mode": "token-sum", "clip_ratio_high": 10}}"#)
        var c = LossCase(B: 1, L: 2, logp: [0, 0], oldLogp: [0, 0], advantages: [3.4e38], mask: [1, 1])
        var r = LossShimTests().compute(h.h, c)
        #expect(r.status == AEPO_OK, "\(LossShimTests.message(r.err))")
        #expect(r.grad[0] == -3.4e38 && r.grad[1] == -3.4e38)
        c.logp = [0, 1]
        r = LossShimTests().compute(h.h, c)
        #expect(r.status == AEPO_ERR_NON_FINITE)
        #expect(LossShimTests.argument(r.err) == "grad" && r.err.index == 1, "\(LossShimTests.message(r.err))")
    }

    /// Dr.GRPO advantages (r - mean) of finite rewards near ±FLT_MAX came back as +Inf with
    /// AEPO_OK.
    @Test func advantageOverflowIsReported() throws {
        let h = try LossShimTests.Handle(#"{"advantage": {"norm_adv_by_std_in_grpo": false}}"#)
        let rewards: [Float] = [3.4e38, -3.4e38, -3.4e38]
        let groups: [Int64] = [0, 0, 0]
        var out = [Float](repeating: 0, count: 3)
        var err = aepo_error()
        let rc = aepo_loss_advantages(h.h, rewards, groups, 3, nil, &out, &err)
        #expect(rc == AEPO_ERR_NON_FINITE)
        #expect(LossShimTests.argument(err) == "out" && err.index == 0, "\(LossShimTests.message(err))")
    }
}

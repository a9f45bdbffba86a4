@testable import AepoCore
import Testing

/// rloo, reinforce_plus_plus_baseline and grpo_passk: invariants and errors (the values
/// themselves are pinned by Tests/fixtures/loss_modes.json).
@Suite struct LossEstimatorTests {
    func section(_ estimator: String, _ edit: (inout AdvantageConfig) -> Void = { _ in }) -> AdvantageConfig {
        var a = AdvantageConfig()
        a.estimator = estimator
        edit(&a)
        return a
    }

    func expectFailure(_ body: () throws(AepoFailure) -> Void, _ kind: AepoFailure.Kind, _ argument: String,
                       _ fragment: String, index: Int? = nil) {
        do {
            try body()
            Issue.record("accepted; expected an error naming \(argument)")
        } catch {
            #expect(error.kind == kind && error.argument == argument && error.message.contains(fragment),
                    "\(error.argument): \(error.message)")
            if let index { #expect(error.index == index, "index \(error.index)") }
        }
    }

    @Test func rlooIsRewardMinusTheOthersMean() throws {
        let r: [Float] = [0.25, 1, 0.5, 0.75, 2, -1]
        let ids: [Int64] = [3, 3, 3, 3, 8, 8]
        let a = try Advantages.compute(section("rloo"), rewards: r, groupIds: ids)
        for i in 0..<4 {
            let others = (0..<4).filter { $0 != i }.map { Double(r[$0]) }.reduce(0, +) / 3
            #expect(abs(Double(a[i]) - (Double(r[i]) - others)) <= 1e-7)
        }
        #expect(a[4] == 3 && a[5] == -3)
        #expect(try Advantages.compute(section("rloo"), rewards: [1, 1, 1], groupIds: [0, 0, 0]) == [0, 0, 0])
    }

    @Test func reinforcePlusPlusBaselineIsWhiteOverTokens() throws {
        let r: [Float] = [1, 0, 0.5, 0.2, 0.9, 0.4, 0.7]
        let ids: [Int64] = [1, 1, 1, 2, 2, 3, 4]
        let lengths: [Int64] = [12, 3, 7, 30, 1, 9, 0]
        let a = try Advantages.compute(section("reinforce_plus_plus_baseline"), rewards: r, groupIds: ids, lengths: lengths)
        // Over the valid tokens: mean 0, Bessel variance 1 (up to the 1e-8 terms and float32).
        let n = Double(lengths.reduce(0, +))
        let mean = zip(a, lengths).map { Double($0) * Double($1) }.reduce(0, +) / n
        let variance = zip(a, lengths).map { (Double($0) - mean) * (Double($0) - mean) * Double($1) }.reduce(0, +) / (n - 1)
        #expect(abs(mean) <= 1e-7 && abs(variance - 1) <= 1e-6, "mean \(mean), variance \(variance)")
        #expect(a[6] == 0)  // no valid token
        // The order of responses does not matter.
        let perm = [6, 2, 0, 5, 1, 4, 3]
        let b = try Advantages.compute(section("reinforce_plus_plus_baseline"), rewards: perm.map { r[$0] },
                                       groupIds: perm.map { ids[$0] }, lengths: perm.map { lengths[$0] })
        for (j, i) in perm.enumerated() { #expect(abs(b[j] - a[i]) <= 1e-6) }
    }

    @Test func grpoPasskRewardsOnlyTheBest() throws {
        let r: [Float] = [0.1, 0.7, 0.3, 0.7, 1, 1, 1]
        let ids: [Int64] = [4, 4, 4, 4, 9, 9, 9]
        let raw = try Advantages.compute(section("grpo_passk") { $0.normAdvByStdInGrpo = false }, rewards: r, groupIds: ids)
        // Group 4: 0.7 twice, the first (index 1) is the best and gets 0.7 - 0.7 = 0.
        #expect(raw == [0, 0, 0, 0, 0, 0, 0])
        let r2: [Float] = [0.1, 0.9, 0.3, 0.7]
        let a = try Advantages.compute(section("grpo_passk"), rewards: r2, groupIds: [0, 0, 0, 0])
        let sd = ((0.16 + 0.16 + 0.04 + 0.04) / 3.0).squareRoot()  // about the mean 0.5
        #expect(a[0] == 0 && a[2] == 0 && a[3] == 0)
        #expect(abs(Double(a[1]) - Double(Float(0.9) - Float(0.7)) / (sd + 1e-6)) <= 1e-6)
    }

    @Test func errorsNameTheArgument() {
        expectFailure({ () throws(AepoFailure) in
            _ = try Advantages.compute(section("grpo_passk"), rewards: [1, 0, 0.5], groupIds: [2, 2, 5])
        }, .invalidArgument, "group_ids", "group 5 (response 2) has one response", index: 2)
        expectFailure({ () throws(AepoFailure) in
            _ = try Advantages.compute(section("reinforce_plus_plus_baseline"), rewards: [1, 0], groupIds: [0, 0])
        }, .invalidArgument, "lengths", "is required")
        expectFailure({ () throws(AepoFailure) in
            _ = try Advantages.compute(section("reinforce_plus_plus_baseline"), rewards: [1, 0], groupIds: [0, 0],
                                       lengths: [1, 0])
        }, .invalidArgument, "lengths", "at least 2")
        expectFailure({ () throws(AepoFailure) in
            _ = try Advantages.compute(section("reinforce_plus_plus_baseline"), rewards: [1, 0], groupIds: [0, 0],
                                       lengths: [1, -3])
        }, .invalidArgument, "lengths", "lengths[1] is -3", index: 1)
        expectFailure({ () throws(AepoFailure) in
            _ = try Advantages.compute(section("rloo"), rewards: [1, .nan], groupIds: [0, 0])
        }, .nonFinite, "rewards", "rewards[1]", index: 1)
        // The regulariser selection has no lengths: with reinforce_plus_plus_baseline it fails
        // naming them; with the other estimators it works.
        var cfg = Config()
        cfg.advantage.estimator = "reinforce_plus_plus_baseline"
        let rewards = buffer([Float(1), 0, 1, 1]), ids = buffer([Int64(0), 0, 1, 1])
        defer { release(rewards); release(ids) }
        expectFailure({ () throws(AepoFailure) in
            _ = try Regularizer.select(cfg, rewards: rewards, groupIds: ids, kMax: 4, halve: false)
        }, .invalidArgument, "lengths", "is required")
        for est in ["rloo", "grpo_passk"] {
            cfg.advantage.estimator = est
            #expect((try? Regularizer.select(cfg, rewards: rewards, groupIds: ids, kMax: 4, halve: false))?.indices == [0])
        }
    }
}

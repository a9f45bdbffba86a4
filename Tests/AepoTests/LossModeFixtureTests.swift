import AepoConfig
@testable import AepoCore
import Foundation
import Testing

/// The hand-derived cases of Tests/fixtures/loss_modes.json (scripts/make_loss_fixtures.py,
/// numpy float64 from the formulas): every new policy-loss mode and advantage estimator
/// reproduces them to 1e-7 relative.
@Suite struct LossModeFixtureTests {
    static let tol = 1e-7

    nonisolated(unsafe) static let document: [String: Any] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fixtures/loss_modes.json")
        guard let data = try? Data(contentsOf: url),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
        return obj
    }()

    static func cases(_ key: String) -> [[String: Any]] { document[key] as? [[String: Any]] ?? [] }
    static var lossCaseNames: [String] { cases("loss_cases").compactMap { $0["name"] as? String } }
    static var advantageCaseNames: [String] { cases("advantage_cases").compactMap { $0["name"] as? String } }

    static func config(_ c: [String: Any]) throws -> Config {
        let data = try JSONSerialization.data(withJSONObject: c["config"] ?? [:])
        return try ConfigCodec.parse(String(decoding: data, as: UTF8.self))
    }

    static func floats(_ v: Any?) -> [Float] { (v as? [NSNumber])?.map { $0.floatValue } ?? [] }
    static func doubles(_ v: Any?) -> [Double] { (v as? [NSNumber])?.map { $0.doubleValue } ?? [] }
    static func ints(_ v: Any?) -> [Int] { (v as? [NSNumber])?.map { $0.intValue } ?? [] }

    static func lossCase(_ c: [String: Any]) -> LossCase {
        var lc = LossCase(B: c["B"] as? Int ?? 0, L: c["L"] as? Int ?? 0, logp: floats(c["logp"]),
                          oldLogp: floats(c["old_logp"]), advantages: floats(c["advantages"]),
                          perToken: (c["adv_per_token"] as? Int ?? 0) == 1,
                          mask: ints(c["mask"]).map { UInt8($0) })
        if c["ref_logp"] != nil { lc.ref = floats(c["ref_logp"]) }
        if c["is_weights"] != nil { lc.isw = floats(c["is_weights"]) }
        if c["entropy"] != nil { lc.entropy = floats(c["entropy"]) }
        if c["reg_rows"] != nil { lc.regRows = ints(c["reg_rows"]).map { UInt8($0) } }
        lc.step = Int64(c["step"] as? Int ?? 0)
        return lc
    }

    @Test func fixtureFileIsPresent() {
        #expect(Self.lossCaseNames.count >= 12 && Self.advantageCaseNames.count >= 6,
                "Tests/fixtures/loss_modes.json is missing or incomplete")
        let modes = Set(Self.cases("loss_cases").compactMap { (($0["config"] as? [String: Any])?["loss"] as? [String: Any])?["policy_loss"] as? String })
        #expect(modes == ["gspo", "cispo", "gpg", "reinforce", "clip_cov", "kl_cov"])
        let estimators = Set(Self.cases("advantage_cases").compactMap { (($0["config"] as? [String: Any])?["advantage"] as? [String: Any])?["estimator"] as? String })
        #expect(estimators == ["rloo", "reinforce_plus_plus_baseline", "grpo_passk"])
    }

    @Test(arguments: LossModeFixtureTests.lossCaseNames)
    func lossCase(name: String) throws {
        let c = try #require(Self.cases("loss_cases").first { $0["name"] as? String == name })
        let cfg = try Self.config(c)
        let lc = Self.lossCase(c)
        let e = try Loss(config: cfg)
        let r = try runLoss(e, lc)
        let want = try #require(c["expect"] as? [String: Any])
        func check(_ what: String, _ got: Double, _ ref: Double) {
            let err = relErr(got, ref)
            #expect(err <= Self.tol, "\(name) \(what): got \(got), want \(ref), relative \(err)")
        }
        check("loss", r.result.loss, (want["loss"] as? Double) ?? .nan)
        check("pg_clipfrac", r.result[.pgClipfrac], (want["pg_clipfrac"] as? Double) ?? .nan)
        check("pg_clipfrac_lower", r.result[.pgClipfracLower], (want["pg_clipfrac_lower"] as? Double) ?? .nan)
        check("ppo_kl", r.result[.ppoKl], (want["ppo_kl"] as? Double) ?? .nan)
        let g = Self.doubles(want["grad"])
        #expect(g.count == r.grad.count)
        var worst = 0.0
        for i in 0..<min(g.count, r.grad.count) {
            let e = g[i] == 0 ? abs(Double(r.grad[i])) : abs(Double(r.grad[i]) - g[i]) / abs(g[i])
            worst = max(worst, e)
            #expect(e <= Self.tol, "\(name) grad[\(i)]: got \(r.grad[i]), want \(g[i])")
        }
        if want["selected"] != nil {
            let selected = try selection(e, lc)
            #expect(selected == Self.ints(want["selected"]), "\(name): selected \(selected)")
        }
        print("fixture \(name): loss \(r.result.loss), max relative grad error \(worst)")
    }

    @Test(arguments: LossModeFixtureTests.advantageCaseNames)
    func advantageCase(name: String) throws {
        let c = try #require(Self.cases("advantage_cases").first { $0["name"] as? String == name })
        let cfg = try Self.config(c)
        let lengths = c["lengths"].map { Self.ints($0).map(Int64.init) }
        let got = try Advantages.compute(cfg.advantage, rewards: Self.floats(c["rewards"]),
                                         groupIds: Self.ints(c["group_ids"]).map(Int64.init), lengths: lengths)
        let want = Self.doubles(c["expect"])
        #expect(got.count == want.count)
        for i in 0..<min(got.count, want.count) {
            #expect(relErr(Double(got[i]), want[i]) <= Self.tol, "\(name)[\(i)]: got \(got[i]), want \(want[i])")
        }
    }
}

/// The tokens the covariance selection of `e` picks on `c` (plan and prepare only).
func selection(_ e: Loss, _ c: LossCase) throws(AepoFailure) -> [Int] {
    let lp = buffer(c.logp), olp = buffer(c.oldLogp), adv = buffer(c.advantages), mask = buffer(c.mask)
    let ref = c.ref.map(buffer), isw = c.isw.map(buffer), ent = c.entropy.map(buffer), reg = c.regRows.map(buffer)
    defer { release(lp); release(olp); release(adv); release(mask); release(ref); release(isw); release(ent); release(reg) }
    let batch = LossBatch(rows: c.B, length: c.L, logp: lp, oldLogp: olp, advantages: adv,
                          advantagesPerToken: c.perToken, mask: mask, refLogp: ref, isWeights: isw, entropy: ent,
                          regRows: reg, regAlpha: c.regAlpha, globalTokens: c.globalTokens, globalSeqs: c.globalSeqs,
                          globalRegTokens: c.globalRegTokens, dpSize: c.dp, step: c.step)
    var plan = try e.plan(batch)
    try e.prepare(batch, &plan)
    return plan.selected
}

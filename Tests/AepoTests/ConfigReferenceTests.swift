import Foundation
@testable import AepoConfig
@testable import AepoCore
import Testing

/// docs/CONFIG.md's key reference is generated from the schema rows (`ConfigSchema.reference`).
/// These tests keep the committed page equal to it (AEPO_UPDATE_DOCS=1 rewrites it), check
/// that it covers every key of the default document, and that each cross-key rule it
/// states is enforced with the key it names.
@Suite struct ConfigReferenceTests {
    static let page = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("docs/CONFIG.md")
    static let begin = "<!-- config-reference:begin (generated from ConfigSchema; AEPO_UPDATE_DOCS=1 rewrites it) -->\n"
    static let end = "<!-- config-reference:end -->"

    @Test func pageIsCurrent() throws {
        var doc = try String(contentsOf: Self.page, encoding: .utf8)
        guard let b = doc.range(of: Self.begin), let e = doc.range(of: Self.end, range: b.upperBound..<doc.endIndex) else {
            Issue.record("docs/CONFIG.md has no config-reference begin/end markers")
            return
        }
        let want = ConfigSchema.reference()
        let have = String(doc[b.upperBound..<e.lowerBound])
        if have == want { return }
        if ProcessInfo.processInfo.environment["AEPO_UPDATE_DOCS"] == "1" {
            doc.replaceSubrange(b.upperBound..<e.lowerBound, with: want)
            try doc.write(to: Self.page, atomically: true, encoding: .utf8)
            return
        }
        let diff = zip(have.split(separator: "\n"), want.split(separator: "\n")).first { $0 != $1 }
        Issue.record(Comment(rawValue: "docs/CONFIG.md's key reference is stale; regenerate with AEPO_UPDATE_DOCS=1 "
            + "swift test --filter ConfigReferenceTests. First difference:\n  page: \(diff?.0 ?? "(length)")\n  "
            + "now:  \(diff?.1 ?? "(length)")"))
    }

    /// Every leaf key of the default document has a row with its default and a meaning.
    @Test func everyDefaultKeyHasARow() throws {
        let json = ConfigWriter.emit(Config())
        let root = try #require(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        var leaves: [String] = []
        func walk(_ obj: [String: Any], _ prefix: String) {
            for (k, v) in obj {
                let path = prefix.isEmpty ? k : prefix + "." + k
                if let sub = v as? [String: Any] { walk(sub, path) } else { leaves.append(path) }
            }
        }
        walk(root, "")
        leaves.removeAll { $0 == "schema_version" }
        let text = ConfigSchema.reference()
        #expect(leaves.count == ConfigSchema.fields.count)
        for key in leaves {
            let row = text.split(separator: "\n").first { $0.hasPrefix("| `\(key)` |") }
            #expect(row != nil, "\(key) has no row")
            guard let row else { continue }
            let cells = row.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            #expect(cells.count == 4 && cells.allSatisfy { !$0.isEmpty }, "\(key): \(row)")
        }
    }

    /// Each cross-key rule the page states is enforced, and its error names the stated key.
    @Test func crossKeyRulesAreEnforcedOnTheirKey() throws {
        var broken: [String: Config] = [:]
        var c = Config()
        c.loss.lossAggMode = "seq-mean-token-sum-norm"
        broken["loss.loss_scale_factor"] = c
        c = Config()
        c.loss.policyLoss = "gspo"
        broken["loss.loss_agg_mode"] = c
        c = Config()
        c.loss.clipCovUb = c.loss.clipCovLb
        broken["loss.clip_cov_ub"] = c
        c = Config()
        c.controller.adaptive.tMax = c.controller.adaptive.tMin
        broken["controller.adaptive.t_max"] = c
        c = Config()
        c.controller.mode = "adaptive"
        c.controller.adaptive.actuator = "alpha"
        c.controller.tHigh = 1
        broken["controller.t_high"] = c
        c.controller.tHigh = 1.2
        c.controller.tLow = 1
        broken["controller.t_low"] = c
        c = Config()
        c.controller.schedule.kind = "cosine"
        c.controller.schedule.startStep = 5
        c.controller.schedule.endStep = 4
        broken["controller.schedule.end_step"] = c
        c = Config()
        c.controller.schedule.kind = "piecewise"
        broken["controller.schedule.points"] = c
        #expect(Set(broken.keys) == Set(ConfigSchema.crossFieldRules.map(\.key)))
        for (key, cfg) in broken {
            do {
                try ConfigSchema.validate(cfg)
                Issue.record("\(key): the rule is not enforced")
            } catch {
                #expect(error.kind == .config && error.argument == key, "\(key): \(error.message)")
            }
        }
        try ConfigSchema.validate(Config())
    }
}

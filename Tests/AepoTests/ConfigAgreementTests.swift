@testable import AepoCore
import AepoShim
import CAepoAPI
import Testing

/// Validation and creation agree: for every key of the schema and a set of probe values
/// around its bounds, `aepo_config_validate` accepts the document exactly when every
/// create call (loss, sampler, controller, fused head) accepts it, and both name the same
/// path when they refuse. A rule written in a constructor but not in the schema shows up
/// here as a document that validates and then fails to create.
@Suite struct ConfigAgreementTests {
    /// The JSON literal of each probe for a field.
    static func probes(_ f: ConfigField) -> [String] {
        switch f.kind {
        case .bool:
            return ["true", "false", "1", "\"yes\""]
        case let .int(lo, hi):
            var v: [Int64] = [lo, hi, 0, 1, -1, 2, 256, 257, 1 << 20, (1 << 24) + 1, (1 << 30) + 1]
            if lo > Int64.min { v.append(lo - 1) }
            if hi < Int64.max { v.append(hi + 1) }
            return Set(v).sorted().map { "\($0)" } + ["1.5"]
        case let .real(b):
            var v: [Double] = [0, 1, -1, 0.5, 1e-31, 1e-30, 1e-300, 5e-324, 1e300, 2, 10, 0.999, 1.0001]
            for x in [b.lo, b.hi].compactMap({ $0 }) {
                v += [x, x.nextUp, x.nextDown, x + 1e-9, x - 1e-9]
            }
            return Set(v.filter(\.isFinite)).sorted().map { "\($0)" }
        case let .name(names):
            return names.map { "\"\($0)\"" } + ["\"bogus\"", "3"]
        case .points:
            return ["[]", #"[{"step": 0, "target": 0.5}]"#, #"[{"step": 5, "target": -1}]"#]
        }
    }

    /// `{"a": {"b": value}}` for the path "a.b".
    static func document(_ path: String, _ value: String) -> String {
        let parts = path.split(separator: ".").map(String.init)
        var text = value
        for p in parts.reversed() { text = "{\"\(p)\": \(text)}" }
        return text
    }

    static func status(_ call: (UnsafeMutablePointer<aepo_error>) -> Int32) -> (Int32, String) {
        var err = aepo_error()
        let rc = withUnsafeMutablePointer(to: &err) { call($0) }
        let arg = withUnsafeBytes(of: err.argument) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        return (rc, arg)
    }

    @Test func validationAndCreationAgreeForEveryKey() {
        var checked = 0
        var disagreements: [String] = []
        for f in ConfigSchema.fields {
            for v in Self.probes(f) {
                let doc = Self.document(f.path, v)
                let bytes = Array(doc.utf8)
                let (vrc, varg) = bytes.withUnsafeBufferPointer { b in
                    b.withMemoryRebound(to: CChar.self) { c in
                        Self.status { aepo_config_validate(c.baseAddress, c.count, $0) }
                    }
                }
                var creates: [(String, Int32, String)] = []
                bytes.withUnsafeBufferPointer { b in
                    b.withMemoryRebound(to: CChar.self) { c in
                        let p = c.baseAddress
                        let n = c.count
                        var h: OpaquePointer?
                        var r = Self.status { aepo_loss_create(p, n, &h, $0) }
                        creates.append(("loss", r.0, r.1))
                        aepo_loss_free(h)
                        h = nil
                        r = Self.status { aepo_sampler_create(p, n, &h, $0) }
                        creates.append(("sampler", r.0, r.1))
                        aepo_sampler_free(h)
                        h = nil
                        r = Self.status { aepo_controller_create(p, n, &h, $0) }
                        creates.append(("controller", r.0, r.1))
                        aepo_controller_free(h)
                        h = nil
                        r = Self.status { aepo_fused_head_create(p, n, &h, $0) }
                        creates.append(("fused", r.0, r.1))
                        aepo_fused_head_free(h)
                    }
                }
                checked += 1
                for (kind, rc, arg) in creates {
                    if (vrc == AEPO_OK) != (rc == AEPO_OK) {
                        disagreements.append("\(doc): validate \(vrc) (\(varg)), \(kind) create \(rc) (\(arg))")
                    } else if vrc != AEPO_OK && (rc != vrc || arg != varg) {
                        disagreements.append("\(doc): validate \(vrc) names \(varg), \(kind) create \(rc) names \(arg)")
                    }
                }
            }
        }
        print("config agreement: \(checked) documents over \(ConfigSchema.fields.count) keys, "
            + "\(disagreements.count) disagreements")
        #expect(disagreements.isEmpty, "\(disagreements.prefix(20).joined(separator: "\n"))")
        #expect(checked > 500)
    }
}

/// The key reference of docs/CONFIG.md, generated from the schema rows: every key with its
/// type and accepted values, its default and its meaning, then the cross-key rules. A test
/// checks that the committed page holds exactly this text.
extension ConfigSchema {
    /// Markdown: the keys table and the cross-key rules, for the config `defaults`.
    public static func reference(defaults: Config = Config()) -> String {
        var out = "| key | accepted | default | meaning |\n|---|---|---|---|\n"
        for f in fields.sorted(by: { sectionOrder($0.path) < sectionOrder($1.path) }) {
            var accepted = f.expectation
            if case let .real(b) = f.kind, let floor = b.floor { accepted += ", at least \(formatReal(floor))" }
            out += "| `\(f.path)` | \(accepted) | \(defaultText(f.get(defaults))) | \(f.doc) |\n"
        }
        out += "\nCross-key rules (checked after every key passed its own check; the error names "
            + "the first key):\n\n"
        for r in crossFieldRules { out += "- `\(r.key)` \(r.rule).\n" }
        return out
    }

    /// Sections in the order of the document (loss, advantage, regularizer, controller,
    /// sampler, fused), then keys in lexical order within a section, nested objects last.
    static func sectionOrder(_ path: String) -> String {
        let sections = ["loss", "advantage", "regularizer", "controller", "sampler", "fused"]
        let parts = path.split(separator: ".")
        let rank = sections.firstIndex(of: String(parts[0])) ?? sections.count
        return "\(rank)." + (parts.count > 2 ? "~" : "") + parts.dropFirst().joined(separator: ".")
    }

    /// A default as it appears in the document.
    static func defaultText(_ v: ConfigValue) -> String {
        switch v {
        case let .bool(b): return "`\(b)`"
        case let .int(i): return "`\(i)`"
        case let .real(x): return "`\(formatReal(x))`"
        case let .string(s): return "`\"\(s)\"`"
        case let .points(p): return p.isEmpty ? "`[]`" : "\(p.count) points"
        }
    }
}

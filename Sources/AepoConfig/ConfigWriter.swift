import AepoCore

/// Canonical JSON text of a config: two-space indentation, keys sorted bytewise, reals in
/// shortest round-trip form, integers as integers.
public enum ConfigWriter {
    indirect enum Node {
        case object([String: Node])
        case value(ConfigValue)
        case integer(Int64)
    }

    public static func emit(_ c: Config) -> String {
        var root: [String: Node] = ["schema_version": .integer(Int64(Config.schemaVersion))]
        for f in ConfigSchema.fields {
            insert(&root, f.path.split(separator: ".").map(String.init)[...], f.get(c))
        }
        var out = ""
        write(.object(root), indent: 0, into: &out)
        out += "\n"
        return out
    }

    private static func insert(_ obj: inout [String: Node], _ parts: ArraySlice<String>, _ v: ConfigValue) {
        guard let head = parts.first else { return }
        if parts.count == 1 { obj[head] = .value(v); return }
        var child: [String: Node] = [:]
        if case let .object(existing)? = obj[head] { child = existing }
        insert(&child, parts.dropFirst(), v)
        obj[head] = .object(child)
    }

    private static func write(_ n: Node, indent: Int, into out: inout String) {
        switch n {
        case let .object(d):
            if d.isEmpty { out += "{}"; return }
            out += "{\n"
            let keys = d.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
            for (i, k) in keys.enumerated() {
                guard let child = d[k] else { continue }
                out += String(repeating: " ", count: indent + 2) + quote(k) + ": "
                write(child, indent: indent + 2, into: &out)
                out += i + 1 < keys.count ? ",\n" : "\n"
            }
            out += String(repeating: " ", count: indent) + "}"
        case let .integer(v):
            out += String(v)
        case let .value(v):
            switch v {
            case let .bool(b): out += b ? "true" : "false"
            case let .int(x): out += String(x)
            case let .real(x): out += formatReal(x)
            case let .string(s): out += quote(s)
            case let .points(pts):
                if pts.isEmpty { out += "[]"; return }
                out += "[\n"
                for (i, p) in pts.enumerated() {
                    out += String(repeating: " ", count: indent + 2)
                    out += "{\"step\": \(p.step), \"target\": \(formatReal(p.target))}"
                    out += i + 1 < pts.count ? ",\n" : "\n"
                }
                out += String(repeating: " ", count: indent) + "]"
            }
        }
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let h = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}

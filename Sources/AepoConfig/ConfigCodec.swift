import AepoCore
import CJansson

/// JSON <-> `Config`, using Jansson for parsing and a small canonical writer for output
/// (sorted keys, shortest round-trip reals), so default -> emit -> parse -> emit is
/// byte-identical. All rules about values come from `ConfigSchema`; this file only maps
/// JSON types and reports where in the document something went wrong.
public enum ConfigCodec {
    /// Parses and validates a whole document. Empty input means all defaults.
    public static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws(AepoFailure) -> Config {
        var config = Config()
        if bytes.isEmpty { return config }
        guard let base = bytes.baseAddress else { return config }
        var jerr = json_error_t()
        let flags = Int(JSON_REJECT_DUPLICATES)
        let root = base.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
            json_loadb($0, bytes.count, flags, &jerr)
        }
        guard let root else { throw malformed(jerr, bytes) }
        defer { json_decref(root) }
        guard root.pointee.type == JSON_OBJECT else {
            throw .config("config", "the top level must be a JSON object, got \(describe(root))")
        }
        let fields = ConfigSchema.fields
        var byPath: [String: ConfigField] = [:]
        var objectPaths: Set<String> = [""]
        for f in fields {
            byPath[f.path] = f
            var prefix = ""
            for part in f.path.split(separator: ".").dropLast() {
                prefix = prefix.isEmpty ? String(part) : prefix + "." + part
                objectPaths.insert(prefix)
            }
        }
        try walk(root, prefix: "", byPath: byPath, objectPaths: objectPaths, into: &config)
        try ConfigSchema.checkCrossField(config)
        return config
    }

    public static func parse(_ text: String) throws(AepoFailure) -> Config {
        let bytes = Array(text.utf8)
        var result: Result<Config, AepoFailure> = .success(Config())
        bytes.withUnsafeBufferPointer { buf in
            do throws(AepoFailure) { result = .success(try parse(buf)) } catch { result = .failure(error) }
        }
        return try result.get()
    }

    // MARK: - walking the document

    private static func walk(_ obj: UnsafeMutablePointer<json_t>, prefix: String,
                             byPath: [String: ConfigField], objectPaths: Set<String>,
                             into config: inout Config) throws(AepoFailure) {
        var it = json_object_iter(obj)
        while let cur = it {
            let key = String(cString: json_object_iter_key(cur))
            guard let value = json_object_iter_value(cur) else { break }
            let path = prefix.isEmpty ? key : prefix + "." + key
            if path == "schema_version" {
                guard value.pointee.type == JSON_INTEGER else {
                    throw .config(path, "expected the integer \(Config.schemaVersion), got \(describe(value))")
                }
                let v = json_integer_value(value)
                if v != Int64(Config.schemaVersion) {
                    throw .config(path, "unsupported version \(v); this library reads schema_version \(Config.schemaVersion)")
                }
            } else if objectPaths.contains(path) {
                guard value.pointee.type == JSON_OBJECT else {
                    throw .config(path, "expected an object, got \(describe(value))")
                }
                try walk(value, prefix: path, byPath: byPath, objectPaths: objectPaths, into: &config)
            } else if let field = byPath[path] {
                let v = try convert(value, field)
                try field.check(v)
                field.set(&config, v)
            } else {
                let keys = validKeys(under: prefix, byPath: byPath, objectPaths: objectPaths)
                let owner = prefix.isEmpty ? "the top level" : prefix
                throw .config(path, "unknown key \"\(key)\"; \(owner) takes " + keys.joined(separator: ", "))
            }
            it = json_object_iter_next(obj, cur)
        }
    }

    private static func validKeys(under prefix: String, byPath: [String: ConfigField],
                                  objectPaths: Set<String>) -> [String] {
        var out = Set<String>()
        let all = Array(byPath.keys) + Array(objectPaths) + ["schema_version"]
        for p in all where !p.isEmpty {
            if prefix.isEmpty {
                out.insert(String(p.split(separator: ".")[0]))
            } else if p.hasPrefix(prefix + ".") {
                let rest = p.dropFirst(prefix.count + 1)
                out.insert(String(rest.split(separator: ".")[0]))
            }
        }
        return out.sorted()
    }

    private static func convert(_ v: UnsafeMutablePointer<json_t>, _ f: ConfigField) throws(AepoFailure) -> ConfigValue {
        let t = v.pointee.type
        switch f.kind {
        case .bool:
            if t == JSON_TRUE { return .bool(true) }
            if t == JSON_FALSE { return .bool(false) }
        case .int:
            if t == JSON_INTEGER { return .int(json_integer_value(v)) }
            if t == JSON_REAL {
                throw .config(f.path, "expected \(f.expectation), got the real \(formatReal(json_real_value(v))); integer keys do not accept reals")
            }
        case .real:
            if t == JSON_INTEGER { return .real(Double(json_integer_value(v))) }
            if t == JSON_REAL { return .real(json_real_value(v)) }
        case .name:
            if t == JSON_STRING {
                let n = json_string_length(v)
                let s = json_string_value(v).map { p in
                    String(decoding: UnsafeRawBufferPointer(start: p, count: n), as: UTF8.self)
                } ?? ""
                return .string(s)
            }
        case .points:
            if t == JSON_ARRAY { return .points(try convertPoints(v, f.path)) }
        }
        throw .config(f.path, "expected \(f.expectation), got \(describe(v))")
    }

    private static func convertPoints(_ arr: UnsafeMutablePointer<json_t>, _ path: String) throws(AepoFailure) -> [SchedulePoint] {
        var pts: [SchedulePoint] = []
        let n = json_array_size(arr)
        for i in 0..<n {
            let p = "\(path)[\(i)]"
            guard let item = json_array_get(arr, i), item.pointee.type == JSON_OBJECT else {
                throw .config(p, "expected an object {\"step\": integer, \"target\": real}")
            }
            var step: Int64?
            var target: Double?
            var it = json_object_iter(item)
            while let cur = it {
                let key = String(cString: json_object_iter_key(cur))
                guard let v = json_object_iter_value(cur) else { break }
                switch key {
                case "step":
                    guard v.pointee.type == JSON_INTEGER else {
                        throw .config("\(p).step", "expected an integer >= 0, got \(describe(v))")
                    }
                    step = json_integer_value(v)
                case "target":
                    if v.pointee.type == JSON_INTEGER { target = Double(json_integer_value(v)) }
                    else if v.pointee.type == JSON_REAL { target = json_real_value(v) }
                    else { throw .config("\(p).target", "expected a real >= 0, got \(describe(v))") }
                default:
                    throw .config("\(p).\(key)", "unknown key \"\(key)\"; a schedule point takes step, target")
                }
                it = json_object_iter_next(item, cur)
            }
            guard let step else { throw .config("\(p).step", "missing; a schedule point needs step and target") }
            guard let target else { throw .config("\(p).target", "missing; a schedule point needs step and target") }
            pts.append(SchedulePoint(step: step, target: target))
        }
        return pts
    }

    /// A JSON value as error messages name it ("the integer 3", "an object").
    static func describe(_ v: UnsafeMutablePointer<json_t>) -> String {
        switch v.pointee.type {
        case JSON_OBJECT: return "an object"
        case JSON_ARRAY: return "an array"
        case JSON_STRING: return "a string"
        case JSON_INTEGER: return "the integer \(json_integer_value(v))"
        case JSON_REAL: return "the real \(formatReal(json_real_value(v)))"
        case JSON_TRUE: return "true"
        case JSON_FALSE: return "false"
        case JSON_NULL: return "null"
        default: return "an unknown JSON value"
        }
    }

    /// The text of a Jansson error.
    static func errorText(_ jerr: json_error_t) -> String {
        var e = jerr
        return withUnsafeBytes(of: &e.text) { raw -> String in
            let b = raw.bindMemory(to: UInt8.self)
            let n = b.firstIndex(of: 0) ?? b.count
            return String(decoding: UnsafeBufferPointer(rebasing: b[0..<n]), as: UTF8.self)
        }
    }

    private static func malformed(_ jerr: json_error_t, _ bytes: UnsafeBufferPointer<UInt8>) -> AepoFailure {
        let text = errorText(jerr)
        // Jansson's position is just past the offending token; scan up to its start.
        let pos = max(0, min(Int(jerr.position) - 1, bytes.count))
        let path = JSONPathScanner.path(in: bytes, at: pos)
        let arg = path.isEmpty ? "config" : path
        let what = text.contains("duplicate object key") ? "duplicate key" : "malformed JSON"
        return .config(arg, "\(what) at line \(jerr.line), column \(jerr.column): \(text)")
    }
}

/// Finds the JSON path ("controller.t_high") that encloses a byte offset, so that errors
/// found by the parser (duplicates, syntax) can name where they are. It tracks objects,
/// arrays and the last key read at each level; it never fails, and returns "" when it
/// cannot tell.
enum JSONPathScanner {
    private enum Frame { case object(key: String?), array(index: Int) }

    static func path(in b: UnsafeBufferPointer<UInt8>, at offset: Int) -> String {
        var stack: [Frame] = []
        var i = 0
        var expectingKey = false
        let end = min(offset, b.count)
        while i < end {
            let c = b[i]
            switch c {
            case UInt8(ascii: "{"):
                stack.append(.object(key: nil)); expectingKey = true
            case UInt8(ascii: "["):
                stack.append(.array(index: 0)); expectingKey = false
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if !stack.isEmpty { stack.removeLast() }
                expectingKey = false
            case UInt8(ascii: ","):
                if case let .array(n)? = stack.last { stack[stack.count - 1] = .array(index: n + 1) }
                if case .object? = stack.last { expectingKey = true }
            case UInt8(ascii: ":"):
                expectingKey = false
            case UInt8(ascii: "\""):
                var j = i + 1
                var bytes: [UInt8] = []
                while j < b.count && b[j] != UInt8(ascii: "\"") {
                    if b[j] == UInt8(ascii: "\\") { j += 1 }
                    if j < b.count { bytes.append(b[j]) }
                    j += 1
                }
                if expectingKey, case .object? = stack.last {
                    stack[stack.count - 1] = .object(key: String(decoding: bytes, as: UTF8.self))
                }
                i = j
            default: break
            }
            i += 1
        }
        var out = ""
        for f in stack {
            switch f {
            case let .object(key?): out += out.isEmpty ? key : "." + key
            case .object(nil): break
            case let .array(n): out += "[\(n)]"
            }
        }
        return out
    }
}

import AepoCore
import CJansson
import Glibc

/// JSON <-> `ControllerSnapshot`: the controller's state blob.
///
/// The blob is one JSON object with sorted keys and reals at 17 significant digits, so
/// every double reads back bit for bit:
///
///     {"actuator": 1.2, "config": {<the controller section>}, "decision": {...},
///      "error": 0.01, "format": "aepo.controller.state", "history": [{...}, ...],
///      "level": "high", "observations": 12, "smoothed": 0.49, "statistic": 0.49,
///      "step": 12, "version": 1}
///
/// `config` records the whole controller section that produced the state; restoring
/// compares its `mode`, `statistic` and `adaptive.actuator` with the restoring controller.
/// A decision's `alpha` is null when the controller does not set alpha. Reading is
/// strict: unknown or missing keys, wrong types and out-of-range values are state errors
/// that name the JSON path.
public enum ControllerStateCodec {
    public static let format = "aepo.controller.state"
    public static let version: Int64 = 1

    // MARK: - writing

    /// The state blob of `controller`. Fails only when Jansson cannot allocate.
    public static func encode(_ controller: EntropyController) throws(AepoFailure) -> String {
        let snap = controller.snapshot
        var b = Builder()
        guard let root = json_object() else { throw Builder.outOfMemory }
        defer { json_decref(root) }
        b.set(root, "format", json_string(format))
        b.set(root, "version", json_integer(version))
        b.set(root, "config", configObject(controller.config, &b))
        let s = snap.state
        b.set(root, "step", json_integer(s.step))
        b.set(root, "observations", json_integer(s.observations))
        b.set(root, "statistic", real(s.statistic))
        b.set(root, "smoothed", real(s.smoothed))
        b.set(root, "level", json_string(s.high ? "high" : "low"))
        b.set(root, "actuator", real(s.actuator))
        b.set(root, "error", real(s.error))
        b.set(root, "decision", decisionObject(s.decision, &b))
        let hist = json_array()
        for d in snap.history { b.append(hist, decisionObject(d, &b)) }
        b.set(root, "history", hist)
        guard b.ok else { throw Builder.outOfMemory }
        // JSON_SORT_KEYS | JSON_REAL_PRECISION(17); the precision macro is function-like
        // and does not import.
        let flags = Int(JSON_SORT_KEYS) | ((17 & 0x1F) << 11)
        guard let text = json_dumps(root, flags) else { throw Builder.outOfMemory }
        defer { free(text) }
        return String(cString: text)
    }

    /// Collects Jansson's allocation failures instead of trapping on them: the `_new`
    /// setters take ownership of the value even when they fail, and a NULL container or
    /// value marks the whole blob as failed.
    private struct Builder {
        var ok = true

        static let outOfMemory = AepoFailure(.outOfMemory, "state", "state: could not allocate the state blob")

        mutating func set(_ obj: UnsafeMutablePointer<json_t>?, _ key: String, _ value: UnsafeMutablePointer<json_t>?) {
            guard let obj, let value else {
                ok = false
                if let value { json_decref(value) }
                return
            }
            if json_object_set_new(obj, key, value) != 0 { ok = false }
        }

        mutating func append(_ arr: UnsafeMutablePointer<json_t>?, _ value: UnsafeMutablePointer<json_t>?) {
            guard let arr, let value else {
                ok = false
                if let value { json_decref(value) }
                return
            }
            if json_array_append_new(arr, value) != 0 { ok = false }
        }
    }

    /// A finite double as a JSON real; anything else as null (the readers reject it).
    private static func real(_ x: Double) -> UnsafeMutablePointer<json_t>? {
        x.isFinite ? json_real(x) : json_null()
    }

    private static func decisionObject(_ d: ControllerDecision, _ b: inout Builder) -> UnsafeMutablePointer<json_t>? {
        let o = json_object()
        b.set(o, "step", json_integer(d.step))
        b.set(o, "temperature", real(d.temperature))
        b.set(o, "k_max", json_integer(d.kMax))
        b.set(o, "halve", d.halve ? json_true() : json_false())
        b.set(o, "alpha", real(d.alpha))
        b.set(o, "target", real(d.target))
        b.set(o, "statistic", real(d.statistic))
        b.set(o, "smoothed", real(d.smoothed))
        b.set(o, "mode", json_string(d.mode.name))
        b.set(o, "reason", json_string(d.reason.name))
        return o
    }

    /// The controller section as a JSON object, walking the same schema rows as the config
    /// writer.
    private static func configObject(_ c: ControllerConfig, _ b: inout Builder) -> UnsafeMutablePointer<json_t>? {
        var whole = Config()
        whole.controller = c
        guard let root = json_object() else { return nil }
        for f in ConfigSchema.fields where f.path.hasPrefix("controller.") {
            let parts = f.path.split(separator: ".").dropFirst().map(String.init)
            guard let leaf = parts.last else { continue }
            var obj: UnsafeMutablePointer<json_t>? = root
            for p in parts.dropLast() {
                if let existing = json_object_get(obj, p) {
                    obj = existing
                } else {
                    let child = json_object()
                    b.set(obj, p, child)
                    obj = child
                }
            }
            b.set(obj, leaf, configValue(f.get(whole), &b))
        }
        return root
    }

    private static func configValue(_ v: ConfigValue, _ b: inout Builder) -> UnsafeMutablePointer<json_t>? {
        switch v {
        case let .bool(x): return x ? json_true() : json_false()
        case let .int(i): return json_integer(i)
        case let .real(x): return real(x)
        case let .string(s): return json_string(s)
        case let .points(pts):
            let arr = json_array()
            for p in pts {
                let o = json_object()
                b.set(o, "step", json_integer(p.step))
                b.set(o, "target", real(p.target))
                b.append(arr, o)
            }
            return arr
        }
    }

    // MARK: - reading

    public static func decode(_ bytes: UnsafeBufferPointer<UInt8>) throws(AepoFailure) -> ControllerSnapshot {
        guard let base = bytes.baseAddress, !bytes.isEmpty else {
            throw .state("json", "the state blob is empty")
        }
        var jerr = json_error_t()
        let root = base.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
            json_loadb($0, bytes.count, Int(JSON_REJECT_DUPLICATES), &jerr)
        }
        guard let root else {
            throw .state("json", "malformed JSON at line \(jerr.line), column \(jerr.column): "
                + ConfigCodec.errorText(jerr))
        }
        defer { json_decref(root) }
        let top = try Reader(root, "")
        // Identify the document first, so that a foreign one is named as such.
        let fmt = try top.string("format")
        if fmt != format {
            throw .state("format", "is \"\(fmt)\"; expected \"\(format)\" (this is not a controller state)")
        }
        let ver = try top.integer("version")
        if ver != version {
            throw .state("version", "unsupported state version \(ver); this library reads version \(version)")
        }
        try top.expectKeys(["actuator", "config", "decision", "error", "format", "history", "level",
                            "observations", "smoothed", "statistic", "step", "version"])
        let cfg = try top.object("config")
        let mode = try cfg.string("mode")
        let statistic = try cfg.string("statistic")
        let actuator = try cfg.object("adaptive").string("actuator")

        let levelName = try top.string("level")
        guard levelName == "high" || levelName == "low" else {
            throw .state("level", "is \"\(levelName)\"; expected \"high\" or \"low\"")
        }
        let state = ControllerState(
            step: try top.integer("step"), observations: try top.integer("observations"),
            statistic: try top.real("statistic"), smoothed: try top.real("smoothed"), high: levelName == "high",
            actuator: try top.real("actuator"), error: try top.real("error"),
            decision: try decision(top.object("decision")))
        let hist = try top.array("history")
        var history: [ControllerDecision] = []
        for i in 0..<json_array_size(hist.value) {
            guard let item = json_array_get(hist.value, i) else { break }
            history.append(try decision(Reader(item, "history[\(i)]")))
        }
        return ControllerSnapshot(mode: mode, statistic: statistic, actuator: actuator, state: state,
                                  history: history)
    }

    public static func decode(_ text: String) throws(AepoFailure) -> ControllerSnapshot {
        let bytes = Array(text.utf8)
        var result: Result<ControllerSnapshot, AepoFailure> = .failure(.state("json", "the state blob is empty"))
        bytes.withUnsafeBufferPointer { buf in
            do throws(AepoFailure) { result = .success(try decode(buf)) } catch { result = .failure(error) }
        }
        return try result.get()
    }

    private static func decision(_ r: Reader) throws(AepoFailure) -> ControllerDecision {
        try r.expectKeys(["alpha", "halve", "k_max", "mode", "reason", "smoothed", "statistic", "step",
                          "target", "temperature"])
        let modeName = try r.string("mode")
        guard let mode = ControllerMode(name: modeName) else {
            throw .state(r.path("mode"), "unknown mode \"\(modeName)\"")
        }
        let reasonName = try r.string("reason")
        guard let reason = ControllerReason(name: reasonName) else {
            throw .state(r.path("reason"), "unknown reason \"\(reasonName)\"")
        }
        return ControllerDecision(
            step: try r.integer("step"), temperature: try r.real("temperature"), kMax: try r.integer("k_max"),
            halve: try r.bool("halve"), alpha: try r.real("alpha", nullable: true), target: try r.real("target"),
            statistic: try r.real("statistic"), smoothed: try r.real("smoothed"), mode: mode, reason: reason)
    }

    /// Typed access to one JSON object, with errors that name the path.
    private struct Reader {
        let value: UnsafeMutablePointer<json_t>
        let prefix: String

        init(_ value: UnsafeMutablePointer<json_t>, _ prefix: String, kind: json_type = JSON_OBJECT) throws(AepoFailure) {
            guard value.pointee.type == kind else {
                throw .state(prefix.isEmpty ? "json" : prefix,
                             "expected \(kind == JSON_OBJECT ? "an object" : "an array"), got \(ConfigCodec.describe(value))")
            }
            self.value = value
            self.prefix = prefix
        }

        func path(_ key: String) -> String { prefix.isEmpty ? key : prefix + "." + key }

        func expectKeys(_ keys: Set<String>) throws(AepoFailure) {
            var it = json_object_iter(value)
            while let cur = it {
                let k = String(cString: json_object_iter_key(cur))
                if !keys.contains(k) {
                    throw .state(path(k), "unknown key \"\(k)\"; expected " + keys.sorted().joined(separator: ", "))
                }
                it = json_object_iter_next(value, cur)
            }
            for k in keys.sorted() where json_object_get(value, k) == nil {
                throw .state(path(k), "missing")
            }
        }

        func field(_ key: String) throws(AepoFailure) -> UnsafeMutablePointer<json_t> {
            guard let v = json_object_get(value, key) else { throw .state(path(key), "missing") }
            return v
        }

        func object(_ key: String) throws(AepoFailure) -> Reader {
            try Reader(field(key), path(key))
        }

        func array(_ key: String) throws(AepoFailure) -> Reader {
            try Reader(field(key), path(key), kind: JSON_ARRAY)
        }

        func string(_ key: String) throws(AepoFailure) -> String {
            let v = try field(key)
            guard v.pointee.type == JSON_STRING else {
                throw .state(path(key), "expected a string, got \(ConfigCodec.describe(v))")
            }
            let n = json_string_length(v)
            return json_string_value(v).map { p in
                String(decoding: UnsafeRawBufferPointer(start: p, count: n), as: UTF8.self)
            } ?? ""
        }

        func integer(_ key: String) throws(AepoFailure) -> Int64 {
            let v = try field(key)
            guard v.pointee.type == JSON_INTEGER else {
                throw .state(path(key), "expected an integer, got \(ConfigCodec.describe(v))")
            }
            return json_integer_value(v)
        }

        func real(_ key: String, nullable: Bool = false) throws(AepoFailure) -> Double {
            let v = try field(key)
            switch v.pointee.type {
            case JSON_REAL: return json_real_value(v)
            case JSON_INTEGER: return Double(json_integer_value(v))
            case JSON_NULL where nullable: return .nan
            default:
                throw .state(path(key), "expected a real\(nullable ? " or null" : ""), got \(ConfigCodec.describe(v))")
            }
        }

        func bool(_ key: String) throws(AepoFailure) -> Bool {
            let v = try field(key)
            if v.pointee.type == JSON_TRUE { return true }
            if v.pointee.type == JSON_FALSE { return false }
            throw .state(path(key), "expected true or false, got \(ConfigCodec.describe(v))")
        }
    }
}

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
///      "estimator": {...} or null, "level": "high", "observations": 12, "pushes": 0,
///      "smoothed": 0.49, "statistic": 0.49, "step": 12, "version": 2}
///
/// `config` records the whole controller section that produced the state; restoring
/// compares its `mode`, `statistic`, `adaptive.actuator` and `adaptive.tuning` with the
/// restoring controller. `estimator` is the self-tuning controller's identification (null
/// in other modes). A decision's `alpha` is null when the controller does not set alpha,
/// and its `estimate` is null when there is none. Version 1 blobs (no estimator, pushes or
/// estimates; written before `tuning` existed, so an adaptive one is `"fixed"`) still
/// read. Reading is strict: unknown or missing keys, wrong types and out-of-range values
/// are state errors that name the JSON path.
public enum ControllerStateCodec {
    public static let format = "aepo.controller.state"
    public static let version: Int64 = 2

    // MARK: - writing

    /// The state blob of `controller`. Fails only when Jansson cannot allocate.
    public static func encode(_ controller: Controller) throws(AepoFailure) -> String {
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
        b.set(root, "pushes", json_integer(s.pushes))
        b.set(root, "estimator", controller.mode == .adaptive && controller.tuning == .auto
                  ? estimatorObject(s.estimator, &b) : json_null())
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
        let e = d.estimate
        if e.delay < 0 {
            b.set(o, "estimate", json_null())
        } else {
            let eo = json_object()
            b.set(eo, "gain", real(e.gain))
            b.set(eo, "same_step", real(e.sameStep))
            b.set(eo, "delay", json_integer(e.delay))
            b.set(eo, "process_noise", real(e.processNoise))
            b.set(eo, "measurement_noise", real(e.measurementNoise))
            b.set(eo, "horizon", real(e.horizon))
            b.set(eo, "feedback", real(e.feedback))
            b.set(eo, "confidence", real(e.confidence))
            b.set(o, "estimate", eo)
        }
        return o
    }

    private static func reals(_ xs: [Double], _ b: inout Builder) -> UnsafeMutablePointer<json_t>? {
        let arr = json_array()
        for x in xs { b.append(arr, real(x)) }
        return arr
    }

    private static func estimatorObject(_ e: LoopEstimator, _ b: inout Builder) -> UnsafeMutablePointer<json_t>? {
        let o = json_object()
        let filters = json_array()
        for f in e.filters {
            let fo = json_object()
            b.set(fo, "delay", json_integer(Int64(f.delay)))
            b.set(fo, "leaky", f.leaky ? json_true() : json_false())
            b.set(fo, "mean", reals(f.mean, &b))
            b.set(fo, "covariance", reals(f.covariance, &b))
            b.set(fo, "score", real(f.score))
            b.set(fo, "correction", real(f.correction))
            b.append(filters, fo)
        }
        b.set(o, "filters", filters)
        b.set(o, "inputs", reals(e.inputs, &b))
        b.set(o, "observations", json_integer(e.observations))
        b.set(o, "selected", json_integer(Int64(e.selected)))
        b.set(o, "last_observation", real(e.lastObservation))
        b.set(o, "last_residual", real(e.lastResidual))
        b.set(o, "residual_moment0", real(e.residualMoment0))
        b.set(o, "residual_moment1", real(e.residualMoment1))
        b.set(o, "process_variance", real(e.processVariance))
        b.set(o, "measurement_variance", real(e.measurementVariance))
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
        if ver != 1 && ver != version {
            throw .state("version", "unsupported state version \(ver); this library reads versions 1 and \(version)")
        }
        let v2 = ver == 2
        var keys: Set<String> = ["actuator", "config", "decision", "error", "format", "history", "level",
                                 "observations", "smoothed", "statistic", "step", "version"]
        if v2 { keys.formUnion(["estimator", "pushes"]) }
        try top.expectKeys(keys)
        let cfg = try top.object("config")
        let mode = try cfg.string("mode")
        let statistic = try cfg.string("statistic")
        let adaptive = try cfg.object("adaptive")
        let actuator = try adaptive.string("actuator")
        let tuning = v2 ? try adaptive.string("tuning") : "fixed"

        let levelName = try top.string("level")
        guard levelName == "high" || levelName == "low" else {
            throw .state("level", "is \"\(levelName)\"; expected \"high\" or \"low\"")
        }
        let state = ControllerState(
            step: try top.integer("step"), observations: try top.integer("observations"),
            statistic: try top.real("statistic"), smoothed: try top.real("smoothed"), high: levelName == "high",
            actuator: try top.real("actuator"), error: try top.real("error"),
            decision: try decision(top.object("decision"), v2: v2),
            estimator: v2 && !top.isNull("estimator") ? try estimator(top.object("estimator")) : LoopEstimator(),
            pushes: v2 ? try top.integer("pushes") : 0)
        let hist = try top.array("history")
        var history: [ControllerDecision] = []
        for i in 0..<json_array_size(hist.value) {
            guard let item = json_array_get(hist.value, i) else { break }
            history.append(try decision(Reader(item, "history[\(i)]"), v2: v2))
        }
        return ControllerSnapshot(mode: mode, statistic: statistic, actuator: actuator, tuning: tuning,
                                  state: state, history: history)
    }

    private static func estimator(_ r: Reader) throws(AepoFailure) -> LoopEstimator {
        try r.expectKeys(["filters", "inputs", "last_observation", "last_residual", "measurement_variance",
                          "observations", "process_variance", "residual_moment0", "residual_moment1", "selected"])
        var e = LoopEstimator()
        let filters = try r.array("filters")
        let n = json_array_size(filters.value)
        if n != e.filters.count {
            throw .state(r.path("filters"), "holds \(n) filters; expected \(e.filters.count)")
        }
        for i in 0..<n {
            guard let item = json_array_get(filters.value, i) else { break }
            let f = try Reader(item, r.path("filters[\(i)]"))
            try f.expectKeys(["correction", "covariance", "delay", "leaky", "mean", "score"])
            let delay = try f.integer("delay")
            let want = e.filters[i]
            if delay != Int64(want.delay) { throw .state(f.path("delay"), "is \(delay); expected \(want.delay)") }
            if try f.bool("leaky") != want.leaky { throw .state(f.path("leaky"), "expected \(want.leaky)") }
            e.filters[i].mean = try f.reals("mean", count: want.mean.count)
            e.filters[i].covariance = try f.reals("covariance", count: want.covariance.count)
            e.filters[i].score = try f.real("score")
            e.filters[i].correction = try f.real("correction")
        }
        e.inputs = try r.reals("inputs", count: LoopEstimator.maxDelay + 1)
        e.observations = try r.integer("observations")
        let sel = try r.integer("selected")
        if sel < 0 || sel >= Int64(LoopEstimator.filterCount) {
            throw .state(r.path("selected"), "is \(sel); expected 0 ... \(LoopEstimator.filterCount - 1)")
        }
        e.selected = Int(sel)
        e.lastObservation = try r.real("last_observation")
        e.lastResidual = try r.real("last_residual")
        e.residualMoment0 = try r.real("residual_moment0")
        e.residualMoment1 = try r.real("residual_moment1")
        e.processVariance = try r.real("process_variance")
        e.measurementVariance = try r.real("measurement_variance")
        if !e.isValid {
            throw .state(r.path("filters"), "the estimator holds a non-finite value or a negative variance")
        }
        return e
    }

    public static func decode(_ text: String) throws(AepoFailure) -> ControllerSnapshot {
        let bytes = Array(text.utf8)
        var result: Result<ControllerSnapshot, AepoFailure> = .failure(.state("json", "the state blob is empty"))
        bytes.withUnsafeBufferPointer { buf in
            do throws(AepoFailure) { result = .success(try decode(buf)) } catch { result = .failure(error) }
        }
        return try result.get()
    }

    private static func decision(_ r: Reader, v2: Bool) throws(AepoFailure) -> ControllerDecision {
        var keys: Set<String> = ["alpha", "halve", "k_max", "mode", "reason", "smoothed", "statistic", "step",
                                 "target", "temperature"]
        if v2 { keys.insert("estimate") }
        try r.expectKeys(keys)
        let modeName = try r.string("mode")
        guard let mode = ControllerMode(name: modeName) else {
            throw .state(r.path("mode"), "unknown mode \"\(modeName)\"")
        }
        let reasonName = try r.string("reason")
        guard let reason = ControllerReason(name: reasonName) else {
            throw .state(r.path("reason"), "unknown reason \"\(reasonName)\"")
        }
        var estimate = ControllerEstimate.none
        if v2 && !r.isNull("estimate") {
            let e = try r.object("estimate")
            try e.expectKeys(["confidence", "delay", "feedback", "gain", "horizon", "measurement_noise",
                              "process_noise", "same_step"])
            let delay = try e.integer("delay")
            if delay < 0 || delay > Int64(LoopEstimator.maxDelay) {
                throw .state(e.path("delay"), "is \(delay); expected 0 ... \(LoopEstimator.maxDelay)")
            }
            estimate = ControllerEstimate(
                gain: try e.real("gain"), sameStep: try e.real("same_step"), delay: delay,
                processNoise: try e.real("process_noise"), measurementNoise: try e.real("measurement_noise"),
                horizon: try e.real("horizon"), feedback: try e.real("feedback"), confidence: try e.real("confidence"))
        }
        return ControllerDecision(
            step: try r.integer("step"), temperature: try r.real("temperature"), kMax: try r.integer("k_max"),
            halve: try r.bool("halve"), alpha: try r.real("alpha", nullable: true), target: try r.real("target"),
            statistic: try r.real("statistic"), smoothed: try r.real("smoothed"), mode: mode, reason: reason,
            estimate: estimate)
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

        func isNull(_ key: String) -> Bool {
            json_object_get(value, key).map { $0.pointee.type == JSON_NULL } ?? false
        }

        func reals(_ key: String, count: Int) throws(AepoFailure) -> [Double] {
            let arr = try array(key)
            let n = json_array_size(arr.value)
            if n != count { throw .state(path(key), "holds \(n) values; expected \(count)") }
            var out: [Double] = []
            for i in 0..<n {
                guard let v = json_array_get(arr.value, i) else { break }
                switch v.pointee.type {
                case JSON_REAL: out.append(json_real_value(v))
                case JSON_INTEGER: out.append(Double(json_integer_value(v)))
                default: throw .state(path(key) + "[\(i)]", "expected a real, got \(ConfigCodec.describe(v))")
                }
            }
            return out
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

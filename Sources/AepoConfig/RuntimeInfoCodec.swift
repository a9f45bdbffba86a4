import AepoCore
import CJansson
import Glibc

/// The JSON text of `aepo_runtime_info`:
///   {"version": "0.2.0", "abi": 1,
///    "cpu": {"vendor", "brand", "features": [...], "os_saves_ymm", "os_saves_zmm", "level"},
///    "kernels": {"logits": "avx2fma", ...},
///    "blas": {"library", "openblas", "core", "core_level", "config", "threads"},
///    "warnings": [...]}
/// Keys sorted; `core_level` and `threads` are null when unknown.
public enum RuntimeInfoCodec {
    public static func encode(_ info: RuntimeInfo, version: String, abi: Int) throws(AepoFailure) -> String {
        let oom = AepoFailure(.outOfMemory, "buf", "buf: could not allocate the runtime information")
        guard let root = json_object() else { throw oom }
        defer { json_decref(root) }
        var ok = true
        func set(_ o: UnsafeMutablePointer<json_t>?, _ key: String, _ v: UnsafeMutablePointer<json_t>?) {
            guard let o, let v else { ok = false; if let v { json_decref(v) }; return }
            if json_object_set_new(o, key, v) != 0 { ok = false }
        }
        func bool(_ b: Bool) -> UnsafeMutablePointer<json_t>? { b ? json_true() : json_false() }
        func strings(_ list: [String]) -> UnsafeMutablePointer<json_t>? {
            guard let a = json_array() else { return nil }
            for s in list where json_array_append_new(a, json_string(s)) != 0 { ok = false }
            return a
        }
        set(root, "version", json_string(version))
        set(root, "abi", json_integer(json_int_t(abi)))
        let cpu = json_object()
        set(cpu, "vendor", json_string(info.cpu.vendor))
        set(cpu, "brand", json_string(info.cpu.brand))
        set(cpu, "features", strings(info.cpu.features))
        set(cpu, "os_saves_ymm", bool(info.cpu.osSavesYMM))
        set(cpu, "os_saves_zmm", bool(info.cpu.osSavesZMM))
        set(cpu, "level", json_string(RuntimeInfo.level(of: info.cpu).name))
        set(root, "cpu", cpu)
        let kernels = json_object()
        for k in info.kernels { set(kernels, k.family, json_string(k.path)) }
        set(root, "kernels", kernels)
        let blas = json_object()
        set(blas, "library", json_string(info.blas.library))
        set(blas, "openblas", bool(info.blas.isOpenBLAS))
        set(blas, "core", json_string(info.blas.core))
        set(blas, "core_level", RuntimeInfo.level(ofOpenBLASCore: info.blas.core).map { json_string($0.name) } ?? json_null())
        set(blas, "config", json_string(info.blas.config))
        set(blas, "threads", info.blas.threads.map { json_integer(json_int_t($0)) } ?? json_null())
        set(root, "blas", blas)
        set(root, "warnings", strings(info.warnings))
        guard ok else { throw oom }
        guard let text = json_dumps(root, Int(JSON_SORT_KEYS) | 2 /* JSON_INDENT(2) */) else { throw oom }
        defer { free(text) }
        return String(cString: text)
    }
}

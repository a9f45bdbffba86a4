import AepoConfig
import AepoCore
import CAepoAPI

@c @implementation
public func aepo_version_string() -> UnsafePointer<CChar>? {
    StaticText.version
}

@c @implementation
public func aepo_version_number() -> Int32 {
    AEPO_VERSION_MAJOR * 10000 + AEPO_VERSION_MINOR * 100 + AEPO_VERSION_PATCH
}

@c @implementation
public func aepo_abi_version() -> Int32 {
    AEPO_ABI_VERSION
}

@c @implementation
public func aepo_status_name(_ status: Int32) -> UnsafePointer<CChar>? {
    StaticText.statusName(status)
}

/// NUL-terminated strings with static storage, for the functions that return `const char *`.
/// They are written once (lazily, under swift_once) and only read afterwards.
enum StaticText {
    nonisolated(unsafe) static let version: UnsafePointer<CChar> = intern(AEPO_VERSION_STRING_SWIFT)
    nonisolated(unsafe) static let statusNames: [UnsafePointer<CChar>] = [
        "AEPO_OK", "AEPO_ERR_INVALID_ARGUMENT", "AEPO_ERR_NULL_POINTER", "AEPO_ERR_SHAPE",
        "AEPO_ERR_CONFIG", "AEPO_ERR_NON_FINITE", "AEPO_ERR_BUFFER_TOO_SMALL",
        "AEPO_ERR_OUT_OF_MEMORY", "AEPO_ERR_STATE", "AEPO_ERR_INTERNAL",
    ].map(intern)
    nonisolated(unsafe) static let unknownStatus: UnsafePointer<CChar> = intern("AEPO_ERR_UNKNOWN")

    static func statusName(_ s: Int32) -> UnsafePointer<CChar> {
        s >= 0 && Int(s) < statusNames.count ? statusNames[Int(s)] : unknownStatus
    }

    /// Copies a string into storage that is never freed (a handful of names per process).
    static func intern(_ s: String) -> UnsafePointer<CChar> {
        let bytes = Array(s.utf8CString)
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
        p.initialize(from: bytes, count: bytes.count)
        return UnsafePointer(p)
    }
}

/// Kept equal to the header's AEPO_VERSION_STRING by a test (string macros do not import).
let AEPO_VERSION_STRING_SWIFT = "\(AEPO_VERSION_MAJOR).\(AEPO_VERSION_MINOR).\(AEPO_VERSION_PATCH)"

@c @implementation
public func aepo_runtime_info(_ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ len: UnsafeMutablePointer<Int>?,
                              _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let text = try RuntimeInfoCodec.encode(RuntimeInfo.probe(), version: AEPO_VERSION_STRING_SWIFT,
                                               abi: Int(AEPO_ABI_VERSION))
        try writeText(text, buf, cap, len)
    }
}

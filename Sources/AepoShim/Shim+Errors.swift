import AepoCore
import CAepoAPI

// One place for the mechanics every export shares: running a body that may throw an
// AepoFailure, reporting it into the caller's aepo_error, and writing text under the
// snprintf-style size-query rule.

/// Runs `body`, reports success or failure into `err`, and returns the status.
@inline(__always)
func guarded(_ err: UnsafeMutablePointer<aepo_error>?, _ body: () throws(AepoFailure) -> Void) -> Int32 {
    do {
        try body()
        report(err, nil)
        return AEPO_OK
    } catch {
        report(err, error)
        return error.kind.rawValue
    }
}

func report(_ err: UnsafeMutablePointer<aepo_error>?, _ f: AepoFailure?) {
    guard let err else { return }
    err.pointee.status = f?.kind.rawValue ?? AEPO_OK
    err.pointee.reserved = 0
    err.pointee.index = Int64(f?.index ?? -1)
    withUnsafeMutableBytes(of: &err.pointee.argument) { copyCString(f?.argument ?? "", into: $0) }
    withUnsafeMutableBytes(of: &err.pointee.message) { copyCString(f?.message ?? "", into: $0) }
}

/// Copies as much of `s` as fits, always NUL-terminating, never splitting a UTF-8 sequence.
func copyCString(_ s: String, into dst: UnsafeMutableRawBufferPointer) {
    guard dst.count > 0 else { return }
    var n = 0
    let limit = dst.count - 1
    var utf8 = Array(s.utf8)
    if utf8.count > limit {
        var cut = limit
        while cut > 0 && (utf8[cut] & 0xC0) == 0x80 { cut -= 1 }
        utf8.removeSubrange(cut...)
    }
    for b in utf8 { dst[n] = b; n += 1 }
    dst[n] = 0
}

/// Writes `text` into a caller buffer under the header's size-query rule.
func writeText(_ text: String, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
               _ len: UnsafeMutablePointer<Int>?, argument: String = "buf") throws(AepoFailure) {
    let bytes = Array(text.utf8)
    len?.pointee = bytes.count
    guard let buf else {
        if cap == 0 { return }
        throw .nullPointer(argument)
    }
    guard cap > bytes.count else {
        if cap > 0 { buf[0] = 0 }
        throw AepoFailure(.bufferTooSmall, argument,
                          "\(argument): capacity \(cap) is too small; the text needs \(bytes.count + 1) bytes including the NUL")
    }
    bytes.withUnsafeBufferPointer { src in
        UnsafeMutableRawPointer(buf).copyMemory(from: src.baseAddress!, byteCount: src.count)
    }
    buf[bytes.count] = 0
}

/// The bytes of an optional JSON argument; NULL or length 0 means an empty document.
func jsonBytes(_ json: UnsafePointer<CChar>?, _ len: Int) throws(AepoFailure) -> UnsafeBufferPointer<UInt8> {
    guard let json, len != 0 else { return UnsafeBufferPointer(start: nil, count: 0) }
    guard len > 0 else { throw .shape("len", "must be >= 0, got \(len)") }
    return UnsafeBufferPointer(start: UnsafeRawPointer(json).assumingMemoryBound(to: UInt8.self), count: len)
}

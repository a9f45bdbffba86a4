import Glibc

/// Per-call scratch memory of the fused head: 64-byte aligned, from `aligned_alloc`, so that
/// a failed allocation becomes an `outOfMemory` error instead of a trap. Freed by the call
/// that made it (the handle keeps nothing between calls).
struct FusedScratch<T> {
    let base: UnsafeMutablePointer<T>
    let count: Int

    /// `count` elements (at least one is allocated); `what` names the buffer in the error,
    /// `knob` the setting that sizes it.
    static func allocate(_ count: Int, what: String, knob: String) throws(AepoFailure) -> FusedScratch<T> {
        let stride = MemoryLayout<T>.stride
        let (bytes, o) = max(count, 1).multipliedReportingOverflow(by: stride)
        let (rounded, o2) = bytes.addingReportingOverflow(63)
        guard !o, !o2, let raw = aligned_alloc(64, rounded & ~63) else {
            throw AepoFailure(.outOfMemory, knob,
                              "could not allocate the \(what) (\(count) elements of \(stride) bytes); lower \(knob)")
        }
        return FusedScratch(base: raw.bindMemory(to: T.self, capacity: max(count, 1)), count: count)
    }

    func free() {
        Glibc.free(UnsafeMutableRawPointer(base))
    }
}

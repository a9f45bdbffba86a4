import AepoConfig
import AepoCore

/// The object behind one of the C API's opaque handles (`aepo_loss *`, `aepo_controller *`,
/// `aepo_sampler *`, `aepo_fused_head *`).
///
/// A create function hands the caller one retain of the object (`exported`); every call
/// borrows it without touching the count (`borrow`); the free function gives the retain
/// back (`release`). All four handle kinds keep the normalised document they were made
/// from, which their `*_config_json` call writes.
protocol ExportedHandle: AnyObject {
    var config: Config { get }
}

extension ExportedHandle {
    /// The object behind `p`; NULL is `AEPO_ERR_NULL_POINTER` naming `argument`.
    static func borrow(_ p: OpaquePointer?, _ argument: String) throws(AepoFailure) -> Self {
        guard let p else { throw .nullPointer(argument) }
        return Unmanaged<Self>.fromOpaque(UnsafeRawPointer(p)).takeUnretainedValue()
    }

    /// Gives back the retain a create function handed out; NULL is a no-op.
    static func release(_ p: OpaquePointer?) {
        guard let p else { return }
        Unmanaged<Self>.fromOpaque(UnsafeRawPointer(p)).release()
    }

    /// One retain of `self` as the caller's opaque pointer.
    var exported: OpaquePointer { OpaquePointer(Unmanaged.passRetained(self).toOpaque()) }
}

/// The body of every `aepo_*_create`: `*out` is NULL unless the handle was made, so a
/// caller never frees a stale pointer after a failure.
func createHandle<H: ExportedHandle>(_ json: UnsafePointer<CChar>?, _ len: Int,
                                     _ out: UnsafeMutablePointer<OpaquePointer?>?,
                                     _ make: (Config) throws(AepoFailure) -> H) throws(AepoFailure) {
    guard let out else { throw .nullPointer("out") }
    out.pointee = nil
    out.pointee = try make(parseConfigArgument(json, len)).exported
}

/// The body of every `aepo_*_config_json`: the handle's normalised document, under the
/// size-query rule of `writeText`.
func writeHandleConfig<H: ExportedHandle>(_ type: H.Type, _ p: OpaquePointer?, _ argument: String,
                                          _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                                          _ len: UnsafeMutablePointer<Int>?) throws(AepoFailure) {
    try writeText(ConfigWriter.emit(H.borrow(p, argument).config), buf, cap, len)
}

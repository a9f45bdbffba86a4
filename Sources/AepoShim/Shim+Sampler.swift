import AepoConfig
import AepoCore
import CAepoAPI

/// What an `aepo_sampler *` points to: the whole document it was created from (for
/// aepo_sampler_config_json) and the core sampler built from its `sampler` section.
final class SamplerHandle: ExportedHandle {
    let config: Config
    /// Keeps scratch between calls: used only under `lock`.
    let sampler: Sampler
    let lock = HandleLock()

    init(config: Config) throws(AepoFailure) {
        self.config = config
        sampler = try Sampler(config.sampler)
    }
}

@c @implementation
public func aepo_sampler_create(_ json: UnsafePointer<CChar>?, _ len: Int, _ out: UnsafeMutablePointer<OpaquePointer?>?,
                                _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        try createHandle(json, len, out) { config throws(AepoFailure) in try SamplerHandle(config: config) }
    }
}

@c @implementation
public func aepo_sampler_free(_ sampler: OpaquePointer?) {
    SamplerHandle.release(sampler)
}

@c @implementation
public func aepo_sampler_config_json(_ sampler: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                                     _ len: UnsafeMutablePointer<Int>?,
                                     _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        try writeHandleConfig(SamplerHandle.self, sampler, "sampler", buf, cap, len)
    }
}

@c @implementation
public func aepo_sampler_sample(_ sampler: OpaquePointer?, _ logits: UnsafePointer<Float>?, _ n: Int64, _ v: Int64,
                                _ rowStride: Int64, _ step: Int64, _ position: Int64, _ rowOffset: Int64,
                                _ temperature: UnsafePointer<Double>?, _ tokens: UnsafeMutablePointer<Int32>?,
                                _ logp: UnsafeMutablePointer<Float>?, _ logpT1: UnsafeMutablePointer<Float>?,
                                _ kept: UnsafeMutablePointer<Int32>?,
                                _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let h = try SamplerHandle.borrow(sampler, "sampler")
        guard let logits else { throw .nullPointer("logits") }
        guard let tokens else { throw .nullPointer("tokens") }
        // Int64 and Int are the same width on every platform this library builds for.
        try h.lock.run { () throws(AepoFailure) in
            try h.sampler.sample(logits: logits, rows: Int(n), vocab: Int(v), rowStride: Int(rowStride),
                                 step: step, position: position, rowOffset: rowOffset,
                                 temperature: temperature?.pointee, tokens: tokens,
                                 logp: logp, logpT1: logpT1, kept: kept)
        }
    }
}

import AepoConfig
import AepoCore
import CAepoAPI

@c @implementation
public func aepo_default_config_json(_ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                                     _ len: UnsafeMutablePointer<Int>?,
                                     _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        try writeText(ConfigWriter.emit(Config()), buf, cap, len)
    }
}

@c @implementation
public func aepo_config_validate(_ json: UnsafePointer<CChar>?, _ len: Int,
                                 _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        _ = try ConfigCodec.parse(jsonBytes(json, len))
    }
}

@c @implementation
public func aepo_config_normalize(_ json: UnsafePointer<CChar>?, _ len: Int,
                                  _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                                  _ lenOut: UnsafeMutablePointer<Int>?,
                                  _ err: UnsafeMutablePointer<aepo_error>?) -> Int32 {
    guarded(err) { () throws(AepoFailure) in
        let c = try ConfigCodec.parse(jsonBytes(json, len))
        try writeText(ConfigWriter.emit(c), buf, cap, lenOut, argument: "buf")
    }
}

/// Parses the whole document for a create function: the caller then reads its sections.
func parseConfigArgument(_ json: UnsafePointer<CChar>?, _ len: Int) throws(AepoFailure) -> Config {
    try ConfigCodec.parse(jsonBytes(json, len))
}

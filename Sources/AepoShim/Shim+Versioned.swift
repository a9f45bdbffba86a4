import AepoCore

// Versioned input structs (aepo_loss_inputs, aepo_logits_inputs, aepo_fused_head_inputs):
// struct_size comes first; a struct grows only at its end. One reader and one initialiser
// serve them all, so the rules are written once:
//   - struct_size below the first version's size is AEPO_ERR_INVALID_ARGUMENT naming
//     struct_size;
//   - fields past the caller's struct_size keep their defaults;
//   - bytes past what this library knows must be 0 (a newer header's options, unset).

/// A C input struct whose first field is `size_t struct_size`.
protocol VersionedInput {
    /// The C type name, for messages.
    static var typeName: String { get }
    /// The bytes of the first version of the struct: a constant, which stays when the
    /// struct grows (tests/reliability/abi.c pins the current size).
    static var firstVersionSize: Int { get }
    /// The field values `<type>_init` writes; struct_size is the caller's.
    static var defaults: Self { get }
}

extension VersionedInput {
    /// Zeroes the caller's `structSize` bytes and writes the defaults with its struct_size.
    static func initialize(_ p: UnsafeMutablePointer<Self>?, _ structSize: Int, argument: String) throws(AepoFailure) {
        guard let p else { throw .nullPointer(argument) }
        guard structSize >= firstVersionSize else {
            throw .invalid("struct_size", "is \(structSize), but \(typeName) needs at least \(firstVersionSize) bytes")
        }
        let raw = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(p), count: structSize)
        raw.initializeMemory(as: UInt8.self, repeating: 0)
        var d = defaults
        withUnsafeBytes(of: &d) { src in raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: src.prefix(structSize))) }
        raw.storeBytes(of: structSize, as: Int.self)
    }

    /// The caller's struct, honouring its struct_size.
    static func read(_ p: UnsafePointer<Self>?, argument: String) throws(AepoFailure) -> Self {
        guard let p else { throw .nullPointer(argument) }
        let raw = UnsafeRawPointer(p)
        let size = raw.load(as: Int.self)
        guard size >= firstVersionSize else {
            throw .invalid("struct_size", "\(argument)->struct_size is \(size), but \(typeName) needs at least "
                           + "\(firstVersionSize) bytes; set it to sizeof(\(typeName)) or call \(typeName)_init")
        }
        let known = MemoryLayout<Self>.size
        if size > known {
            for i in known..<size where raw.load(fromByteOffset: i, as: UInt8.self) != 0 {
                throw .invalid("struct_size", "is \(size) and byte \(i) is set, but this libaepo knows only "
                               + "\(known) bytes of \(typeName); upgrade libaepo")
            }
        }
        var v = defaults
        withUnsafeMutableBytes(of: &v) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: raw, count: min(size, known)))
        }
        return v
    }
}

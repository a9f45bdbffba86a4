/// The one error type of the numerical core.
///
/// Every core function that can reject its input throws an `AepoFailure`; the C shim maps
/// `kind` to a pinned status code and copies `argument`, `index` and `message` into the
/// caller's `aepo_error`. Messages are complete sentences that name the argument, so they
/// read well on their own (Python shows them verbatim).
public struct AepoFailure: Error, Equatable, CustomStringConvertible {
    public enum Kind: Int32, Sendable {
        case invalidArgument = 1
        case nullPointer = 2
        case shape = 3
        case config = 4
        case nonFinite = 5
        case bufferTooSmall = 6
        case outOfMemory = 7
        case state = 8
        case `internal` = 9
    }

    public var kind: Kind
    /// The offending argument, or a JSON path for config errors ("controller.t_high").
    public var argument: String
    /// Element or row index the error is about, or -1.
    public var index: Int
    public var message: String

    public init(_ kind: Kind, _ argument: String, _ message: String, index: Int = -1) {
        self.kind = kind
        self.argument = argument
        self.index = index
        self.message = message
    }

    public var description: String { message }

    // Convenience constructors keep call sites short and messages uniform.
    public static func invalid(_ argument: String, _ detail: String, index: Int = -1) -> AepoFailure {
        AepoFailure(.invalidArgument, argument, "\(argument): \(detail)", index: index)
    }
    public static func shape(_ argument: String, _ detail: String, index: Int = -1) -> AepoFailure {
        AepoFailure(.shape, argument, "\(argument): \(detail)", index: index)
    }
    public static func config(_ path: String, _ detail: String) -> AepoFailure {
        AepoFailure(.config, path, "\(path): \(detail)")
    }
    public static func nonFinite(_ argument: String, index: Int, value: Double) -> AepoFailure {
        AepoFailure(.nonFinite, argument, "\(argument)[\(index)] is \(value) under mask = 1; inputs must be finite", index: index)
    }
    public static func nullPointer(_ argument: String) -> AepoFailure {
        AepoFailure(.nullPointer, argument, "\(argument) is NULL")
    }
    public static func state(_ argument: String, _ detail: String) -> AepoFailure {
        AepoFailure(.state, argument, "\(argument): \(detail)")
    }
}

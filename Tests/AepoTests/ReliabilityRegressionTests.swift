import AepoConfig
@testable import AepoCore
import AepoShim
import CAepoAPI
import Testing

/// Regression tests for the library bugs the fuzz harnesses (Tests/fuzz) found. Each input
/// that once broke an invariant also sits in Tests/fuzz/regressions/<harness>/ and is
/// replayed by `make test`; the tests here pin the intended behaviour itself.
@Suite struct ReliabilityRegressionTests {
    static func configError(_ json: String) -> (status: Int32, argument: String, message: String) {
        var err = aepo_error()
        let bytes = Array(json.utf8)
        let rc = bytes.withUnsafeBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) {
                aepo_config_validate($0, b.count, &err)
            }
        }
        return (rc, LossShimTests.argument(err), LossShimTests.message(err))
    }

    /// `{"": ...}` was read as the root object and `{"loss.threads": 2}` as loss.threads:
    /// a key is one path component, so both are unknown keys.
    @Test(arguments: [
        (#"{"": "x"}"#, "config", #"unknown key """#),
        (#"{"": {"loss": {"threads": 2}}}"#, "config", #"unknown key """#),
        (#"{"loss.threads": 2}"#, "loss.threads", #"unknown key "loss.threads""#),
        (#"{"controller": {"adaptive.kp": 1}}"#, "controller.adaptive.kp", #"unknown key "adaptive.kp""#),
        (#"{"loss": {"": 1}}"#, "loss.", #"unknown key """#),
    ])
    func keysAreSinglePathComponents(_ json: String, _ argument: String, _ fragment: String) {
        let e = Self.configError(json)
        #expect(e.status == AEPO_ERR_CONFIG)
        #expect(e.argument == argument)
        #expect(e.message.contains(fragment), "\(e.message)")
    }

    /// A NUL byte inside a key of a malformed document went into the error path verbatim
    /// and cut the C strings short (empty argument and message).
    @Test func controlBytesInKeysAreEscapedInErrors() {
        let e = Self.configError("{\"a\u{0}b\": [")
        #expect(e.status == AEPO_ERR_CONFIG)
        #expect(e.argument == "a\\u0000b")
        #expect(e.message.hasPrefix("a\\u0000b: malformed JSON"), "\(e.message)")
    }

    /// aepo_fused_create left *out untouched on failure, unlike the other create functions.
    @Test func failedFusedCreateClearsOut() {
        var h = OpaquePointer(bitPattern: 0x10)
        var err = aepo_error()
        let json = #"{"fused": {"chunk_n": 0}}"#
        let rc = json.withCString { aepo_fused_create($0, json.utf8.count, &h, &err) }
        #expect(rc == AEPO_ERR_CONFIG)
        #expect(h == nil)
    }
}

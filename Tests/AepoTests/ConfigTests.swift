import AepoConfig
@testable import AepoCore
import Testing

@Suite struct ConfigTests {
    @Test func defaultRoundTripIsByteIdentical() throws {
        let text = ConfigWriter.emit(Config())
        let parsed = try ConfigCodec.parse(text)
        #expect(parsed == Config())
        #expect(ConfigWriter.emit(parsed) == text)
    }
}

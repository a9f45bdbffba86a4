import AepoConfig
@testable import AepoCore
import AepoShim
import CAepoAPI
import Testing

@Suite struct SamplerErrorTests {
    func failure(_ body: () throws -> Void) -> AepoFailure? {
        do { try body() } catch let e as AepoFailure { return e } catch {
            return AepoFailure(.internal, "test", "unexpected error \(error)")
        }
        return nil
    }

    @Test func temperatureAtOrBelowZeroPointsToGreedy() {
        for t in [0.0, -1.0, .nan, .infinity, 1e-40] {
            let f = failure { _ = try runSampler(makeSamplerConfig(), [1, 2, 3], rows: 1, vocab: 3, temperature: t) }
            #expect(f?.kind == .invalidArgument && f?.argument == "temperature", "T = \(t): \(String(describing: f))")
            #expect(f?.message.contains("sampler.greedy") == true, "T = \(t): \(f?.message ?? "no error")")
            let c = failure { _ = try Sampler(makeSamplerConfig(temperature: t)) }
            #expect(c?.kind == .config && c?.argument == "sampler.temperature" && c?.message.contains("sampler.greedy") == true,
                    "config T = \(t): \(String(describing: c))")
        }
        let parsed = failure { _ = try ConfigCodec.parse(#"{"sampler": {"temperature": 0}}"#) }
        #expect(parsed?.argument == "sampler.temperature" && parsed?.message.contains("sampler.greedy") == true)
    }

    @Test func truncationSettingsOutOfRange() {
        let bad: [(String, String, SamplerConfig)] = [
            (#"{"sampler": {"top_p": 0}}"#, "sampler.top_p", makeSamplerConfig(topP: 0)),
            (#"{"sampler": {"top_p": 1.5}}"#, "sampler.top_p", makeSamplerConfig(topP: 1.5)),
            (#"{"sampler": {"top_k": -1}}"#, "sampler.top_k", makeSamplerConfig(topK: -1)),
            (#"{"sampler": {"min_p": 1}}"#, "sampler.min_p", makeSamplerConfig(minP: 1)),
            (#"{"sampler": {"min_p": -0.1}}"#, "sampler.min_p", makeSamplerConfig(minP: -0.1)),
        ]
        for (json, path, cfg) in bad {
            let p = failure { _ = try ConfigCodec.parse(json) }
            #expect(p?.kind == .config && p?.argument == path, "\(json): \(String(describing: p))")
            let s = failure { _ = try Sampler(cfg) }
            #expect(s?.kind == .config && s?.argument == path, "\(path): \(String(describing: s))")
            #expect(s?.message.contains("out of range") == true)
        }
    }

    @Test func nonFiniteRowsNameTheLowestBadRow() {
        let v = 300
        var x = testNormals(6 * v, seed: 1, scale: 1)
        x[4 * v + 17] = .nan
        x[2 * v + 250] = .nan
        let modes = [makeSamplerConfig(), makeSamplerConfig(minP: 0.1), makeSamplerConfig(topK: 5),
                     makeSamplerConfig(topP: 0.9), makeSamplerConfig(greedy: true)]
        for isa in samplerISAs {
            for threads: Int64 in [1, 2] {
                for var cfg in modes {
                    cfg.threads = threads
                    for wantT1 in [true, false] {
                        let f = failure { _ = try runSampler(cfg, x, rows: 6, vocab: v, isa: isa, logpT1: wantT1) }
                        #expect(f?.kind == .nonFinite && f?.index == 2 && f?.argument == "logits",
                                "\(isa) \(cfg): \(String(describing: f))")
                        #expect(f?.message.contains("logits[2, 250] is nan") == true, "\(f?.message ?? "no error")")
                    }
                }
            }
            var inf = testNormals(v, seed: 2, scale: 1)
            inf[3] = .infinity
            for cfg in modes {
                let f = failure { _ = try runSampler(cfg, inf, rows: 1, vocab: v, isa: isa) }
                #expect(f?.kind == .nonFinite && f?.message.contains("logits[0, 3] is inf") == true,
                        "\(isa) \(cfg): \(String(describing: f))")
            }
        }
        let allMasked = [Float](repeating: -.infinity, count: 2 * v)
        for isa in samplerISAs {
            for cfg in modes {
                let g = failure { _ = try runSampler(cfg, allMasked, rows: 2, vocab: v, isa: isa) }
                #expect(g?.kind == .invalidArgument && g?.index == 0 && g?.message.contains("all -inf") == true,
                        "\(isa) \(cfg): \(String(describing: g))")
            }
        }
    }

    @Test func shapesAndCoordinates() throws {
        let sampler = try Sampler(makeSamplerConfig())
        let x = [Float](repeating: 0, count: 64)
        var t = [Int32](repeating: 0, count: 8)
        func call(_ n: Int, _ v: Int, _ stride: Int, step: Int64 = 0, position: Int64 = 0, offset: Int64 = 0) -> AepoFailure? {
            failure {
                try x.withUnsafeBufferPointer { xp throws(AepoFailure) in
                    try t.withUnsafeMutableBufferPointer { tp throws(AepoFailure) in
                        try sampler.sample(logits: xp.baseAddress!, rows: n, vocab: v, rowStride: stride, step: step,
                                           position: position, rowOffset: offset, temperature: nil,
                                           tokens: tp.baseAddress!, logp: nil, logpT1: nil, kept: nil)
                    }
                }
            }
        }
        #expect(call(-1, 8, 8)?.kind == .shape && call(-1, 8, 8)?.argument == "N")
        #expect(call(2, -8, 8)?.argument == "V")
        #expect(call(2, 0, 8)?.kind == .shape && call(2, 0, 8)?.argument == "V")
        #expect(call(2, 8, 7)?.kind == .shape && call(2, 8, 7)?.argument == "row_stride")
        #expect(call(2, Int(Int32.max) + 1, Int(Int32.max) + 1)?.argument == "V")
        #expect(call(3, 8, Int.max / 2)?.kind == .shape)
        #expect(call(2, 8, 8, step: -1)?.argument == "step")
        #expect(call(2, 8, 8, position: -1)?.argument == "position")
        #expect(call(2, 8, 8, offset: -1)?.argument == "row_offset")
        #expect(call(2, 8, 8, offset: .max)?.argument == "row_offset")
        #expect(call(2, 8, 8) == nil)
        #expect(call(0, 0, 0) == nil)
    }

    /// The C entry points: NULL handling, statuses and the error record.
    @Test func cEntryPoints() {
        var err = aepo_error()
        #expect(aepo_sampler_create(nil, 0, nil, &err) == AEPO_ERR_NULL_POINTER)
        #expect(String(cString: withUnsafeBytes(of: err.argument) { Array($0.bindMemory(to: CChar.self)) + [0] }) == "out")

        var h: OpaquePointer?
        let bad = #"{"sampler": {"top_k": -3}}"#
        #expect(aepo_sampler_create(bad, bad.utf8.count, &h, &err) == AEPO_ERR_CONFIG && h == nil)
        let json = #"{"sampler": {"top_p": 0.9, "seed": 3}}"#
        #expect(aepo_sampler_create(json, json.utf8.count, &h, &err) == AEPO_OK && h != nil)
        defer { aepo_sampler_free(h) }
        aepo_sampler_free(nil)

        var len = 0
        #expect(aepo_sampler_config_json(h, nil, 0, &len, &err) == AEPO_OK && len > 0)
        var buf = [CChar](repeating: 0, count: len + 1)
        #expect(aepo_sampler_config_json(h, &buf, len + 1, &len, &err) == AEPO_OK)
        let text = String(cString: buf)
        #expect(text.contains("\"top_p\": 0.9") && text.contains("\"seed\": 3"), "\(text)")
        #expect(aepo_sampler_config_json(nil, &buf, len + 1, &len, &err) == AEPO_ERR_NULL_POINTER)

        let x: [Float] = [0.5, 1.5, -2, 3, 0, 0, 1, 2]
        var tok = [Int32](repeating: -1, count: 2), lp = [Float](repeating: 0, count: 2)
        var l1 = [Float](repeating: 0, count: 2), kept = [Int32](repeating: 0, count: 2)
        var t = 1.3
        #expect(aepo_sampler_sample(h, x, 2, 4, 4, 0, 0, 0, &t, &tok, &lp, &l1, &kept, &err) == AEPO_OK)
        #expect(tok.allSatisfy { $0 >= 0 && $0 < 4 } && kept.allSatisfy { $0 >= 1 && $0 <= 4 })
        #expect(aepo_sampler_sample(h, x, 2, 4, 4, 0, 0, 0, nil, &tok, nil, nil, nil, nil) == AEPO_OK)
        #expect(aepo_sampler_sample(nil, x, 2, 4, 4, 0, 0, 0, nil, &tok, nil, nil, nil, &err) == AEPO_ERR_NULL_POINTER)
        #expect(aepo_sampler_sample(h, nil, 2, 4, 4, 0, 0, 0, nil, &tok, nil, nil, nil, &err) == AEPO_ERR_NULL_POINTER)
        #expect(aepo_sampler_sample(h, x, 2, 4, 4, 0, 0, 0, nil, nil, nil, nil, nil, &err) == AEPO_ERR_NULL_POINTER)
        t = 0
        #expect(aepo_sampler_sample(h, x, 2, 4, 4, 0, 0, 0, &t, &tok, nil, nil, nil, &err) == AEPO_ERR_INVALID_ARGUMENT)
        #expect(err.status == AEPO_ERR_INVALID_ARGUMENT)
        #expect(aepo_sampler_sample(h, x, 2, 4, 3, 0, 0, 0, nil, &tok, nil, nil, nil, &err) == AEPO_ERR_SHAPE)
    }
}

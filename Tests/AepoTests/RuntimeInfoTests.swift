import AepoConfig
@testable import AepoCore
import AepoShim
import CAepoAPI
import Foundation
import Testing

/// The runtime report: levels of CPUs and OpenBLAS cores, the warning for a core below the
/// CPU (with its fix), the probe of this machine, and the C text.
@Suite struct RuntimeInfoTests {
    static func cpu(_ features: [String], ymm: Bool = true, zmm: Bool = true, vendor: String = "GenuineIntel")
        -> RuntimeInfo.CPU {
        var c = RuntimeInfo.CPU()
        c.vendor = vendor
        c.features = features
        c.osSavesYMM = ymm
        c.osSavesZMM = zmm
        return c
    }

    static func openBLAS(_ core: String) -> RuntimeInfo.BLAS {
        var b = RuntimeInfo.BLAS()
        b.isOpenBLAS = true
        b.core = core
        return b
    }

    static let avx512 = ["sse4_2", "avx", "fma", "avx2", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]

    @Test func cpuLevelNeedsTheInstructionsAndTheOSState() {
        #expect(RuntimeInfo.level(of: Self.cpu(Self.avx512)) == .avx512)
        // Without the OS saving the ZMM registers, AVX-512 cannot be used.
        #expect(RuntimeInfo.level(of: Self.cpu(Self.avx512, zmm: false)) == .avx2)
        // AVX-512F alone (no BW/DQ/VL) is not the level OpenBLAS's SkylakeX kernels need.
        #expect(RuntimeInfo.level(of: Self.cpu(["avx", "fma", "avx2", "avx512f"])) == .avx2)
        #expect(RuntimeInfo.level(of: Self.cpu(["avx", "fma", "avx2"], ymm: false, zmm: false)) == .baseline)
        #expect(RuntimeInfo.level(of: Self.cpu(["avx"], zmm: false)) == .avx)
        #expect(RuntimeInfo.level(of: Self.cpu([])) == .baseline)
    }

    @Test func openBLASCoresHaveLevels() {
        #expect(RuntimeInfo.level(ofOpenBLASCore: "SkylakeX") == .avx512)
        #expect(RuntimeInfo.level(ofOpenBLASCore: "COOPERLAKE") == .avx512)
        #expect(RuntimeInfo.level(ofOpenBLASCore: "Haswell") == .avx2)
        #expect(RuntimeInfo.level(ofOpenBLASCore: "Zen") == .avx2)
        #expect(RuntimeInfo.level(ofOpenBLASCore: "Sandybridge") == .avx)
        #expect(RuntimeInfo.level(ofOpenBLASCore: "Prescott") == .baseline)
        #expect(RuntimeInfo.level(ofOpenBLASCore: "SomethingNew") == nil)
    }

    @Test func aCoreBelowTheCPUIsAWarningWithTheFix() {
        let w = RuntimeInfo.warnings(cpu: Self.cpu(Self.avx512), blas: Self.openBLAS("Prescott"))
        #expect(w.count == 1)
        #expect(w.first?.contains("OPENBLAS_CORETYPE=SkylakeX") == true)
        #expect(w.first?.contains("Prescott") == true)
        let amd = RuntimeInfo.warnings(cpu: Self.cpu(["avx", "fma", "avx2"], zmm: false, vendor: "AuthenticAMD"),
                                       blas: Self.openBLAS("Sandybridge"))
        #expect(amd.first?.contains("OPENBLAS_CORETYPE=Zen") == true)
        let intel = RuntimeInfo.warnings(cpu: Self.cpu(["avx", "fma", "avx2"], zmm: false),
                                         blas: Self.openBLAS("Nehalem"))
        #expect(intel.first?.contains("OPENBLAS_CORETYPE=Haswell") == true)
    }

    @Test func noWarningWhenTheCoreFitsOrIsUnknown() {
        #expect(RuntimeInfo.warnings(cpu: Self.cpu(Self.avx512), blas: Self.openBLAS("SkylakeX")).isEmpty)
        #expect(RuntimeInfo.warnings(cpu: Self.cpu(Self.avx512), blas: Self.openBLAS("SapphireRapids")).isEmpty)
        // A core above what the OS allows (forced by the user) is not this warning's business.
        #expect(RuntimeInfo.warnings(cpu: Self.cpu(Self.avx512, zmm: false), blas: Self.openBLAS("Haswell")).isEmpty)
        #expect(RuntimeInfo.warnings(cpu: Self.cpu(Self.avx512), blas: Self.openBLAS("FutureCore")).isEmpty)
        var other = RuntimeInfo.BLAS()
        other.core = "Prescott"  // not OpenBLAS: no core to judge
        #expect(RuntimeInfo.warnings(cpu: Self.cpu(Self.avx512), blas: other).isEmpty)
    }

    /// The probe of this machine agrees with Linux's view of the CPU.
    @Test func probeAgreesWithProcCpuinfo() throws {
        let info = RuntimeInfo.probe()
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return }
        let flags = Set(line.split(separator: ":")[1].split(separator: " ").map(String.init))
        for (ours, linux) in [("avx2", "avx2"), ("fma", "fma"), ("avx512f", "avx512f"), ("avx512bw", "avx512bw"),
                              ("avx512vl", "avx512vl"), ("sse4_2", "sse4_2")] {
            #expect(info.cpu.features.contains(ours) == flags.contains(linux), "\(ours)")
        }
        #expect(!info.cpu.vendor.isEmpty)
        #expect(info.kernels.map(\.family) == ["logits", "sampler", "fused_head", "loss"])
        #expect(info.blas.library.contains("blas"))
    }

    /// aepo_runtime_info: the size query, the text, and a buffer that is too small.
    @Test func cTextFollowsTheSizeQueryRule() throws {
        var len = 0
        var err = aepo_error()
        #expect(aepo_runtime_info(nil, 0, &len, &err) == AEPO_OK && len > 0)
        var buf = [CChar](repeating: 0, count: len + 1)
        #expect(aepo_runtime_info(&buf, buf.count, &len, &err) == AEPO_OK)
        let text = String(decoding: buf.prefix(len).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        #expect(Set(object?.keys.map { $0 } ?? []) == ["abi", "blas", "cpu", "kernels", "version", "warnings"])
        #expect(object?["abi"] as? Int == Int(AEPO_ABI_VERSION))
        var small = [CChar](repeating: 65, count: 4)
        #expect(aepo_runtime_info(&small, small.count, &len, &err) == AEPO_ERR_BUFFER_TOO_SMALL && small[0] == 0)
        #expect(aepo_runtime_info(nil, 4, &len, &err) == AEPO_ERR_NULL_POINTER)
    }
}

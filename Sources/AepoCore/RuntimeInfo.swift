import CAepoKernels

/// What the library runs on, for `aepo_runtime_info`: the CPU's instruction sets, the kernel
/// path each kernel family chose, the BLAS and its core, and warnings for a setup that is
/// slower than the machine allows (today: an OpenBLAS core below the CPU).
public struct RuntimeInfo: Sendable {
    public struct CPU: Sendable, Equatable {
        public var vendor = ""
        public var brand = ""
        /// The instruction sets this library cares about that the CPU has, in a fixed order.
        public var features: [String] = []
        /// The OS saves the YMM (AVX) and ZMM/opmask (AVX-512) registers (XGETBV).
        public var osSavesYMM = false
        public var osSavesZMM = false
        public init() {}
    }

    public struct BLAS: Sendable, Equatable {
        /// The file that provides cblas_sgemm.
        public var library = ""
        /// OpenBLAS's build configuration and the core it chose; "" for another CBLAS.
        public var config = ""
        public var core = ""
        /// OpenBLAS's thread count; nil when the BLAS cannot say.
        public var threads: Int?
        public var isOpenBLAS = false
        public init() {}
    }

    public var cpu = CPU()
    public var blas = BLAS()
    /// Each kernel family and the path it runs: (family, path), in a fixed order.
    public var kernels: [(family: String, path: String)] = []
    public var warnings: [String] = []

    public init() {}

    /// The instruction-set level of a CPU (with the OS's register state) or of a BLAS core.
    public enum Level: Int, Sendable, Comparable {
        case baseline = 0, avx = 1, avx2 = 2, avx512 = 3
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        public var name: String {
            switch self {
            case .baseline: return "SSE"
            case .avx: return "AVX"
            case .avx2: return "AVX2"
            case .avx512: return "AVX-512"
            }
        }
    }

    /// The level the CPU and OS together support.
    public static func level(of cpu: CPU) -> Level {
        let f = Set(cpu.features)
        if cpu.osSavesZMM && f.isSuperset(of: ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]) {
            return .avx512
        }
        if cpu.osSavesYMM && f.isSuperset(of: ["avx2", "fma"]) { return .avx2 }
        if cpu.osSavesYMM && f.contains("avx") { return .avx }
        return .baseline
    }

    /// The level of an OpenBLAS core (its `openblas_get_corename`), nil for a name this
    /// table does not know.
    public static func level(ofOpenBLASCore core: String) -> Level? {
        switch core.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": return .avx512
        case "haswell", "zen", "skylake", "excavator": return .avx2
        case "sandybridge", "bulldozer", "piledriver", "steamroller": return .avx
        case "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "athlon", "opteron",
             "opteron_sse3", "barcelona", "bobcat", "katmai", "coppermine", "northwood", "banias", "nano":
            return .baseline
        default: return nil
        }
    }

    /// The OpenBLAS core to force for a CPU level.
    static func suggestedCore(_ level: Level, vendor: String) -> String {
        switch level {
        case .avx512: return "SkylakeX"
        case .avx2: return vendor == "AuthenticAMD" ? "Zen" : "Haswell"
        case .avx: return "Sandybridge"
        case .baseline: return "Prescott"
        }
    }

    /// The warnings for a CPU and BLAS: an OpenBLAS core below what the CPU supports (its
    /// sgemm, and so the fused head, runs several times slower), with the exact fix.
    public static func warnings(cpu: CPU, blas: BLAS) -> [String] {
        guard blas.isOpenBLAS, let coreLevel = level(ofOpenBLASCore: blas.core) else { return [] }
        let cpuLevel = level(of: cpu)
        guard coreLevel < cpuLevel else { return [] }
        let want = suggestedCore(cpuLevel, vendor: cpu.vendor)
        return ["OpenBLAS runs its \(blas.core) kernels (\(coreLevel.name)) on a CPU with \(cpuLevel.name): "
                + "cblas_sgemm, on which the fused head runs, is several times slower than this CPU allows. "
                + "Set OPENBLAS_CORETYPE=\(want) in the environment before the process loads libaepo "
                + "(export it in the shell, or set os.environ before the first import of aepo, numpy or "
                + "torch). The Python binding sets it itself when it is unset."]
    }

    /// The machine this process runs on.
    public static func probe() -> RuntimeInfo {
        var info = RuntimeInfo()
        var c = aepok_cpu()
        aepok_cpu_probe(&c)
        info.cpu.vendor = text(&c.vendor)
        info.cpu.brand = text(&c.brand)
        let flags: [(String, Int32)] = [
            ("sse4_2", c.sse42), ("avx", c.avx), ("fma", c.fma), ("avx2", c.avx2), ("avx512f", c.avx512f),
            ("avx512cd", c.avx512cd), ("avx512bw", c.avx512bw), ("avx512dq", c.avx512dq),
            ("avx512vl", c.avx512vl), ("avx512_vnni", c.avx512vnni), ("avx512_bf16", c.avx512bf16),
            ("avx512_fp16", c.avx512fp16), ("amx_tile", c.amx_tile),
        ]
        info.cpu.features = flags.filter { $0.1 != 0 }.map(\.0)
        info.cpu.osSavesYMM = c.os_ymm != 0
        info.cpu.osSavesZMM = c.os_zmm != 0
        var b = aepok_blas()
        aepok_blas_probe(&b)
        info.blas.library = text(&b.library)
        info.blas.config = text(&b.config)
        info.blas.core = text(&b.core)
        info.blas.threads = b.threads >= 0 ? Int(b.threads) : nil
        info.blas.isOpenBLAS = b.is_openblas != 0
        let isa = "\(KernelISA.best)"
        info.kernels = [("logits", isa), ("sampler", isa), ("fused_head", "\(isa) + cblas_sgemm"), ("loss", "swift")]
        info.warnings = warnings(cpu: info.cpu, blas: info.blas)
        return info
    }

    /// A fixed-size C char array as a String.
    private static func text<T>(_ tuple: inout T) -> String {
        withUnsafeBytes(of: &tuple) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return String(decoding: bytes, as: UTF8.self)
        }
    }
}

// swift-tools-version:6.0
// libaepo: controllable policy entropy for RL finetuning (AEPO, arXiv 2510.08141).
//
// Targets, dependencies pointing one way:
//   AepoShim (C ABI, the only exports) -> AepoConfig (Jansson codec) -> AepoCore (pure Swift numerics)
//   AepoShim -> AepoCore
// The shipped libaepo.so is built by `make`, which adds -static-stdlib, the SONAME and the
// export map on the command line so that this manifest stays free of unsafe flags.
import PackageDescription

let package = Package(
    name: "libaepo",
    products: [
        .library(name: "aepo", type: .dynamic, targets: ["AepoShim"]),
    ],
    targets: [
        .systemLibrary(name: "CJansson", path: "Sources/CJansson", pkgConfig: "jansson",
                       providers: [.apt(["libjansson-dev"])]),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        // The public header include/aepo.h as a Clang module, so that every export is an
        // `@c @implementation` checked against its prototype at compile time.
        .systemLibrary(name: "CAepoAPI", path: "Sources/CAepoAPI"),
        // AVX2 twins of the hottest kernel loops, picked at run time (the library itself stays
        // baseline x86-64: the instruction set is a per-function attribute, not a flag).
        .target(name: "CAepoKernels", path: "Sources/CAepoKernels"),
        .target(name: "AepoCore", dependencies: ["COpenBLAS", "CAepoKernels"], path: "Sources/AepoCore"),
        .target(name: "AepoConfig", dependencies: ["AepoCore", "CJansson"], path: "Sources/AepoConfig"),
        .target(name: "AepoShim", dependencies: ["AepoCore", "AepoConfig", "CAepoAPI"], path: "Sources/AepoShim"),
        // `make bench`: each kernel path this CPU has, timed against the others.
        .executableTarget(name: "aepo-isa-bench", dependencies: ["AepoCore"], path: "bench/isa"),
        .testTarget(name: "AepoTests", dependencies: ["AepoCore", "AepoConfig", "AepoShim", "CAepoAPI"],
                    path: "Tests/AepoTests"),
    ]
)

// swift-tools-version:6.0
import PackageDescription

/// The data plane's modules in release builds: no run-time exclusivity checks. Their state is confined to one
/// event loop, and debug builds (every test) keep the checks, so a violation fails a test instead of shipping;
/// in release the checks were about 2.5% of the CPU of a proxied request (`swift_beginAccess` and the access
/// set it maintains; docs/benchmarks.md). The Makefile's and the Dockerfile's release builds go further and pass
/// the flag to every module, NIO's included (docs/decisions.md); this keeps a plain `swift build -c release` fast
/// where it matters most.
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "Albatross",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "alb", targets: ["alb"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.100.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.2.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // Only the symbols a shared library linked here asks for are exported (not every Swift symbol, 45,000
        // of them): the Swift runtime's start-up calls `dladdr`, which searches the exported symbols one by one,
        // and that search was about a sixth of the process's start (`alb --help` 7.1 -> 5.7 ms; docs/decisions.md).
        .executableTarget(
            name: "alb", dependencies: ["ALBCLI"],
            linkerSettings: [.unsafeFlags(["-Xlinker", "--no-export-dynamic"], .when(platforms: [.linux]))]),
        .target(name: "ALBCLI", dependencies: [
            "ALBManifest", "ALBReconciler",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .target(name: "ALBManifest", dependencies: [
            .product(name: "Yams", package: "Yams"),
        ]),
        .target(name: "ALBReconciler", dependencies: [
            "ALBManifest", "ALBDataPlane", "ALBTLS",
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "Yams", package: "Yams"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ]),
        .target(name: "ALBDataPlane", dependencies: [
            "ALBHTTP", "ALBTLS", "ALBQUIC", "CLinuxEvents",
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOTLS", package: "swift-nio"),
            .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Atomics", package: "swift-atomics"),
        ], swiftSettings: hotPath),
        .target(name: "ALBTLS", dependencies: [
            "ALBHTTP", "ALBOpenSSL",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "Crypto", package: "swift-crypto"),
        ], swiftSettings: hotPath),
        // OpenSSL's libcrypto for RSA private keys only: the headers of Debian's libssl-dev; the library is
        // opened at run time, not linked (Sources/CLibcrypto/shim.h). ALBOpenSSL owns every pointer.
        .systemLibrary(name: "CLibcrypto", providers: [.apt(["libssl-dev"])]),
        .target(name: "ALBOpenSSL", dependencies: ["CLibcrypto"], swiftSettings: hotPath),
        .target(name: "ALBHTTP", dependencies: [
            "CZlib", "CBrotli",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ], swiftSettings: hotPath),
        // Response compression's C libraries (Debian zlib1g-dev, libbrotli-dev), seen only by the owner
        // classes in ALBHTTP (GzipEncoder, BrotliEncoder).
        // epoll, eventfd and malloc_trim, which Glibc's Swift module leaves out: only ParkedConnections uses them.
        .systemLibrary(name: "CLinuxEvents"),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CBrotli", pkgConfig: "libbrotlienc", providers: [.apt(["libbrotli-dev"])]),
        // QUIC (docs/quic.md): Debian's ngtcp2 0.12 (with its GnuTLS crypto helper, linked by the module map)
        // and nghttp3 0.8, installed by `make deps`. Only ALBQUIC imports these modules.
        .systemLibrary(name: "CNgtcp2", pkgConfig: "libngtcp2",
                       providers: [.apt(["libngtcp2-dev", "libngtcp2-crypto-gnutls-dev", "libgnutls28-dev"])]),
        .systemLibrary(name: "CNghttp3", pkgConfig: "libnghttp3", providers: [.apt(["libnghttp3-dev"])]),
        .target(name: "ALBQUIC", dependencies: [
            "CNgtcp2", "CNghttp3",
            .product(name: "NIOCore", package: "swift-nio"),
        ], swiftSettings: hotPath),
        // Fuzz targets (docs/fuzzing.md). `make fuzz` builds them with `--sanitize fuzzer` and
        // `-DALB_LIBFUZZER`, where libFuzzer supplies `main`; a plain `swift build` builds them as small
        // replay tools that run the same check over files given as arguments (a crasher, a corpus).
        .target(name: "FuzzReplay", path: "fuzz/Replay"),
        .executableTarget(name: "alb-fuzz-manifest", dependencies: ["ALBManifest", "FuzzReplay"],
                          path: "fuzz/ManifestDecoder"),
        .executableTarget(name: "alb-fuzz-http1", dependencies: [
            "ALBHTTP", "FuzzReplay",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ], path: "fuzz/HTTP1Request"),
        .executableTarget(name: "alb-fuzz-quic-datagram", dependencies: [
            "ALBQUIC", "FuzzReplay",
            .product(name: "NIOCore", package: "swift-nio"),
        ], path: "fuzz/QUICDatagram"),
        .testTarget(name: "ALBManifestTests", dependencies: ["ALBManifest"]),
        .testTarget(name: "ALBQUICTests", dependencies: [
            "ALBQUIC",
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .testTarget(name: "ALBReconcilerTests", dependencies: [
            "ALBReconciler", "ALBDataPlane",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Yams", package: "Yams"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .testTarget(name: "ALBHTTPTests", dependencies: [
            "ALBHTTP", "CZlib", "CBrotli",
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),
        .testTarget(name: "ALBTLSTests", dependencies: [
            "ALBTLS", "ALBOpenSSL",
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOTLS", package: "swift-nio"),
        ]),
        .testTarget(name: "ALBDataPlaneTests", dependencies: [
            "ALBDataPlane", "ALBQUIC",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),
    ]
)

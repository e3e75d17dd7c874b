// swift-tools-version:5.9
// The floor of a SwiftNIO proxy, for `make bench` (tests/bench.sh): built against the NIO checkout alb itself was
// built with (`.build/checkouts`, whose manifests find their own dependencies beside them when
// SWIFTCI_USE_LOCAL_DEPS is set), so it needs no network and measures the same NIO.
import PackageDescription

let package = Package(
    name: "nio-relay",
    dependencies: [.package(path: "../../.build/checkouts/swift-nio")],
    targets: [
        .executableTarget(
            name: "nio-relay",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        )
    ]
)

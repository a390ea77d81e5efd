// swift-tools-version:6.1
// The import direction of these targets is the one in ARCHITECTURE.md: arrows point down.
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("ExistentialAny"),
]

// ThreadSanitizer's build (scripts/sanitize.sh) runs only the unit tests of the modules with
// threads and event loops. With PEERJS_PACKAGE_SUBSET=unit the package holds only those tests and
// what they import (see the end of this file): its cold build then skips the executables, the
// process tests, and the packages only they need (postgres-nio, jwt-kit, argument parsing).
let subset = Context.environment["PEERJS_PACKAGE_SUBSET"] ?? ""
let unitSubset = subset == "unit"
// AddressSanitizer's build (PEERJS_PACKAGE_SUBSET=daemon) leaves out the Hummingbird adapter, its
// example and tests (and Hummingbird with them): the sanitizers check the daemon's code.
let withHummingbird = subset.isEmpty

let package = Package(
    name: "peerjs",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "peerjs", targets: ["peerjs"]),
        .executable(name: "peerjs-bench", targets: ["peerjs-bench"]),
        // libFuzzer targets (README, "Fuzz it"); scripts/fuzz.sh builds them with -sanitize=fuzzer.
        .executable(name: "fuzz-http", targets: ["fuzz-http"]),
        .executable(name: "fuzz-envelope", targets: ["fuzz-envelope"]),
        .executable(name: "fuzz-ipc", targets: ["fuzz-ipc"]),
        .executable(name: "fuzz-files", targets: ["fuzz-files"]),
        .executable(name: "fuzz-jwt", targets: ["fuzz-jwt"]),
        // PeerJS signalling inside a Swift server app (issue 19; README, "Embed it in a Swift server").
        .library(name: "PeerJSKit", targets: ["PeerJSKit"]),
    ] + (withHummingbird ? [
        .library(name: "PeerJSHummingbird", targets: ["PeerJSHummingbird"]),
        .executable(name: "peerjs-hummingbird-example", targets: ["peerjs-hummingbird-example"]),
    ] : []),
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto.git", "4.1.0"..<"6.0.0"),
        // The metrics endpoint's exposition format (issue 19): the broker's and the supervisor's series.
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ] + (unitSubset ? [] : [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        .package(url: "https://github.com/swift-extras/swift-extras-base64", from: "1.2.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ]) + (withHummingbird ? [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
    ] : []),
    targets: [
        // Tiny C shims (named CShim: swift-system owns the name CSystem) for what Swift's Glibc module cannot reach (_GNU_SOURCE calls, CMSG macros).
        .target(name: "CShim"),
        // epoll for peerjs-bench's client loop (Swift's Glibc module lacks <sys/epoll.h>).
        .target(name: "CEpoll"),
        // libsystemd: socket activation (sd_listen_fds_with_names) and sd_notify, for the supervisor only.
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        // libseccomp through pkg-config; only Sandbox imports it.
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        .target(name: "PeerProtocol", swiftSettings: strict),
        .target(name: "IPC", dependencies: ["CShim"], swiftSettings: strict),
        // Privilege drop, rlimits and the seccomp allow-list (Sources/Sandbox/SeccompPolicy.swift).
        .target(name: "Sandbox", dependencies: ["CSeccomp", "CShim"], swiftSettings: strict),
        .target(
            name: "Broker",
            dependencies: [
                "PeerProtocol", "IPC",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        // The embeddable server (issue 19): the broker's engine and handlers in an app's process,
        // mounted at a path of its NIO server. No Sandbox, no system libraries.
        .target(
            name: "PeerJSKit",
            dependencies: [
                "Broker", "IPC", "PeerProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The auth helper: users file, policy program (JSON lines), events. No NIO, no Sandbox.
        .target(
            name: "AuthHelper",
            dependencies: ["IPC", "PeerProtocol", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // JWT verification for the auth helper (jwt-kit), kept out of AuthHelper so that it imports
        // only IPC, PeerProtocol and Logging; the executable plugs it in.
        .target(
            name: "AuthJWT",
            dependencies: [
                "AuthHelper",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "ExtrasBase64", package: "swift-extras-base64"),
            ],
            swiftSettings: strict
        ),
        // The cluster role (issue 18): the peer directory and the relay between instances, the
        // only code that talks to PostgreSQL (postgres-nio). Imports IPC, not the broker.
        .target(
            name: "Cluster",
            dependencies: [
                "IPC",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The `--config` file reader, kept out of the executable so that fuzz-files can reach it.
        .target(name: "PeerJSConfiguration", swiftSettings: strict),
        .target(
            name: "Supervisor",
            dependencies: [
                "IPC", "CShim", "CSystemd", "Sandbox",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "peerjs",
            dependencies: [
                "PeerProtocol", "IPC", "Broker", "Supervisor", "Sandbox", "AuthHelper", "AuthJWT", "PeerJSConfiguration", "Cluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The load generator and the trivial reference relay (issue 7). An independent client:
        // it imports none of the server's modules.
        .executableTarget(
            name: "peerjs-bench",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
                "CEpoll",
            ],
            swiftSettings: strict
        ),
        // Fuzz targets (issue 15): one executable per parser family under Sources/Fuzz. Built with
        // `-sanitize=fuzzer -DFUZZING` (scripts/fuzz.sh) each is a libFuzzer binary; a plain build
        // makes each a replayer of the files it is given (`swift run fuzz-ipc crash-…`).
        // CLibFuzzer declares libFuzzer's LLVMFuzzerRunDriver (the -sanitize=fuzzer runtime defines it).
        .systemLibrary(name: "CLibFuzzer", path: "Sources/Fuzz/CLibFuzzer"),
        .target(name: "FuzzSupport", dependencies: ["CLibFuzzer"], path: "Sources/Fuzz/FuzzSupport", swiftSettings: strict),
        .executableTarget(
            name: "fuzz-http", dependencies: ["FuzzSupport", "Broker"], path: "Sources/Fuzz/fuzz-http",
            swiftSettings: strict),
        .executableTarget(
            name: "fuzz-envelope", dependencies: ["FuzzSupport", "PeerProtocol"], path: "Sources/Fuzz/fuzz-envelope",
            swiftSettings: strict),
        .executableTarget(
            name: "fuzz-ipc", dependencies: ["FuzzSupport", "IPC"], path: "Sources/Fuzz/fuzz-ipc", swiftSettings: strict),
        .executableTarget(
            name: "fuzz-files", dependencies: ["FuzzSupport", "AuthHelper", "PeerJSConfiguration"], path: "Sources/Fuzz/fuzz-files",
            swiftSettings: strict),
        .executableTarget(
            name: "fuzz-jwt",
            dependencies: [
                "FuzzSupport", "AuthHelper", "AuthJWT",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ExtrasBase64", package: "swift-extras-base64"),
            ],
            path: "Sources/Fuzz/fuzz-jwt", swiftSettings: strict),
        // Test support: runs the real binary, speaks WebSocket and HTTP (plain or TLS) to it over 127.0.0.1.
        .target(
            name: "PeerJSTesting",
            dependencies: [
                "CShim",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "PeerProtocolTests", dependencies: ["PeerProtocol"], swiftSettings: strict),
        // The broker's channel handlers in isolation, on NIO's EmbeddedEventLoop (virtual time).
        .testTarget(
            name: "BrokerTests",
            dependencies: [
                "Broker", "PeerProtocol", "IPC",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The supervisor's decisions (SupervisorPolicy) without processes, at injected times.
        .testTarget(
            name: "SupervisorTests", dependencies: ["Supervisor", "IPC", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        .testTarget(name: "IPCTests", dependencies: ["IPC", "CShim", "PeerJSTesting"], swiftSettings: strict),
        .testTarget(name: "AuthHelperTests", dependencies: ["AuthHelper", "IPC"], swiftSettings: strict),
        // The instance-to-instance record format (ClusterRecord, in IPC); the role itself is tested
        // against a real PostgreSQL in ProcessModelTests.
        .testTarget(name: "ClusterTests", dependencies: ["IPC"], swiftSettings: strict),
        .testTarget(name: "PeerJSConfigurationTests", dependencies: ["PeerJSConfiguration"], swiftSettings: strict),
        .testTarget(name: "SandboxTests", dependencies: ["Sandbox", "CSeccomp"], swiftSettings: strict),
        // Runs the real binary in its sandbox: /proc status, refused calls, a PeerJS session.
        .testTarget(
            name: "SandboxProcessTests",
            dependencies: ["Sandbox", "PeerJSTesting", "peerjs"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ProcessModelTests",
            dependencies: [
                "PeerJSTesting", "peerjs", "peerjs-bench",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // TLS end to end: runs the real binary with a chain made by the openssl CLI in a temp dir.
        .testTarget(
            name: "TLSTests",
            dependencies: [
                "peerjs", "PeerJSTesting", "Supervisor", "IPC",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
    ] + (withHummingbird ? [
        // PeerJSKit in Hummingbird 2: a ServerChildChannel that mounts it beside the app's router.
        .target(
            name: "PeerJSHummingbird",
            dependencies: [
                "PeerJSKit",
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // examples/hummingbird: a page at / and signalling at /peerjs (scripts/test-interop.sh runs
        // peerjs-py against it).
        .executableTarget(
            name: "peerjs-hummingbird-example",
            dependencies: [
                "PeerJSKit", "PeerJSHummingbird",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "examples/hummingbird",
            swiftSettings: strict
        ),
        // The embedded server through Hummingbird's test client (live server on 127.0.0.1) and
        // PeerJS clients; a plain NIO server mounting it; the library's dependency graph.
        .testTarget(
            name: "PeerJSKitTests",
            dependencies: [
                "PeerJSKit", "PeerJSHummingbird", "PeerJSTesting", "peerjs-hummingbird-example",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
    ] : [])
)

if unitSubset {
    let kept: Set<String> = [
        "CShim", "PeerProtocol", "IPC", "Broker", "AuthHelper", "PeerJSConfiguration", "PeerJSTesting",
        "PeerProtocolTests", "BrokerTests", "IPCTests", "AuthHelperTests", "PeerJSConfigurationTests", "ClusterTests",
    ]
    package.targets.removeAll { !kept.contains($0.name) }
    package.products.removeAll()
}

// swift-tools-version:6.1
import PackageDescription

let nioCore: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")

let package = Package(
    name: "iscsi-target",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "iscsi-target", targets: ["iscsi-target"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
    ],
    targets: [
        // CRC32C with the CPU's crc32 instruction (SSE4.2), chosen at run time; table fallback.
        .target(name: "CCRC32C"),
        // Wire format: PDUs, digests, text keys. No I/O.
        .target(name: "ISCSIWire", dependencies: ["CCRC32C", nioCore]),
        // iSCSI session logic: login, negotiation, sequencing, data flow. Pure state machines.
        .target(name: "ISCSIEngine", dependencies: ["ISCSIWire", nioCore]),
        // SCSI device model over a block-store protocol. Knows nothing of iSCSI.
        .target(name: "SCSI", dependencies: [nioCore]),
        // Block stores: file-backed (pread/pwrite/fdatasync) and in-memory.
        .target(name: "BlockStores", dependencies: ["SCSI"]),
        // SBC write streams: a device extension over the SCSI module.
        .target(name: "SCSIStreams", dependencies: ["SCSI", nioCore]),
        // Copy offload: EXTENDED COPY parameter lists, the copy manager, the data mover.
        .target(name: "CopyOffload", dependencies: ["SCSI", "BlockStores", nioCore]),
        // The server: SwiftNIO channel pipeline, configuration, runtime.
        .target(
            name: "ISCSITarget",
            dependencies: [
                "ISCSIWire", "ISCSIEngine", "SCSI", "BlockStores", "CopyOffload", "SCSIStreams",
                nioCore,
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ]
        ),
        .executableTarget(
            name: "iscsi-target",
            dependencies: [
                "ISCSITarget",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Fuzzing entry points (libFuzzer with -sanitize=fuzzer -DFUZZING; a corpus replayer otherwise).
        .executableTarget(
            name: "iscsi-fuzz",
            dependencies: ["ISCSIWire", "ISCSIEngine", "SCSI", "BlockStores", "CopyOffload", nioCore]
        ),
        // libiscsi, the independent initiator, used by tests only.
        .systemLibrary(
            name: "CLibiscsi",
            path: "Tests/CLibiscsi",
            pkgConfig: "libiscsi",
            providers: [.apt(["libiscsi-dev"])]
        ),
        .testTarget(name: "ISCSIWireTests", dependencies: ["ISCSIWire", nioCore]),
        .testTarget(name: "ISCSIEngineTests", dependencies: ["ISCSIEngine", "ISCSIWire", nioCore]),
        .testTarget(name: "SCSITests", dependencies: ["SCSI", "BlockStores", nioCore]),
        .testTarget(name: "SCSIStreamsTests", dependencies: ["SCSIStreams", "SCSI", "BlockStores", nioCore]),
        .testTarget(name: "CopyOffloadTests", dependencies: ["CopyOffload", "SCSI", "BlockStores", nioCore]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "CLibiscsi", "ISCSITarget", nioCore,
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v5]
)

// Starts the target in-process on an ephemeral port with a throw-away state directory.

import Foundation
import ISCSITarget

/// The small definition most tests use: two 64 MiB LUNs on one target, plus a second target
/// with one write-through LUN (discovery must list both, and they must not share storage).
let integrationIQN = "iqn.2026-11.org.iscsi-target:integration"
let secondIQN = "iqn.2026-11.org.iscsi-target:integration-second"
let smallLUNBlocks: UInt64 = 64 * 1024 * 1024 / 512

let smallDefinition = """
    [server]
    listen = "127.0.0.1:0"
    state_dir = "state"

    [[target]]
    name = "\(integrationIQN)"
    alias = "integration"
    portal_group = 1

      [[target.lun]]
      number = 0
      file = "integration-lun0.img"
      size = "64MiB"
      block_size = 512
      cache = "write-back"

      [[target.lun]]
      number = 1
      file = "integration-lun1.img"
      size = "64MiB"
      block_size = 512
      cache = "write-back"

    [[target]]
    name = "\(secondIQN)"
    alias = "second"
    portal_group = 1

      [[target.lun]]
      number = 0
      file = "second-lun0.img"
      size = "16MiB"
      block_size = 512
      cache = "write-through"
    """

/// The repository's Targets/default.toml, read from the source tree.
func defaultDefinition() throws -> String {
    let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return try String(contentsOf: root.appendingPathComponent("Targets/default.toml"), encoding: .utf8)
}

struct RunningTarget {
    let server: TargetServer
    let port: Int
    let stateDirectory: String
    var portal: String { "127.0.0.1:\(port)" }
}

func makeStateDirectory() throws -> String {
    let path = FileManager.default.temporaryDirectory
        .appendingPathComponent("iscsi-integration-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Runs `body` against a freshly started target; stops it afterwards (also on failure).
/// With `stateDirectory` given the caller owns the directory (e.g. to restart over the same files);
/// otherwise a temporary one is created and removed.
func withTarget<T>(toml: String = smallDefinition, stateDirectory: String? = nil, advertise: String? = nil,
                   _ body: (RunningTarget) async throws -> T) async throws -> T {
    let directory = try stateDirectory ?? makeStateDirectory()
    defer { if stateDirectory == nil { try? FileManager.default.removeItem(atPath: directory) } }
    let configuration = try ServerConfiguration.parse(toml: toml, stateDirectory: directory,
                                                      listen: "127.0.0.1:0", advertise: advertise)
    let server = TargetServer(configuration: configuration)
    try await server.start()
    let running = RunningTarget(server: server, port: server.boundPort, stateDirectory: directory)
    let result: T
    do {
        result = try await body(running)
    } catch {
        try? await server.stop()
        throw error
    }
    try await server.stop()
    return result
}

//
// What the operator sees of a running server (`iscsi-target status`): targets and LUNs with
// their backing files, sessions with their negotiated parameters, copies in flight, ROD tokens
// with their state and time left, stream and group statistics.
//
// The server answers on a Unix domain socket, `<state_dir>/control.sock`, created with mode
// 0600 (the owner only). The protocol is one request line ("status") and one JSON document
// in reply, then the server closes the connection.
//
import CopyOffload
import Foundation
import NIOCore
import NIOPosix
import SCSI
import SCSIStreams

public struct SessionStatus: Codable, Sendable, Equatable {
    public var tsih: UInt16
    public var initiator: String
    public var isid: String
    /// nil for a discovery session.
    public var target: String?
    public var peer: String
    public var established: Date
    public var headerDigest: Bool
    public var dataDigest: Bool
    public var maxRecvDataSegmentLength: Int
    public var maxXmitDataSegmentLength: Int
    public var maxBurstLength: Int
    public var firstBurstLength: Int
    public var initialR2T: Bool
    public var immediateData: Bool
    public var maxOutstandingR2T: Int
}

public struct CountersStatus: Codable, Sendable, Equatable {
    public var readCommands: UInt64
    public var writeCommands: UInt64
    public var bytesRead: UInt64
    public var bytesWritten: UInt64
}

public struct StreamsStatus: Codable, Sendable, Equatable {
    /// Per stream identifier (index = identifier).
    public var streams: [CountersStatus]
    /// Groups (GROUP NUMBER) that saw any command: group number → counters.
    public var groups: [String: CountersStatus]
}

public struct CopyCountersStatus: Codable, Sendable, Equatable {
    public var operations: UInt64
    public var failedOperations: UInt64
    public var bytesRead: UInt64
    public var bytesWritten: UInt64
}

public struct FlashStatus: Codable, Sendable, Equatable {
    public var hostPageWrites: UInt64
    public var flashPageWrites: UInt64
    public var blockErases: UInt64
    public var writeAmplification: Double
    /// Logical flash pages that hold data (written and not trimmed).
    public var mappedPages: Int?
}

public struct LUNStatus: Codable, Sendable, Equatable {
    public var number: UInt16
    public var file: String
    public var bytes: UInt64
    public var blockSize: Int
    /// Bytes the backing file occupies on disk (sparse files: less than `bytes`).
    public var allocatedBytes: UInt64?
    public var cache: String
    public var thin: Bool
    public var readOnly: Bool
    public var copy: CopyCountersStatus?
    public var streams: StreamsStatus?
    /// The flash write-amplification model behind the LU, when configured.
    public var flash: FlashStatus?
}

public struct TargetStatus: Codable, Sendable, Equatable {
    public var name: String
    public var alias: String?
    public var portalGroup: UInt16
    public var luns: [LUNStatus]
    /// The ROD token limits in effect (`iscsi-target tokens` changes them).
    public var tokenLimits: TokenLimitsStatus?
}

public struct TokenLimitsStatus: Codable, Sendable, Equatable {
    public var maxTokens: Int
    public var defaultInactivityTimeout: UInt32
    public var maxInactivityTimeout: UInt32
    public var defaultRODType: String
}

public struct CopyStatus: Codable, Sendable, Equatable {
    public var target: String
    public var lun: UInt16
    public var listID: UInt32
    public var command: String
    public var initiator: String
    public var background: Bool
    public var bytesTransferred: UInt64
}

public struct TokenStatus: Codable, Sendable, Equatable {
    public var id: UInt64
    public var type: String
    public var state: String
    public var source: String
    /// "LBA+blocks" per range.
    public var ranges: [String]
    public var bytes: UInt64
    public var bytesPreserved: UInt64
    public var owner: String
    /// Seconds until expiry (valid) or until the tombstone goes (terminal); nil while in use.
    public var secondsLeft: Double?
}

public struct ServerStatus: Codable, Sendable, Equatable {
    public var portal: String
    public var started: Date
    public var targets: [TargetStatus]
    public var sessions: [SessionStatus]
    /// Copy operations with a list identifier running now.
    public var copies: [CopyStatus]
    /// Copies running now, with or without a list identifier.
    public var copiesRunning: Int
    public var tokens: [TokenStatus]
}

extension TargetServer {
    /// A snapshot of the server's state.
    public func status() -> ServerStatus {
        let (parts, started, context) = self.statusSources()
        var targets: [TargetStatus] = []
        var copies: [CopyStatus] = []
        var copiesRunning = 0
        for target in self.runningConfiguration.targets {
            let part = parts[target.name]
            var luns: [LUNStatus] = []
            for lun in target.luns {
                var allocated: UInt64?
                var info = stat()
                if stat(lun.path, &info) == 0 { allocated = UInt64(info.st_blocks) * 512 }
                let copyStats = part?.copy.manager.registry.unit(CopyUnitID(targetName: target.name, lun: lun.number))?
                    .statistics
                var streams: StreamsStatus?
                if let statistics = part?.streams.statistics(lun: lun.number) {
                    func counters(_ c: TransferCounters) -> CountersStatus {
                        CountersStatus(readCommands: c.readCommands, writeCommands: c.writeCommands,
                                       bytesRead: c.bytesRead, bytesWritten: c.bytesWritten)
                    }
                    var groups: [String: CountersStatus] = [:]
                    for (group, c) in statistics.groups.enumerated() where c.readCommands + c.writeCommands > 0 {
                        groups["\(group)"] = counters(c)
                    }
                    streams = StreamsStatus(streams: statistics.streams.map(counters), groups: groups)
                }
                luns.append(LUNStatus(
                    number: lun.number, file: lun.path, bytes: lun.byteCount, blockSize: lun.blockSize,
                    allocatedBytes: allocated, cache: lun.cache == .writeBack ? "write-back" : "write-through",
                    thin: lun.thinProvisioned, readOnly: lun.readOnly,
                    copy: copyStats.map { CopyCountersStatus(operations: $0.operations, failedOperations: $0.failedOperations,
                                                              bytesRead: $0.bytesRead, bytesWritten: $0.bytesWritten) },
                    streams: streams,
                    flash: part?.streams.flashReport(lun: lun.number).map {
                        FlashStatus(hostPageWrites: $0.hostPageWrites, flashPageWrites: $0.flashPageWrites,
                                    blockErases: $0.blockErases, writeAmplification: $0.writeAmplification,
                                    mappedPages: $0.mappedPages)
                    }))
            }
            let limits = part?.copy.tokenLimits
            targets.append(TargetStatus(
                name: target.name, alias: target.alias, portalGroup: target.portalGroupTag, luns: luns,
                tokenLimits: limits.map {
                    TokenLimitsStatus(maxTokens: $0.maximumTokens, defaultInactivityTimeout: $0.defaultInactivityTimeout,
                                      maxInactivityTimeout: $0.maximumInactivityTimeout,
                                      defaultRODType: $0.defaultRODType.description)
                }))
            if let manager = part?.copy.manager {
                copiesRunning += manager.runningCopies
                for operation in manager.trackedOperationsInFlight {
                    let command = operation.kind.description
                    copies.append(CopyStatus(target: target.name, lun: operation.key.unit.lun, listID: operation.key.listID,
                                             command: command, initiator: operation.key.initiatorPort,
                                             background: operation.background, bytesTransferred: operation.bytesTransferred))
                }
            }
        }
        let tokens = (self.tokenStore?.tokens ?? []).map { token in
            TokenStatus(id: token.identifier, type: token.type.description, state: token.state,
                        source: token.source.description, ranges: token.ranges.map { "\($0.lba)+\($0.blocks)" },
                        bytes: token.bytesRepresented, bytesPreserved: token.bytesPreserved, owner: token.owner,
                        secondsLeft: token.timeLeft.map { Double($0.nanoseconds) / 1e9 })
        }
        return ServerStatus(portal: "\(self.configuration.listenHost):\(self.boundPort)", started: started,
                            targets: targets, sessions: context?.sessions.descriptions ?? [], copies: copies,
                            copiesRunning: copiesRunning, tokens: tokens)
    }

    /// The status as JSON (what the control socket sends).
    public func statusJSON() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return (try? encoder.encode(self.status())) ?? Data("{}".utf8)
    }
}

/// Answers one request per connection on the control socket. The reply is built off the
/// event loop (`respond` returns a future; the server runs it on its thread pool).
final class ControlHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let respond: @Sendable (String, any EventLoop) -> EventLoopFuture<Data>
    private var request = ""

    init(respond: @escaping @Sendable (String, any EventLoop) -> EventLoopFuture<Data>) {
        self.respond = respond
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = self.unwrapInboundIn(data)
        self.request += buffer.readString(length: buffer.readableBytes) ?? ""
        guard let newline = self.request.firstIndex(of: "\n") else {
            if self.request.utf8.count > 4096 { context.close(promise: nil) }
            return
        }
        let line = String(self.request[..<newline]).trimmingCharacters(in: .whitespaces)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.respond(line, context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            let reply = (try? result.get()) ?? Data("{\"error\":\"unavailable\"}".utf8)
            var out = context.channel.allocator.buffer(capacity: reply.count + 1)
            out.writeBytes(reply)
            out.writeString("\n")
            context.writeAndFlush(handler.wrapOutboundOut(out)).whenComplete { _ in context.close(promise: nil) }
        }
    }
}

/// The client side of the control socket (used by `iscsi-target status`).
public enum ControlSocket {
    /// A connected socket to `path`, or nil.
    public static func connect(path: String) -> Int32? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else {
            close(fd)
            return nil
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    /// Sends `request` and returns the whole reply (nil: no server answers at `path`).
    public static func request(_ request: String, path: String) -> Data? {
        guard let fd = connect(path: path) else { return nil }
        defer { close(fd) }
        let line = Array((request + "\n").utf8)
        guard line.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == line.count else { return nil }
        var reply = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            reply.append(contentsOf: buffer[0..<n])
        }
        return reply
    }
}

//
// Metrics in the Prometheus text exposition format (version 0.0.4), served on an optional
// HTTP listener (`[server] metrics = "HOST:PORT"`, or `serve --metrics`): GET /metrics.
//
// Per logical unit: commands by operation code, commands that ended with a status other than
// GOOD, bytes read and written, and a histogram of the time the device took (from the start
// of execution to the response). Counting is lock-free: fixed arrays of atomics per logical
// unit, found through a dictionary that never changes after start, so sessions never contend.
// Sessions, ROD tokens by state, copy bytes and per-stream writes are read from the server's
// own state when scraped.
//
import CopyOffload
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import SCSI
import Synchronization

/// Counters of one logical unit.
final class LogicalUnitMetrics: Sendable {
    /// Upper bounds of the latency buckets, in seconds (the last bucket is +Inf).
    static let bounds: [Double] = [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                                   0.1, 0.25, 0.5, 1, 2.5, 10]
    static let boundNanoseconds: [UInt64] = bounds.map { UInt64($0 * 1e9) }

    let commands: InlineArray<256, Atomic<UInt64>>
    let failures: InlineArray<256, Atomic<UInt64>>
    let buckets: InlineArray<17, Atomic<UInt64>>
    let durationNanoseconds = Atomic<UInt64>(0)
    let bytesRead = Atomic<UInt64>(0)
    let bytesWritten = Atomic<UInt64>(0)

    init() {
        self.commands = InlineArray { _ in Atomic<UInt64>(0) }
        self.failures = InlineArray { _ in Atomic<UInt64>(0) }
        self.buckets = InlineArray { _ in Atomic<UInt64>(0) }
    }

    func record(opcode: UInt8, good: Bool, read: Int, written: Int, nanoseconds: UInt64) {
        self.commands[Int(opcode)].wrappingAdd(1, ordering: .relaxed)
        if !good { self.failures[Int(opcode)].wrappingAdd(1, ordering: .relaxed) }
        if read > 0 { self.bytesRead.wrappingAdd(UInt64(read), ordering: .relaxed) }
        if written > 0 { self.bytesWritten.wrappingAdd(UInt64(written), ordering: .relaxed) }
        var bucket = Self.boundNanoseconds.count
        for (index, bound) in Self.boundNanoseconds.enumerated() where nanoseconds <= bound {
            bucket = index
            break
        }
        self.buckets[bucket].wrappingAdd(1, ordering: .relaxed)
        self.durationNanoseconds.wrappingAdd(nanoseconds, ordering: .relaxed)
    }
}

/// Every logical unit's counters, by target name (fixed at start) and LUN.
final class CommandMetrics: Sendable {
    let targets: [String: TargetMetrics]

    init(configuration: ServerConfiguration) {
        var targets: [String: TargetMetrics] = [:]
        for target in configuration.targets {
            targets[target.name] = TargetMetrics(luns: target.luns.map(\.number))
        }
        self.targets = targets
    }

    func unit(target: String, lun: UInt16) -> LogicalUnitMetrics? {
        self.targets[target]?.unit(lun)
    }

    /// Fresh counters for a LUN added at run time.
    func add(target: String, lun: UInt16) {
        self.targets[target]?.add(lun)
    }

    func remove(target: String, lun: UInt16) {
        self.targets[target]?.remove(lun)
    }
}

/// One target's counters by LUN. A session keeps its target's, so recording a command looks up
/// only the LUN; commands read the map without a lock, and LUNs added or removed at run time
/// replace it (`SnapshotCell`).
final class TargetMetrics: Sendable {
    private let cell: SnapshotCell<[UInt16: LogicalUnitMetrics]>

    init(luns: [UInt16]) {
        self.cell = SnapshotCell(Dictionary(uniqueKeysWithValues: luns.map { ($0, LogicalUnitMetrics()) }))
    }

    func unit(_ lun: UInt16) -> LogicalUnitMetrics? {
        self.cell.withValue { $0[lun] }
    }

    func add(_ lun: UInt16) { self.cell.update { $0[lun] = LogicalUnitMetrics() } }

    func remove(_ lun: UInt16) { self.cell.update { $0[lun] = nil } }

    /// Records one command (nothing for LUNs the target does not have).
    @inline(__always)
    func record(command: SCSICommand, response: SCSIResponse, nanoseconds: UInt64) {
        guard let lun = command.lunNumber, let unit = self.unit(lun), let opcode = command.cdb.first else { return }
        let good = response.status == .good || response.status == .conditionMet
        let read = response.dataIn.map { min($0.readableBytes, command.expectedDataTransferLength) } ?? 0
        let written = command.direction == .fromInitiator && good ? command.expectedDataTransferLength : 0
        unit.record(opcode: opcode, good: good, read: read, written: written, nanoseconds: nanoseconds)
    }
}

/// Builds the exposition text.
struct PrometheusText {
    private var lines: [String] = []
    private var described: Set<String> = []

    private static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    mutating func sample(_ name: String, _ type: String, _ help: String, labels: [(String, String)] = [],
                         _ value: String) {
        if self.described.insert(name).inserted {
            self.lines.append("# HELP \(name) \(help)")
            self.lines.append("# TYPE \(name) \(type)")
        }
        let rendered = labels.isEmpty ? "" : "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
        self.lines.append("\(name)\(rendered) \(value)")
    }

    /// A histogram's buckets, sum and count under one name.
    mutating func histogram(_ name: String, _ help: String, labels: [(String, String)], bounds: [Double],
                            counts: [UInt64], sum: Double) {
        if self.described.insert(name).inserted {
            self.lines.append("# HELP \(name) \(help)")
            self.lines.append("# TYPE \(name) histogram")
        }
        func render(_ extra: [(String, String)]) -> String {
            "{" + (labels + extra).map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
        }
        var cumulative: UInt64 = 0
        for (index, bound) in bounds.enumerated() {
            cumulative += counts[index]
            self.lines.append("\(name)_bucket\(render([("le", "\(bound)")])) \(cumulative)")
        }
        cumulative += counts[bounds.count]
        self.lines.append("\(name)_bucket\(render([("le", "+Inf")])) \(cumulative)")
        self.lines.append("\(name)_sum\(render([])) \(sum)")
        self.lines.append("\(name)_count\(render([])) \(cumulative)")
    }

    var text: String { self.lines.joined(separator: "\n") + "\n" }
}

extension TargetServer {
    /// The metrics page.
    public func metricsText() -> String {
        var page = PrometheusText()
        let status = self.status()
        page.sample("iscsi_sessions", "gauge", "iSCSI sessions established now (normal and discovery).",
                    "\(status.sessions.count)")
        if let metrics = self.commandMetrics {
            for target in self.runningConfiguration.targets {
                for lun in target.luns {
                    guard let unit = metrics.unit(target: target.name, lun: lun.number) else { continue }
                    let base = [("target", target.name), ("lun", "\(lun.number)")]
                    for opcode in 0..<256 {
                        let count = unit.commands[opcode].load(ordering: .relaxed)
                        guard count > 0 else { continue }
                        let labels = base + [("opcode", String(format: "0x%02x", opcode))]
                        page.sample("scsi_commands_total", "counter", "SCSI commands completed, by operation code.",
                                    labels: labels, "\(count)")
                    }
                    for opcode in 0..<256 {
                        let count = unit.failures[opcode].load(ordering: .relaxed)
                        guard count > 0 else { continue }
                        let labels = base + [("opcode", String(format: "0x%02x", opcode))]
                        page.sample("scsi_command_failures_total", "counter",
                                    "SCSI commands that ended with a status other than GOOD, by operation code.",
                                    labels: labels, "\(count)")
                    }
                    page.sample("scsi_bytes_total", "counter", "Bytes moved by SCSI commands.",
                                labels: base + [("direction", "read")], "\(unit.bytesRead.load(ordering: .relaxed))")
                    page.sample("scsi_bytes_total", "counter", "Bytes moved by SCSI commands.",
                                labels: base + [("direction", "write")], "\(unit.bytesWritten.load(ordering: .relaxed))")
                    let counts = (0..<17).map { unit.buckets[$0].load(ordering: .relaxed) }
                    page.histogram("scsi_command_duration_seconds", "Time from the start of execution to the response.",
                                   labels: base, bounds: LogicalUnitMetrics.bounds, counts: counts,
                                   sum: Double(unit.durationNanoseconds.load(ordering: .relaxed)) / 1e9)
                }
            }
        }
        for target in status.targets {
            for lun in target.luns {
                let base = [("target", target.name), ("lun", "\(lun.number)")]
                if let copy = lun.copy {
                    page.sample("copy_bytes_total", "counter", "Bytes read from and written to the LU by EXTENDED COPY and WRITE USING TOKEN.",
                                labels: base + [("direction", "read")], "\(copy.bytesRead)")
                    page.sample("copy_bytes_total", "counter", "Bytes read from and written to the LU by EXTENDED COPY and WRITE USING TOKEN.",
                                labels: base + [("direction", "write")], "\(copy.bytesWritten)")
                    page.sample("copy_commands_total", "counter", "EXTENDED COPY and WRITE USING TOKEN commands received by the LU.",
                                labels: base, "\(copy.operations)")
                }
                if let flash = lun.flash {
                    page.sample("flash_write_amplification", "gauge", "Flash page writes per host page write of the LU's flash model.",
                                labels: base, "\(flash.writeAmplification)")
                    page.sample("flash_block_erases_total", "counter", "Erase-block erases of the LU's flash model.",
                                labels: base, "\(flash.blockErases)")
                }
                if let streams = lun.streams {
                    for (stream, counters) in streams.streams.enumerated() {
                        page.sample("stream_write_commands_total", "counter", "Writes per stream identifier.",
                                    labels: base + [("stream", "\(stream)")], "\(counters.writeCommands)")
                        page.sample("stream_bytes_written_total", "counter", "Bytes written per stream identifier.",
                                    labels: base + [("stream", "\(stream)")], "\(counters.bytesWritten)")
                    }
                }
            }
        }
        var byState: [String: Int] = ["valid": 0, "in use": 0, "populating": 0, "expired": 0, "deleted": 0,
                                      "cancelled": 0, "revoked": 0]
        for token in status.tokens {
            let state = token.state.hasPrefix("in use") ? "in use" : token.state
            byState[state, default: 0] += 1
        }
        for (state, count) in byState.sorted(by: { $0.key < $1.key }) {
            page.sample("rod_tokens", "gauge", "ROD tokens held now, by state (terminal states are tombstones).",
                        labels: [("state", state)], "\(count)")
        }
        page.sample("copies_running", "gauge", "EXTENDED COPY and WRITE USING TOKEN operations running now.",
                    "\(status.copiesRunning)")
        return page.text
    }
}

/// Answers GET /metrics (and GET / with a pointer to it). The page is built off the event
/// loop (`page` returns a future; the server runs it on its thread pool: it reads files).
final class MetricsHTTPHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let page: @Sendable (any EventLoop) -> EventLoopFuture<String>
    private var head: HTTPRequestHead?

    init(page: @escaping @Sendable (any EventLoop) -> EventLoopFuture<String>) {
        self.page = page
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            let reply: EventLoopFuture<(HTTPResponseStatus, String, String)>
            if head.method != .GET {
                reply = context.eventLoop.makeSucceededFuture((.methodNotAllowed, "GET only\n", "text/plain"))
            } else if head.uri == "/metrics" || head.uri.hasPrefix("/metrics?") {
                reply = self.page(context.eventLoop).map { (.ok, $0, "text/plain; version=0.0.4; charset=utf-8") }
            } else {
                reply = context.eventLoop.makeSucceededFuture((.notFound, "see /metrics\n", "text/plain"))
            }
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            reply.whenComplete { result in
                let (handler, context) = bound.value
                let (status, body, type) = (try? result.get()) ?? (.internalServerError, "metrics unavailable\n", "text/plain")
                handler.respond(context: context, head: head, status: status, body: body, type: type)
            }
        }
    }

    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead, status: HTTPResponseStatus,
                         body: String, type: String) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status,
                                                                  headers: headers))), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
        buffer.writeString(body)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let keepAlive = head.isKeepAlive
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}

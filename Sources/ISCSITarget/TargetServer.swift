//
// The server: binds the portal, opens the LUN files, builds one SCSI device per target
// and runs one `ConnectionHandler` per TCP connection on SwiftNIO event loops. Block I/O
// runs on a thread pool, never on an event loop.
//
import BlockStores
import CopyOffload
import Foundation
import ISCSIEngine
import ISCSIWire
import SCSIStreams
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SCSI

public struct ServerStartError: Error, CustomStringConvertible {
    public var description: String
}

/// A running target: what connections share.
final class TargetContext: Sendable {
    let configuration: ServerConfiguration
    let devices: [String: SCSITargetDevice]
    let directory: LoginDirectory
    let threadPool: NIOThreadPool
    let sessions: SessionRegistry
    let connections = ConnectionCounter()
    let unsolicitedBudget: UnsolicitedDataBudget
    let logger: Logger
    let metrics: CommandMetrics

    init(configuration: ServerConfiguration, devices: [String: SCSITargetDevice], threadPool: NIOThreadPool,
         logger: Logger)
    {
        self.metrics = CommandMetrics(configuration: configuration)
        self.configuration = configuration
        self.devices = devices
        self.threadPool = threadPool
        self.logger = logger
        self.sessions = SessionRegistry(maximumSessions: configuration.maximumSessions)
        self.unsolicitedBudget = UnsolicitedDataBudget(limit: configuration.maximumUnsolicitedBytes)
        self.directory = LoginDirectory(
            targets: configuration.targets.map {
                LoginDirectory.Target(name: $0.name, alias: $0.alias, portalGroupTag: $0.portalGroupTag, chap: $0.chap,
                                      allowedInitiators: $0.allowedInitiators)
            },
            portalGroupTag: configuration.targets.first?.portalGroupTag ?? 1,
            discoveryCHAP: configuration.discoveryCHAP)
    }

    /// SendTargets records of the targets `initiatorName` may log in to, with the portal
    /// address the initiator should use.
    func discoveryRecords(localAddress: SocketAddress?, initiatorName: String) -> [SendTargetsRecord] {
        let address: String
        if let advertise = configuration.advertise {
            address = advertise
        } else if let local = localAddress, let ip = local.ipAddress, let port = local.port {
            address = local.protocol == .inet6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
        } else {
            address = "\(configuration.listenHost):\(configuration.listenPort)"
        }
        return configuration.targets.filter { directory.targets[$0.name]?.admits(initiatorName: initiatorName) ?? false }.map {
            SendTargetsRecord(name: $0.name, addresses: ["\(address),\($0.portalGroupTag)"])
        }
    }
}

/// Live sessions: TSIH allocation and session reinstatement (RFC 7143 §6.3.5).
final class SessionRegistry: Sendable {
    struct Key: Hashable {
        var initiatorName: String
        var isid: UInt64
        var targetName: String
    }
    struct Entry {
        var key: Key
        var channel: any Channel
        var nexusID: UInt64
    }
    private struct State {
        var nextTSIH: UInt16 = 1
        var nextNexusID: UInt64 = 1
        var byTSIH: [UInt16: Entry] = [:]
        /// What `status` shows of each session (set once it is established).
        var descriptions: [UInt16: SessionStatus] = [:]
    }
    private let state = NIOLockedValueBox(State())
    /// 0: no limit besides the TSIH space.
    let maximumSessions: Int

    init(maximumSessions: Int = 0) { self.maximumSessions = maximumSessions }

    enum Admission {
        case admitted(tsih: UInt16, nexusID: UInt64, replacing: (any Channel)?)
        case refused(LoginStatus)
    }

    /// Register a session. A new login (TSIH 0) with the ISID of a live session of the same
    /// initiator and target reinstates it: the old connection is closed.
    func admit(key: Key, requestedTSIH: UInt16, channel: any Channel) -> Admission {
        state.withLockedValue { s in
            var replacing: (any Channel)?
            var tsih: UInt16 = 0
            if requestedTSIH != 0 {
                guard let existing = s.byTSIH[requestedTSIH], existing.key == key else {
                    return .refused(.sessionDoesNotExist)
                }
                replacing = existing.channel
                tsih = requestedTSIH
            } else if let (oldTSIH, existing) = s.byTSIH.first(where: { $0.value.key == key }) {
                replacing = existing.channel
                s.byTSIH[oldTSIH] = nil
            }
            if tsih == 0 {
                // A reinstatement replaces a session; only a new one counts against the limit.
                if maximumSessions > 0 && replacing == nil && s.byTSIH.count >= maximumSessions {
                    return .refused(.outOfResources)
                }
                var candidate = s.nextTSIH
                for _ in 0..<65535 {
                    if candidate != 0 && s.byTSIH[candidate] == nil { break }
                    candidate &+= 1
                }
                guard s.byTSIH[candidate] == nil, candidate != 0 else { return .refused(.outOfResources) }
                tsih = candidate
                s.nextTSIH = candidate &+ 1
            }
            let nexusID = s.nextNexusID
            s.nextNexusID += 1
            s.byTSIH[tsih] = Entry(key: key, channel: channel, nexusID: nexusID)
            return .admitted(tsih: tsih, nexusID: nexusID, replacing: replacing)
        }
    }

    func remove(tsih: UInt16, channel: any Channel) {
        state.withLockedValue { s in
            if let e = s.byTSIH[tsih], e.channel === channel {
                s.byTSIH[tsih] = nil
                s.descriptions[tsih] = nil
            }
        }
    }

    /// Records what the operator sees of an established session.
    func describe(tsih: UInt16, channel: any Channel, _ description: SessionStatus) {
        state.withLockedValue { s in
            if let e = s.byTSIH[tsih], e.channel === channel { s.descriptions[tsih] = description }
        }
    }

    var descriptions: [SessionStatus] {
        state.withLockedValue { Array($0.descriptions.values) }.sorted { $0.tsih < $1.tsih }
    }

    var count: Int { state.withLockedValue { $0.byTSIH.count } }

    func channels(of targetName: String) -> [any Channel] {
        state.withLockedValue { $0.byTSIH.values.filter { $0.key.targetName == targetName }.map(\.channel) }
    }

    func allChannels() -> [any Channel] { state.withLockedValue { $0.byTSIH.values.map(\.channel) } }
}

/// Open TCP connections per source address (limit `max_connections_per_address`).
final class ConnectionCounter: Sendable {
    private let counts = NIOLockedValueBox([String: Int]())

    /// Counts a new connection from `address`; false when that would exceed `limit` (the
    /// connection is then not counted).
    func open(_ address: String, limit: Int) -> Bool {
        counts.withLockedValue { c in
            let n = c[address, default: 0]
            if limit > 0 && n >= limit { return false }
            c[address] = n + 1
            return true
        }
    }

    func close(_ address: String) {
        counts.withLockedValue { c in
            let n = c[address, default: 0] - 1
            c[address] = n > 0 ? n : nil
        }
    }

    func count(_ address: String) -> Int { counts.withLockedValue { $0[address, default: 0] } }
}

/// The iSCSI target server.
public final class TargetServer: @unchecked Sendable {
    public let configuration: ServerConfiguration
    let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let threadPool: NIOThreadPool
    private var channel: (any Channel)?
    var context: TargetContext?
    let lock = NIOLock()
    /// Every backing file the server opened (flushed at stop; a removed LUN's leaves).
    var stores: [FileBlockStore] = []
    /// The definition as it is now: the start one plus runtime changes (guarded by `lock`).
    var running: ServerConfiguration
    /// Serialises runtime changes (`apply`, `save`); taken before `lock`.
    let changeLock = NIOLock()
    /// The definition file's text as read at start or last saved (guarded by `lock`).
    var savedText: String?
    /// Every LUN of the process as the copy managers see them (copy statistics).
    private var copyUnits: CopyUnitRegistry?
    private var tokenSweep: RepeatedTask?
    /// The process's ROD tokens (for `status`).
    private(set) var tokenStore: RODTokenStore?
    var extensions: [String: (copy: CopyOffloadExtension, streams: StreamsExtension)] = [:]
    private var control: (any Channel)?
    private var metricsChannel: (any Channel)?
    /// Per-LU command counters (nil before start).
    var commandMetrics: CommandMetrics? { lock.withLock { self.context?.metrics } }
    /// The definition in effect now (runtime changes included).
    public var runningConfiguration: ServerConfiguration { lock.withLock { self.running } }
    private let started = Date()

    /// The streams extension of `target` (its statistics and flash model reports); nil before
    /// `start()` or for an unknown target.
    public func streamsExtension(target: String) -> StreamsExtension? {
        lock.withLock { self.extensions[target]?.streams }
    }

    public init(configuration: ServerConfiguration, logger: Logger = Logger(label: "iscsi-target")) {
        self.configuration = configuration
        self.running = configuration
        self.savedText = configuration.definitionText
        self.logger = logger
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(System.coreCount, 1))
        self.threadPool = NIOThreadPool(numberOfThreads: max(8, System.coreCount * 2))
    }

    /// Unsolicited and immediate write data the sessions hold now, in bytes (`max_unsolicited_bytes`).
    public var unsolicitedBytesHeld: Int { lock.withLock { context?.unsolicitedBudget.bytesHeld ?? 0 } }

    /// Response bytes queued in the sessions' channels that their peers have not taken yet.
    public func pendingResponseBytes() async -> Int {
        let channels = lock.withLock { context?.sessions.allChannels() ?? [] }
        var total = 0
        for channel in channels { total += (try? await channel.getOption(.bufferedWritableBytes).get()) ?? 0 }
        return total
    }

    /// The port the metrics listener bound (0: none).
    public var metricsPort: Int { lock.withLock { metricsChannel?.localAddress?.port ?? 0 } }

    /// The port actually bound (useful with port 0).
    public var boundPort: Int { lock.withLock { channel?.localAddress?.port ?? 0 } }

    /// Open the LUN files and bind the portal.
    public func start() async throws {
        threadPool.start()
        var devices: [String: SCSITargetDevice] = [:]
        try FileManager.default.createDirectory(atPath: configuration.stateDirectory, withIntermediateDirectories: true)
        // Every LUN of the process, so EXTENDED COPY and tokens can copy between targets.
        let tokenStore = RODTokenStore(makeSnapshotStore: RODTokenStore.temporaryFiles(
            directory: (configuration.stateDirectory as NSString).appendingPathComponent("tokens")))
        let copyUnits = CopyUnitRegistry(tokens: tokenStore)
        let tokenLogger = self.logger
        tokenStore.observe { transition in
            let token = transition.token
            var metadata: Logger.Metadata = [
                "token.id": "\(token.identifier)", "token.type": "\(token.type)",
                "token.from": "\(transition.from)", "token.to": "\(transition.to)",
                "token.cause": "\(transition.cause)", "token.source": "\(token.source)",
                "token.ranges": "\(token.ranges.map { "\($0.lba)+\($0.blocks)" }.joined(separator: ","))",
                "token.bytes": "\(token.bytesRepresented)", "token.owner": "\(token.owner)",
            ]
            if let left = token.timeLeft { metadata["token.time_left_ms"] = "\(left.nanoseconds / 1_000_000)" }
            if token.bytesPreserved > 0 { metadata["token.bytes_preserved"] = "\(token.bytesPreserved)" }
            tokenLogger.info("ROD token \(transition.to)", metadata: metadata)
        }
        for target in configuration.targets {
            var units: [LogicalUnitConfiguration] = []
            var stores: [UInt16: any BlockStore] = [:]
            for lun in target.luns {
                let (store, guarded, unit) = try Self.openUnit(lun, of: target, tokens: tokenStore)
                stores[lun.number] = guarded
                self.stores.append(store)
                units.append(unit)
            }
            let allowedInitiators = target.allowedInitiators.map { Set($0.map { $0.lowercased() }) }
            let copyOffload = CopyOffloadExtension(
                targetName: target.name, registry: copyUnits, limits: target.copyLimits, tokenLimits: target.tokenLimits,
                initiatorAllowed: { name in allowedInitiators?.contains(name.lowercased()) ?? true })
            var flash: [UInt16: FlashModel] = [:]
            for (lun, unit) in zip(target.luns, units) {
                flash[lun.number] = try Self.flashModel(lun, of: target, unit: unit)
            }
            let streams = StreamsExtension(settings: Dictionary(uniqueKeysWithValues: target.luns.compactMap { lun in
                lun.streams.map { (lun.number, $0) } }), flash: flash)
            let device = SCSITargetDevice(
                configuration: TargetDeviceConfiguration(targetName: target.name, targetPortGroupTag: target.portalGroupTag,
                                                         logicalUnits: units),
                stores: stores, extensions: [copyOffload, streams])
            copyOffload.register(device: device)
            copyOffload.manager.observe(Self.copyLogger(self.logger))
            devices[target.name] = device
            self.extensions[target.name] = (copyOffload, streams)
        }
        self.copyUnits = copyUnits
        self.tokenStore = tokenStore
        // Token inactivity timeouts and tombstones are noticed (and logged) within a second.
        self.tokenSweep = group.next().scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            tokenStore.tick()
        }
        let context = TargetContext(configuration: configuration, devices: devices, threadPool: threadPool, logger: logger)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 1 << 20))
            .childChannelOption(.writeBufferWaterMark, value: ConnectionHandler.writeBufferWaterMark)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ConnectionHandler(context: context))
                }
            }
        let bound: any Channel
        do {
            bound = try await bootstrap.bind(host: configuration.listenHost, port: configuration.listenPort).get()
        } catch {
            try? await threadPool.shutdownGracefully()
            throw ServerStartError(description: "cannot listen on \(configuration.listenHost):\(configuration.listenPort): \(error)")
        }
        lock.withLock {
            self.channel = bound
            self.context = context
        }
        if let metrics = configuration.metricsListen, let (host, port) = ServerConfiguration.parseHostPort(metrics) {
            let bootstrap = ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { [weak self] channel in
                    let server = self
                    return channel.pipeline.configureHTTPServerPipeline().flatMapThrowing {
                        try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler { loop in
                            guard let server else { return loop.makeSucceededFuture("") }
                            // stat() of every LUN file: not on the event loop.
                            return server.threadPool.runIfActive(eventLoop: loop) { server.metricsText() }
                        })
                    }
                }
            do {
                let bound = try await bootstrap.bind(host: host, port: port).get()
                lock.withLock { self.metricsChannel = bound }
                logger.info("metrics", metadata: ["iscsi.metrics": "http://\(host):\(bound.localAddress?.port ?? port)/metrics"])
            } catch {
                try? await self.stop()
                throw ServerStartError(description: "cannot listen for metrics on \(metrics): \(error)")
            }
        }
        if let path = configuration.controlSocketPath {
            do {
                try await self.startControlSocket(path: path)
            } catch {
                // Serving matters more than being observable: say so and go on.
                logger.warning("no control socket: `iscsi-target status` will not reach this server",
                               metadata: ["iscsi.control": "\(error)"])
            }
        }
        logger.info("listening", metadata: [
            "iscsi.portal": "\(configuration.listenHost):\(bound.localAddress?.port ?? 0)",
            "iscsi.targets": "\(configuration.targets.map(\.name).joined(separator: ","))",
        ])
    }

    /// Wait until the listening channel closes.
    public func waitUntilClosed() async throws {
        let c = lock.withLock { channel }
        try await c?.closeFuture.get()
    }

    /// Stop accepting, close every session, flush every LUN and release resources.
    /// EXTENDED COPY statistics of every LUN that took part in a copy, for the operator.
    private func logCopyStatistics() {
        for unit in copyUnits?.all ?? [] {
            let stats = unit.statistics
            guard stats.operations > 0 || stats.bytesRead > 0 || stats.bytesWritten > 0 else { continue }
            logger.info("copy statistics", metadata: [
                "iscsi.target": "\(unit.id.targetName)", "scsi.lun": "\(unit.id.lun)",
                "copy.operations": "\(stats.operations)", "copy.failed": "\(stats.failedOperations)",
                "copy.bytes_read": "\(stats.bytesRead)", "copy.bytes_written": "\(stats.bytesWritten)",
            ])
        }
    }

    /// Binds the control socket (owner-only) that `iscsi-target status` reads.
    private func startControlSocket(path: String) async throws {
        // A socket file left by a process that is gone is replaced; a live one is not.
        if FileManager.default.fileExists(atPath: path) {
            let probe = ControlSocket.connect(path: path)
            let connected = probe != nil
            if let probe { close(probe) }
            if connected { throw ServerStartError(description: "another server answers on the control socket \(path)") }
            unlink(path)
        }
        let previous = umask(0o077)
        defer { umask(previous) }
        let bootstrap = ServerBootstrap(group: group)
            .childChannelInitializer { [weak self] channel in
                let server = self
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ControlHandler { request, loop in
                        guard let server else { return loop.makeSucceededFuture(Data("{\"error\":\"stopping\"}".utf8)) }
                        // stat() of every LUN file, opening and flushing files: not on the event loop.
                        return server.threadPool.runIfActive(eventLoop: loop) { server.controlReply(to: request) }
                    })
                }
            }
        do {
            let channel = try await bootstrap.bind(unixDomainSocketPath: path).get()
            chmod(path, 0o600)
            lock.withLock { self.control = channel }
        } catch {
            throw ServerStartError(description: "cannot create the control socket \(path): \(error)")
        }
    }

    /// Where the status came from (for `status()`).
    func statusSources() -> ([String: (copy: CopyOffloadExtension, streams: StreamsExtension)], Date, TargetContext?) {
        lock.withLock { (self.extensions, self.started, self.context) }
    }

    /// Flash model counters of every LUN that has a model, for the operator.
    private func logFlashModels() {
        let extensions = lock.withLock { self.extensions }
        for (target, parts) in extensions.sorted(by: { $0.key < $1.key }) {
            for (lun, report) in parts.streams.flashReports.sorted(by: { $0.key < $1.key }) {
                logger.info("flash model", metadata: [
                    "iscsi.target": "\(target)", "scsi.lun": "\(lun)",
                    "flash.placement": "\(report.settings.placement.rawValue)",
                    "flash.host_page_writes": "\(report.hostPageWrites)",
                    "flash.flash_page_writes": "\(report.flashPageWrites)",
                    "flash.block_erases": "\(report.blockErases)",
                    "flash.write_amplification": "\((report.writeAmplification * 1000).rounded() / 1000)",
                ])
            }
        }
    }

    /// One log line per copy command that ended: what, where, who, how much, how it ended.
    static func copyLogger(_ logger: Logger) -> @Sendable (CopyReport) -> Void {
        { report in
            var metadata: Logger.Metadata = [
                "copy.command": "\(report.command)", "iscsi.target": "\(report.unit.targetName)",
                "scsi.lun": "\(report.unit.lun)", "copy.list_id": "\(report.listID)",
                "iscsi.initiator": "\(report.initiatorPort)", "copy.bytes": "\(report.bytes)",
            ]
            if let duration = report.duration { metadata["copy.ms"] = "\(duration.nanoseconds / 1_000_000)" }
            switch report.outcome {
            case .completed, .completedWithPartialTokenUsage:
                logger.info("copy completed", metadata: metadata)
            case .failed(let sense):
                metadata["scsi.sense"] = "\(sense.key) \(sense.code)"
                logger.info("copy failed", metadata: metadata)
            case .aborted:
                logger.info("copy aborted", metadata: metadata)
            }
        }
    }

    /// Opens (creating when missing) the backing file of `lun`, behind the token guard, and
    /// derives the logical unit's configuration from the definition.
    static func openUnit(_ lun: LUNDefinition, of target: TargetDefinition, tokens: RODTokenStore) throws
        -> (FileBlockStore, GuardedBlockStore, LogicalUnitConfiguration)
    {
        let store: FileBlockStore
        do {
            let directory = (lun.path as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            store = try FileBlockStore.open(path: lun.path, byteCount: lun.byteCount, createIfMissing: true,
                                            writeThrough: lun.cache == .writeThrough, readOnly: lun.readOnly)
        } catch {
            throw ServerStartError(description: "LUN \(lun.number) of \(target.name): \(error)")
        }
        // Every writer goes through the guard, so ROD tokens see changes to their sources.
        let guarded = GuardedBlockStore(store, unit: CopyUnitID(targetName: target.name, lun: lun.number), tokens: tokens)
        var unit = LogicalUnitConfiguration.derived(
            targetName: target.name, number: lun.number, blockSize: lun.blockSize,
            blockCount: min(lun.byteCount, store.byteCount) / UInt64(lun.blockSize))
        unit.writeCacheEnabled = lun.cache == .writeBack
        unit.readOnly = lun.readOnly
        unit.thinProvisioned = lun.thinProvisioned
        unit.nonRotational = lun.nonRotational
        unit.removable = lun.removable
        unit.offersReadWrite32 = lun.readWrite32
        unit.sanitizeMinimumSeconds = Double(lun.sanitizeSeconds)
        if lun.persistReservations { unit.reservationStatePath = lun.path + ".reservations" }
        unit.visibleTo = lun.allowedInitiators.map { Set($0.map { $0.lowercased() }) }
        if let v = lun.vendor { unit.vendor = v }
        if let p = lun.product { unit.product = p }
        if let s = lun.serialNumber { unit.serialNumber = s }
        return (store, guarded, unit)
    }

    /// The flash write-amplification model of `lun`, when its definition asks for one.
    static func flashModel(_ lun: LUNDefinition, of target: TargetDefinition, unit: LogicalUnitConfiguration) throws
        -> FlashModel?
    {
        guard let settings = lun.flash else { return nil }
        do {
            return try FlashModel(settings: settings, blockCount: unit.blockCount, blockSize: unit.blockSize)
        } catch {
            throw ServerStartError(description: "LUN \(lun.number) of \(target.name): flash model: \(error)")
        }
    }

    public func stop() async throws {
        let (c, ctx, control, metrics) = lock.withLock { (channel, context, self.control, self.metricsChannel) }
        try? await metrics?.close()
        try? await control?.close()
        if let path = configuration.controlSocketPath, control != nil { unlink(path) }
        try? await c?.close()
        if let ctx {
            for session in ctx.sessions.allChannels() { try? await session.close() }
        }
        self.tokenSweep?.cancel()
        for store in stores { try? store.flush() }
        self.logCopyStatistics()
        self.logFlashModels()
        try? await threadPool.shutdownGracefully()
        try await group.shutdownGracefully()
    }
}

// A small synchronous Swift wrapper over libiscsi, the independent initiator the integration
// tests drive the target with. One `ISCSIClient` owns one libiscsi context (one TCP connection,
// one session); a context is not thread-safe, so each client is used from one thread at a time.
// Every call blocks: run clients on dedicated threads (see `onThread`), never on the
// Swift-concurrency cooperative pool, or a slow target can starve the whole test process.

import CLibiscsi
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The default initiator name the tests log in with.
let testInitiatorName = "iqn.2026-11.org.iscsi-target:integration-tests"

/// A failure reported by libiscsi itself (transport, login, protocol) or a SCSI status other than GOOD.
struct ISCSIClientError: Error, CustomStringConvertible {
    enum Kind: Equatable {
        case library              // libiscsi returned an error; `message` is iscsi_get_error()
        case scsiStatus(Int)      // command completed with a non-GOOD SCSI status
        case badData              // the reply could not be decoded
    }
    var kind: Kind
    var operation: String
    var message: String
    var senseKey: Int = 0
    var ascq: Int = 0             // libiscsi packs ASC and ASCQ as (asc << 8) | ascq

    var description: String {
        switch kind {
        case .library:
            return "\(operation): libiscsi error: \(message)"
        case .scsiStatus(let status):
            let asc = (ascq >> 8) & 0xFF, q = ascq & 0xFF
            return "\(operation): SCSI status 0x\(String(status, radix: 16)) sense key "
                + "0x\(String(senseKey, radix: 16)) ASC/ASCQ \(String(format: "%02X/%02X", asc, q)) (\(message))"
        case .badData:
            return "\(operation): \(message)"
        }
    }
}

/// Standard INQUIRY data, decoded from the raw bytes here (not through libiscsi's unmarshaller),
/// so the test checks the wire layout itself.
struct StandardInquiry: Equatable {
    var qualifier: Int
    var deviceType: Int
    var version: Int
    var responseDataFormat: Int
    var additionalLength: Int
    var commandQueueing: Bool
    var vendor: String
    var product: String
    var revision: String
}

struct Capacity16: Equatable {
    var lastLBA: UInt64
    var blockLength: UInt32
    var blocks: UInt64 { lastLBA + 1 }
}

struct DiscoveredTarget: Equatable {
    var name: String
    var portals: [String]
}

enum HeaderDigest {
    case none, crc32c, noneOrCRC32C, crc32cOrNone

    var libiscsiValue: iscsi_header_digest {
        switch self {
        case .none: return ISCSI_HEADER_DIGEST_NONE
        case .crc32c: return ISCSI_HEADER_DIGEST_CRC32C
        case .noneOrCRC32C: return ISCSI_HEADER_DIGEST_NONE_CRC32C
        case .crc32cOrNone: return ISCSI_HEADER_DIGEST_CRC32C_NONE
        }
    }
}

final class ISCSIClient: @unchecked Sendable {
    private let context: OpaquePointer
    private let fdLock = NSLock()
    private var socketFD: Int32 = -1
    let initiatorName: String

    /// `timeoutSeconds` bounds every PDU exchange inside libiscsi (0 = none).
    /// `autoReconnect` is off by default: a dropped connection is a failure the test must see,
    /// not something libiscsi silently papers over.
    init(initiatorName: String = testInitiatorName, timeoutSeconds: Int32 = 30, autoReconnect: Bool = false) throws {
        guard let ctx = iscsi_create_context(initiatorName) else {
            throw ISCSIClientError(kind: .library, operation: "iscsi_create_context", message: "returned NULL")
        }
        context = ctx
        self.initiatorName = initiatorName
        _ = iscsi_set_timeout(ctx, timeoutSeconds)
        iscsi_set_noautoreconnect(ctx, autoReconnect ? 0 : 1)
        if !autoReconnect { iscsi_set_reconnect_max_retries(ctx, 0) }
    }

    deinit {
        iscsi_destroy_context(context)
    }

    private var lastError: String {
        guard let s = iscsi_get_error(context) else { return "(no error text)" }
        return String(cString: s)
    }

    private func libraryError(_ operation: String) -> ISCSIClientError {
        ISCSIClientError(kind: .library, operation: operation, message: lastError)
    }

    private func rememberSocket() {
        let fd = iscsi_get_fd(context)
        fdLock.lock(); socketFD = fd; fdLock.unlock()
    }

    // MARK: Sessions

    /// CHAP credentials the initiator authenticates with (one-way CHAP).
    func setCHAP(user: String, password: String) throws {
        guard iscsi_set_initiator_username_pwd(context, user, password) == 0 else {
            throw libraryError("iscsi_set_initiator_username_pwd")
        }
    }

    /// The name and secret the target must answer with (mutual CHAP; needs `setCHAP` first).
    func setTargetCHAP(user: String, password: String) throws {
        guard iscsi_set_target_username_pwd(context, user, password) == 0 else {
            throw libraryError("iscsi_set_target_username_pwd")
        }
    }

    /// Connects and logs in to `target` at `portal` ("host:port") as a normal session.
    /// libiscsi's full connect also clears pending unit attentions on `lun` with TEST UNIT READY.
    func login(portal: String, target: String, lun: Int32 = 0, headerDigest: HeaderDigest = .none) throws {
        guard iscsi_set_targetname(context, target) == 0 else { throw libraryError("iscsi_set_targetname") }
        guard iscsi_set_session_type(context, ISCSI_SESSION_NORMAL) == 0 else { throw libraryError("iscsi_set_session_type") }
        guard iscsi_set_header_digest(context, headerDigest.libiscsiValue) == 0 else {
            throw libraryError("iscsi_set_header_digest")
        }
        guard iscsi_full_connect_sync(context, portal, lun) == 0 else { throw libraryError("iscsi_full_connect_sync") }
        rememberSocket()
    }

    /// A discovery session: connect, log in with SessionType=Discovery, SendTargets=All, log out.
    func discover(portal: String) throws -> [DiscoveredTarget] {
        guard iscsi_set_session_type(context, ISCSI_SESSION_DISCOVERY) == 0 else {
            throw libraryError("iscsi_set_session_type")
        }
        guard iscsi_set_header_digest(context, ISCSI_HEADER_DIGEST_NONE) == 0 else {
            throw libraryError("iscsi_set_header_digest")
        }
        guard iscsi_connect_sync(context, portal) == 0 else { throw libraryError("iscsi_connect_sync") }
        rememberSocket()
        guard iscsi_login_sync(context) == 0 else { throw libraryError("iscsi_login_sync (discovery)") }
        guard let list = iscsi_discovery_sync(context) else { throw libraryError("iscsi_discovery_sync") }
        var result: [DiscoveredTarget] = []
        var entry: UnsafeMutablePointer<iscsi_discovery_address>? = list
        while let e = entry {
            var portals: [String] = []
            var p = e.pointee.portals
            while let portalEntry = p {
                if let s = portalEntry.pointee.portal { portals.append(String(cString: s)) }
                p = portalEntry.pointee.next
            }
            let name = e.pointee.target_name.map { String(cString: $0) } ?? ""
            result.append(DiscoveredTarget(name: name, portals: portals))
            entry = e.pointee.next
        }
        iscsi_free_discovery_data(context, list)
        try logout()
        return result
    }

    func logout() throws {
        guard iscsi_logout_sync(context) == 0 else { throw libraryError("iscsi_logout_sync") }
    }

    /// Breaks the TCP connection under libiscsi's feet (from any thread): the peer sees the
    /// connection drop exactly as if the initiator had crashed. The fd itself stays open so
    /// that it cannot be reused while libiscsi still polls it.
    func killConnection() {
        fdLock.lock(); let fd = socketFD; fdLock.unlock()
        if fd >= 0 { _ = shutdown(fd, Int32(SHUT_RDWR)) }
    }

    // MARK: SCSI commands

    /// Runs a libiscsi synchronous command, checks for GOOD status, hands the task to `body`,
    /// and frees it.
    private func command<T>(_ operation: String, retryingUnitAttention: Bool = true,
                            _ issue: () -> UnsafeMutablePointer<scsi_task>?,
                            _ body: (UnsafeMutablePointer<scsi_task>) throws -> T) throws -> T {
        var attempt = retryingUnitAttention ? 0 : 4
        var issued = issue()
        // A unit attention (e.g. power on / reset, 06/29/xx, reported once per I_T nexus and LUN)
        // is retried a few times, as every initiator does; a persistent one is reported.
        while let t = issued, attempt < 4, t.pointee.status == Int32(SCSI_STATUS_CHECK_CONDITION.rawValue),
              t.pointee.sense.key == SCSI_SENSE_UNIT_ATTENTION {
            scsi_free_scsi_task(t)
            attempt += 1
            issued = issue()
        }
        guard let task = issued else { throw libraryError(operation) }
        defer { scsi_free_scsi_task(task) }
        let status = Int(task.pointee.status)
        guard status == Int(SCSI_STATUS_GOOD.rawValue) else {
            if status >= 0x0f00_0000 {   // libiscsi-internal: cancelled / error / timeout, no SCSI status
                let what = status == Int(SCSI_STATUS_TIMEOUT.rawValue) ? "timed out"
                    : status == Int(SCSI_STATUS_CANCELLED.rawValue) ? "cancelled" : "failed"
                throw ISCSIClientError(kind: .library, operation: operation, message: "task \(what): \(lastError)")
            }
            throw ISCSIClientError(kind: .scsiStatus(status), operation: operation, message: lastError,
                                   senseKey: Int(task.pointee.sense.key.rawValue), ascq: Int(task.pointee.sense.ascq))
        }
        return try body(task)
    }

    private static func dataIn(_ task: UnsafeMutablePointer<scsi_task>) -> [UInt8] {
        let d = task.pointee.datain
        guard let p = d.data, d.size > 0 else { return [] }
        return Array(UnsafeBufferPointer(start: p, count: Int(d.size)))
    }

    func inquiry(lun: Int32) throws -> StandardInquiry {
        let bytes = try command("INQUIRY", { iscsi_inquiry_sync(context, lun, 0, 0, 255) }) { Self.dataIn($0) }
        guard bytes.count >= 36 else {
            throw ISCSIClientError(kind: .badData, operation: "INQUIRY", message: "only \(bytes.count) bytes of standard data")
        }
        func ascii(_ r: Range<Int>) -> String {
            String(decoding: bytes[r], as: UTF8.self).trimmingCharacters(in: .whitespaces)
        }
        return StandardInquiry(qualifier: Int(bytes[0] >> 5), deviceType: Int(bytes[0] & 0x1F),
                               version: Int(bytes[2]), responseDataFormat: Int(bytes[3] & 0x0F),
                               additionalLength: Int(bytes[4]), commandQueueing: bytes[7] & 0x02 != 0,
                               vendor: ascii(8..<16), product: ascii(16..<32), revision: ascii(32..<36))
    }

    func readCapacity16(lun: Int32) throws -> Capacity16 {
        let bytes = try command("READ CAPACITY(16)", { iscsi_readcapacity16_sync(context, lun) }) { Self.dataIn($0) }
        guard bytes.count >= 12 else {
            throw ISCSIClientError(kind: .badData, operation: "READ CAPACITY(16)", message: "only \(bytes.count) bytes")
        }
        let lba = bytes[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let len = bytes[8..<12].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return Capacity16(lastLBA: lba, blockLength: len)
    }

    /// REPORT LUNS (select report 0); returns the LUN numbers (flat / peripheral addressing).
    func reportLUNs() throws -> [Int] {
        let bytes = try command("REPORT LUNS", { iscsi_reportluns_sync(context, 0, 16384) }) { Self.dataIn($0) }
        guard bytes.count >= 8 else {
            throw ISCSIClientError(kind: .badData, operation: "REPORT LUNS", message: "only \(bytes.count) bytes")
        }
        let listLength = Int(bytes[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        var luns: [Int] = []
        var offset = 8
        while offset + 8 <= min(bytes.count, 8 + listLength) {
            luns.append(Int(bytes[offset] & 0x3F) << 8 | Int(bytes[offset + 1]))
            offset += 8
        }
        return luns
    }

    func read10(lun: Int32, lba: UInt32, blocks: Int, blockSize: Int = 512) throws -> [UInt8] {
        let length = UInt32(blocks * blockSize)
        return try command("READ(10) lba \(lba) x\(blocks)", {
            iscsi_read10_sync(context, lun, lba, length, Int32(blockSize), 0, 0, 0, 0, 0)
        }) { task in
            let data = Self.dataIn(task)
            guard data.count == Int(length) else {
                throw ISCSIClientError(kind: .badData, operation: "READ(10) lba \(lba)",
                                       message: "got \(data.count) bytes, expected \(length)")
            }
            return data
        }
    }

    func write10(lun: Int32, lba: UInt32, data: [UInt8], blockSize: Int = 512, fua: Bool = false) throws {
        var buffer = data
        let count = UInt32(buffer.count)
        try buffer.withUnsafeMutableBufferPointer { raw in
            try command("WRITE(10) lba \(lba) x\(Int(count) / blockSize)", {
                iscsi_write10_sync(context, lun, lba, raw.baseAddress, count, Int32(blockSize), 0, 0, fua ? 1 : 0, 0, 0)
            }) { _ in () }
        }
    }

    func testUnitReady(lun: Int32) throws {
        try command("TEST UNIT READY", { iscsi_testunitready_sync(context, lun) }) { _ in () }
    }

    /// LOGICAL UNIT RESET; throws unless the target answers FUNCTION COMPLETE.
    func lunReset(lun: UInt32) throws {
        guard iscsi_task_mgmt_lun_reset_sync(context, lun) == 0 else { throw libraryError("LOGICAL UNIT RESET") }
    }

    /// TEST UNIT READY once: a unit attention is reported, not retried.
    func testUnitReadyOnce(lun: Int32) throws {
        try command("TEST UNIT READY", retryingUnitAttention: false, { iscsi_testunitready_sync(context, lun) }) { _ in () }
    }

    /// Any CDB: `dataOut` is sent (write direction) or up to `dataInLength` bytes are read.
    /// Returns the Data-In bytes; a status other than GOOD throws with the sense key and ASC/ASCQ.
    func scsiCommand(lun: Int32, cdb: [UInt8], dataOut: [UInt8]? = nil, dataInLength: Int = 0) throws -> [UInt8] {
        var cdbBytes = cdb
        var payload = dataOut ?? []
        let direction: Int32 = dataOut != nil ? Int32(SCSI_XFER_WRITE.rawValue)
            : dataInLength > 0 ? Int32(SCSI_XFER_READ.rawValue) : Int32(SCSI_XFER_NONE.rawValue)
        let length = dataOut?.count ?? dataInLength
        return try payload.withUnsafeMutableBufferPointer { raw in
            try command(String(format: "CDB %02X", cdb.first ?? 0), {
                guard let task = cdbBytes.withUnsafeMutableBufferPointer({
                    scsi_create_task(Int32(cdb.count), $0.baseAddress, direction, Int32(length))
                }) else { return nil }
                var data = iscsi_data(size: raw.count, data: raw.baseAddress)
                if dataOut == nil { return iscsi_scsi_command_sync(context, lun, task, nil) }
                return iscsi_scsi_command_sync(context, lun, task, &data)
            }) { task in Self.dataIn(task) }
        }
    }
}

// MARK: Running blocking initiator code

/// Expectations evaluated on initiator threads. Swift Testing attributes an issue to a test
/// through task-local state, which a plain thread does not have; so failures are collected
/// here and recorded by `onThread` once it is back in the test's task.
final class Checks: @unchecked Sendable {
    private let lock = NSLock()
    private var failures: [(String, SourceLocation)] = []

    func record(_ message: String, sourceLocation: SourceLocation = #_sourceLocation) {
        lock.lock(); failures.append((message, sourceLocation)); lock.unlock()
    }

    func expect(_ condition: Bool, _ message: @autoclosure () -> String = "",
                sourceLocation: SourceLocation = #_sourceLocation) {
        if !condition { record("Expectation failed. \(message())", sourceLocation: sourceLocation) }
    }

    func expectEqual<T: Equatable>(_ actual: T, _ expected: T, _ message: @autoclosure () -> String = "",
                                   sourceLocation: SourceLocation = #_sourceLocation) {
        if actual != expected {
            record("Expected \(expected), got \(actual). \(message())", sourceLocation: sourceLocation)
        }
    }

    /// Byte comparison that reports where the data first differs instead of dumping it.
    func expectBytes(_ actual: [UInt8], _ expected: [UInt8], _ message: @autoclosure () -> String = "",
                     sourceLocation: SourceLocation = #_sourceLocation) {
        guard actual != expected else { return }
        if actual.count != expected.count {
            record("Data differs: \(actual.count) bytes instead of \(expected.count). \(message())",
                   sourceLocation: sourceLocation)
            return
        }
        let first = actual.indices.first { actual[$0] != expected[$0] } ?? 0
        let differing = zip(actual, expected).filter { $0 != $1 }.count
        let zeros = actual.allSatisfy { $0 == 0 }
        record("Data differs: first at byte \(first) (block \(first / 512)), \(differing) of \(actual.count) bytes differ"
               + (zeros ? ", all read bytes are zero" : "") + ". \(message())", sourceLocation: sourceLocation)
    }

    fileprivate func replay() {
        lock.lock(); let all = failures; failures.removeAll(); lock.unlock()
        for (message, location) in all { Issue.record(Comment(rawValue: message), sourceLocation: location) }
    }
}

struct DeadlineExceeded: Error, CustomStringConvertible {
    var seconds: Double
    var what: String
    var description: String { "\(what) did not finish within \(seconds) s (connections were killed to unblock it)" }
}

private final class WatchdogState: @unchecked Sendable {
    let lock = NSLock()
    var finished = false
    var expired = false
}

/// Runs `body` on a dedicated thread and awaits it. If it takes longer than `deadline`,
/// `onDeadline` runs (typically killing the clients' connections so libiscsi returns) and the
/// call throws `DeadlineExceeded` once the thread has finished. Failures recorded in the `Checks`
/// handed to `body` become issues of the calling test.
func onThread<T>(_ what: String = "initiator work", deadline: Double = 120,
                 onDeadline: @escaping @Sendable () -> Void = {},
                 _ body: @escaping @Sendable (Checks) throws -> T) async throws -> T {
    let box = WatchdogState()
    let checks = Checks()
    let watchdog = Thread {
        let end = Date().addingTimeInterval(deadline)
        while Date() < end {
            box.lock.lock(); let done = box.finished; box.lock.unlock()
            if done { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        box.lock.lock(); let done = box.finished; if !done { box.expired = true }; box.lock.unlock()
        if !done { onDeadline() }
    }
    watchdog.start()
    let result: Result<T, Error> = await withCheckedContinuation { continuation in
        let thread = Thread {
            let r = Result { try body(checks) }
            box.lock.lock(); box.finished = true; box.lock.unlock()
            continuation.resume(returning: r)
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    checks.replay()
    if box.lock.withLock({ box.expired }) { throw DeadlineExceeded(seconds: deadline, what: what) }
    return try result.get()
}

/// Deterministic test data: a byte pattern that differs per seed and per offset.
func pattern(seed: UInt32, count: Int) -> [UInt8] {
    var state = seed &* 2654435761 &+ 0x9E3779B9
    var out = [UInt8](repeating: 0, count: count)
    for i in 0..<count {
        state ^= state << 13; state ^= state >> 17; state ^= state << 5
        out[i] = UInt8(truncatingIfNeeded: state)
    }
    return out
}

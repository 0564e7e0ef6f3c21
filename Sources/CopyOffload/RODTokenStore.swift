//
// Every ROD token of the process: its bytes, its source ranges, its state machine, and for a
// point-in-time persistent token the data it must keep.
//
// Tokens are process-wide, like the copy unit registry: a token made by POPULATE TOKEN on
// one target's logical unit may be used by WRITE USING TOKEN on any logical unit of any
// target of the process.
//
// Writes to a token's source ranges are seen through `GuardedBlockStore`, which calls
// `sourceWillChange` before every write or deallocation of a logical unit's store:
// - access-upon-reference tokens: nothing happens (the copy reads the source when it runs);
// - change-vulnerable tokens: cancelled (23/08 from then on);
// - persistent tokens: the bytes about to be overwritten are copied into the token's own
//   storage first (copy-before-write, once per byte), and WRITE USING TOKEN reads preserved
//   bytes from there, so the copy delivers the data as of POPULATE TOKEN. If the token's
//   storage cannot take them (no space), the token is cancelled instead: never a silent
//   change of what a token represents.
// A per-logical-unit lock orders "preserve, then write" against "read the source for a
// persistent token"; logical units without such tokens never take it (an atomic counter).
//
import BlockStores
import Foundation
import NIOCore
import SCSI
import Synchronization

/// A byte range of a logical unit (offset and length in bytes).
public struct ByteRange: Sendable, Equatable, Hashable {
    public var offset: UInt64
    public var length: UInt64
    public init(offset: UInt64, length: UInt64) {
        self.offset = offset
        self.length = length
    }
    public var end: UInt64 { offset + length }
}

/// Disjoint sorted half-open ranges (the preserved parts of a persistent token).
struct RangeSet: Sendable {
    private(set) var ranges: [Range<UInt64>] = []

    /// The parts of `range` not in the set, in order.
    func missing(_ range: Range<UInt64>) -> [Range<UInt64>] {
        var result: [Range<UInt64>] = []
        var cursor = range.lowerBound
        for r in ranges where r.upperBound > cursor && r.lowerBound < range.upperBound {
            if r.lowerBound > cursor { result.append(cursor..<r.lowerBound) }
            cursor = max(cursor, r.upperBound)
            if cursor >= range.upperBound { break }
        }
        if cursor < range.upperBound { result.append(cursor..<range.upperBound) }
        return result
    }

    /// `range` split into (piece, inSet) parts, in order.
    func split(_ range: Range<UInt64>) -> [(Range<UInt64>, Bool)] {
        var result: [(Range<UInt64>, Bool)] = []
        var cursor = range.lowerBound
        for r in ranges where r.upperBound > cursor && r.lowerBound < range.upperBound {
            if r.lowerBound > cursor { result.append((cursor..<r.lowerBound, false)) }
            let upper = min(r.upperBound, range.upperBound)
            result.append((max(cursor, r.lowerBound)..<upper, true))
            cursor = upper
            if cursor >= range.upperBound { break }
        }
        if cursor < range.upperBound { result.append((cursor..<range.upperBound, false)) }
        return result
    }

    mutating func insert(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        var lower = range.lowerBound
        var upper = range.upperBound
        var kept: [Range<UInt64>] = []
        kept.reserveCapacity(ranges.count + 1)
        var inserted = false
        for r in ranges {
            if r.upperBound < lower {
                kept.append(r)
            } else if r.lowerBound > upper {
                if !inserted { kept.append(lower..<upper); inserted = true }
                kept.append(r)
            } else {
                lower = min(lower, r.lowerBound)
                upper = max(upper, r.upperBound)
            }
        }
        if !inserted { kept.append(lower..<upper) }
        ranges = kept
    }

    var byteCount: UInt64 { ranges.reduce(0) { $0 + UInt64($1.count) } }
}

/// The preserved data of a persistent token: a sparse store addressed by ROD offset.
/// Touched only under its source logical unit's watch lock.
final class TokenSnapshot: @unchecked Sendable {
    let store: any BlockStore
    var preserved = RangeSet()
    init(store: any BlockStore) { self.store = store }
}

/// Per logical unit: how many tokens watch its writes, and the lock that orders preserving
/// against reading.
public final class UnitWatch: Sendable {
    let watchers = Atomic<Int>(0)
    let lock = LockedValue<Void>(())
}

/// What the operator sees of one token.
public struct RODTokenInfo: Sendable {
    public var identifier: UInt64
    public var type: RODType
    public var state: String
    public var isTerminal: Bool
    public var source: CopyUnitID
    /// (LBA, number of blocks) of each source range.
    public var ranges: [(lba: UInt64, blocks: UInt64)]
    public var bytesRepresented: UInt64
    /// Bytes a persistent token has preserved so far.
    public var bytesPreserved: UInt64
    /// The I_T nexus that created the token (initiator port name).
    public var owner: String
    public var createdBy: String
    /// Until expiry (valid tokens) or until the tombstone goes (terminal ones).
    public var timeLeft: TimeAmount?
}

/// A state change of a token, for the log.
public struct RODTokenTransition: Sendable {
    public var token: RODTokenInfo
    public var from: String
    public var to: String
    public var cause: String
}

/// A token granted to one WRITE USING TOKEN.
public struct RODTokenUse: Sendable {
    public var identifier: UInt64
    public var type: RODType
    public var source: CopyUnit
    public var ranges: [ByteRange]
    public var bytesRepresented: UInt64
    let snapshot: TokenSnapshot?
    let watch: UnitWatch
}

public final class RODTokenStore: Sendable {
    struct Record: Sendable {
        var identifier: UInt64
        var bytes: [UInt8]
        var type: RODType
        var machine: RODTokenMachine
        var source: CopyUnit
        var ranges: [ByteRange]
        var bytesRepresented: UInt64
        var owner: String
        var createdBy: String
        var snapshot: TokenSnapshot?
        var watch: UnitWatch
        var watching: Bool
    }

    struct State: Sendable {
        var tokens: [UInt64: Record] = [:]
        var nextIdentifier: UInt64 = 1
    }

    public let minter: RODTokenMinter
    let clock: @Sendable () -> NIODeadline
    private let state = LockedValue(State())
    private let watches = LockedValue<[CopyUnitID: UnitWatch]>([:])
    private let observer = LockedValue<(@Sendable (RODTokenTransition) -> Void)?>(nil)
    /// Makes the store that holds a persistent token's preserved bytes (sized in bytes).
    let makeSnapshotStore: @Sendable (UInt64) throws -> any BlockStore

    public init(minter: RODTokenMinter = RODTokenMinter(), clock: @escaping @Sendable () -> NIODeadline = { .now() },
                makeSnapshotStore: @escaping @Sendable (UInt64) throws -> any BlockStore) {
        self.minter = minter
        self.clock = clock
        self.makeSnapshotStore = makeSnapshotStore
    }

    /// Persistent tokens keep their preserved bytes in sparse unlinked files in `directory`
    /// (default: the system's temporary directory).
    public static func temporaryFiles(directory: String? = nil) -> @Sendable (UInt64) throws -> any BlockStore {
        { byteCount in
            let folder = directory ?? NSTemporaryDirectory()
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let path = (folder as NSString).appendingPathComponent("rod-token-\(UUID().uuidString)")
            let store = try FileBlockStore.open(path: path, byteCount: max(byteCount, 1), createIfMissing: true,
                                                writeThrough: false)
            unlink(path)
            return store
        }
    }

    /// Called (outside the store's locks) for every state change of every token.
    public func observe(_ observer: @escaping @Sendable (RODTokenTransition) -> Void) {
        self.observer.withLock { $0 = observer }
    }

    private func report(_ transitions: [RODTokenTransition]) {
        guard !transitions.isEmpty, let observer = self.observer.withLock({ $0 }) else { return }
        for transition in transitions { observer(transition) }
    }

    /// The watch of a logical unit (created on first use).
    public func watch(_ unit: CopyUnitID) -> UnitWatch {
        self.watches.withLock { watches in
            if let watch = watches[unit] { return watch }
            let watch = UnitWatch()
            watches[unit] = watch
            return watch
        }
    }

    // MARK: Life

    /// Creates a token in state `populating`. `maximumTokens` counts live tokens of `createdBy`.
    func create(type requested: RODType, source: CopyUnit, ranges: [ByteRange], inactivityTimeout: TimeAmount,
                tombstoneLifetime: TimeAmount, owner: String, createdBy: String,
                maximumTokens: Int) throws(CopyError) -> (identifier: UInt64, bytes: [UInt8]) {
        let type = requested.effective
        let bytes = ranges.reduce(UInt64(0)) { $0 + $1.length }
        var snapshot: TokenSnapshot?
        if type == .pointInTimePersistent {
            do {
                snapshot = TokenSnapshot(store: try self.makeSnapshotStore(bytes))
            } catch {
                throw .insufficientResourcesToCreateToken
            }
        }
        let watch = self.watch(source.id)
        let watching = type == .pointInTimePersistent || type == .pointInTimeChangeVulnerable
        let minter = self.minter
        let created = self.state.withLock { state -> (UInt64, [UInt8])? in
            let live = state.tokens.values.filter { $0.createdBy == createdBy && !$0.machine.isTerminal }.count
            guard live < maximumTokens else { return nil }
            let identifier = state.nextIdentifier
            state.nextIdentifier += 1
            let token = minter.mint(type: type, identifier: identifier, source: source, bytesRepresented: bytes)
            state.tokens[identifier] = Record(
                identifier: identifier, bytes: token, type: type,
                machine: RODTokenMachine(inactivityTimeout: inactivityTimeout, tombstoneLifetime: tombstoneLifetime),
                source: source, ranges: ranges, bytesRepresented: bytes, owner: owner, createdBy: createdBy,
                snapshot: snapshot, watch: watch, watching: watching)
            if watching { watch.watchers.add(1, ordering: .sequentiallyConsistent) }
            return (identifier, token)
        }
        guard let created else { throw .insufficientResourcesToCreateToken }
        return created
    }

    /// Applies `event` to token `identifier`; returns the actions the machine asked for.
    @discardableResult
    func apply(_ event: RODTokenMachine.Event, to identifier: UInt64, cause: String) -> [RODTokenMachine.Action] {
        let now = self.clock()
        var transitions: [RODTokenTransition] = []
        let actions = self.state.withLock { state in
            Self.apply(event, to: identifier, cause: cause, now: now, state: &state, transitions: &transitions)
        }
        self.report(transitions)
        return actions
    }

    private static func apply(_ event: RODTokenMachine.Event, to identifier: UInt64, cause: String, now: NIODeadline,
                              state: inout State, transitions: inout [RODTokenTransition]) -> [RODTokenMachine.Action] {
        guard var record = state.tokens[identifier] else { return [] }
        let before = record.machine.state
        let actions = record.machine.handle(event)
        for action in actions {
            switch action {
            case .releaseStorage:
                if record.watching {
                    record.watch.watchers.subtract(1, ordering: .sequentiallyConsistent)
                    record.watching = false
                }
                record.snapshot = nil
            case .forget, .grantUse, .refuseUse:
                break
            }
        }
        if actions.contains(.forget) {
            state.tokens[identifier] = nil
            transitions.append(RODTokenTransition(token: Self.info(record, now: now), from: before.description,
                                                  to: "forgotten", cause: cause))
        } else {
            state.tokens[identifier] = record
            if before.description != record.machine.state.description {
                transitions.append(RODTokenTransition(token: Self.info(record, now: now), from: before.description,
                                                      to: record.machine.state.description, cause: cause))
            }
        }
        return actions
    }

    /// Recognises `token` and, if it may be used, counts a writer on it.
    func beginUse(_ token: [UInt8]) -> Result<RODTokenUse?, RODTokenError> {
        switch self.minter.recognise(token) {
        case .failure(let error):
            return .failure(error)
        case .success(.zero):
            return .success(nil)
        case .success(.minted(let identifier, _)):
            let now = self.clock()
            var transitions: [RODTokenTransition] = []
            let result = self.state.withLock { state -> Result<RODTokenUse?, RODTokenError> in
                guard let record = state.tokens[identifier], record.bytes == token else { return .failure(.tokenUnknown) }
                let actions = Self.apply(.tick(now: now), to: identifier, cause: "inactivity timeout", now: now,
                                         state: &state, transitions: &transitions)
                if actions.contains(.forget) { return .failure(.tokenUnknown) }
                let granted = Self.apply(.useRequested(now: now), to: identifier, cause: "WRITE USING TOKEN", now: now,
                                         state: &state, transitions: &transitions)
                for action in granted {
                    if case .refuseUse(let error) = action { return .failure(error) }
                }
                guard let record = state.tokens[identifier] else { return .failure(.tokenUnknown) }
                return .success(RODTokenUse(identifier: identifier, type: record.type, source: record.source,
                                            ranges: record.ranges, bytesRepresented: record.bytesRepresented,
                                            snapshot: record.snapshot, watch: record.watch))
            }
            self.report(transitions)
            return result
        }
    }

    /// Why the token may no longer be read now (nil: it may).
    func useError(_ identifier: UInt64) -> RODTokenError? {
        self.state.withLock { state in
            guard let record = state.tokens[identifier] else { return .tokenUnknown }
            if case .inUse = record.machine.state { return nil }
            return record.machine.useError
        }
    }

    func endUse(_ identifier: UInt64, deleteToken: Bool) {
        self.apply(.useEnded(now: self.clock(), deleteToken: deleteToken), to: identifier,
                   cause: deleteToken ? "WRITE USING TOKEN with DEL_TKN" : "WRITE USING TOKEN ended")
    }

    /// Revokes the tokens `matching` selects (LU reset, target reset, LUN removed).
    public func revoke(cause: String, matching: (RODTokenInfo) -> Bool) {
        let now = self.clock()
        var transitions: [RODTokenTransition] = []
        self.state.withLock { state in
            for (identifier, record) in state.tokens where !record.machine.isTerminal && matching(Self.info(record, now: now)) {
                _ = Self.apply(.revoked(now: now), to: identifier, cause: cause, now: now, state: &state,
                               transitions: &transitions)
            }
        }
        self.report(transitions)
    }

    /// Expires idle tokens and forgets old tombstones. Returns the earliest next deadline.
    @discardableResult
    public func tick() -> NIODeadline? {
        let now = self.clock()
        var transitions: [RODTokenTransition] = []
        let next = self.state.withLock { state -> NIODeadline? in
            for (identifier, record) in state.tokens {
                guard let deadline = record.machine.deadline, deadline <= now else { continue }
                let cause = record.machine.isTerminal ? "tombstone lifetime passed" : "inactivity timeout"
                _ = Self.apply(.tick(now: now), to: identifier, cause: cause, now: now, state: &state,
                               transitions: &transitions)
            }
            return state.tokens.values.compactMap(\.machine.deadline).min()
        }
        self.report(transitions)
        return next
    }

    // MARK: Source writes

    /// A write or deallocation of `length` bytes at `offset` of `unit` is about to happen.
    func sourceWillChange(_ unit: CopyUnitID, watch: UnitWatch, offset: UInt64, length: UInt64, cause: String) {
        guard length > 0, watch.watchers.load(ordering: .sequentiallyConsistent) > 0 else { return }
        let end = offset + length
        watch.lock.withLock { _ in
            let now = self.clock()
            var transitions: [RODTokenTransition] = []
            // (token, ROD pieces to preserve: (rod offset, source offset, length))
            let toPreserve = self.state.withLock { state -> [(UInt64, TokenSnapshot, CopyUnit, [(UInt64, UInt64, UInt64)])] in
                var result: [(UInt64, TokenSnapshot, CopyUnit, [(UInt64, UInt64, UInt64)])] = []
                for (identifier, record) in state.tokens where record.source.id == unit && record.watching {
                    let pieces = Self.overlaps(record.ranges, offset: offset, end: end)
                    guard !pieces.isEmpty else { continue }
                    switch record.type {
                    case .pointInTimeChangeVulnerable:
                        _ = Self.apply(.sourceModified(now: now), to: identifier, cause: cause, now: now, state: &state,
                                       transitions: &transitions)
                    case .pointInTimePersistent:
                        if let snapshot = record.snapshot { result.append((identifier, snapshot, record.source, pieces)) }
                    default:
                        break
                    }
                }
                return result
            }
            for (identifier, snapshot, source, pieces) in toPreserve {
                do {
                    try Self.preserve(pieces, from: source.store, into: snapshot)
                } catch {
                    self.state.withLock { state in
                        _ = Self.apply(.sourceModified(now: now), to: identifier,
                                       cause: "\(cause); its data could not be preserved (\(error))", now: now,
                                       state: &state, transitions: &transitions)
                    }
                }
            }
            self.report(transitions)
        }
    }

    /// The parts of `ranges` (in ROD order) inside [offset, end): (ROD offset, source offset, length).
    static func overlaps(_ ranges: [ByteRange], offset: UInt64, end: UInt64) -> [(UInt64, UInt64, UInt64)] {
        var rodOffset: UInt64 = 0
        var pieces: [(UInt64, UInt64, UInt64)] = []
        for range in ranges {
            let lower = max(range.offset, offset)
            let upper = min(range.end, end)
            if lower < upper { pieces.append((rodOffset + (lower - range.offset), lower, upper - lower)) }
            rodOffset += range.length
        }
        return pieces
    }

    private static func preserve(_ pieces: [(UInt64, UInt64, UInt64)], from source: any BlockStore,
                                 into snapshot: TokenSnapshot) throws(BlockStoreError) {
        let chunk = 1 << 20
        var buffer: UnsafeMutableRawBufferPointer?
        defer { buffer?.deallocate() }
        for (rodOffset, sourceOffset, length) in pieces {
            for gap in snapshot.preserved.missing(rodOffset..<(rodOffset + length)) {
                var done: UInt64 = 0
                while done < UInt64(gap.count) {
                    let count = Int(min(UInt64(gap.count) - done, UInt64(chunk)))
                    if buffer == nil { buffer = .allocate(byteCount: chunk, alignment: 4096) }
                    let slice = UnsafeMutableRawBufferPointer(rebasing: buffer![0..<count])
                    let at = gap.lowerBound + done
                    try source.read(into: slice, at: sourceOffset + (at - rodOffset))
                    try snapshot.store.write(UnsafeRawBufferPointer(slice), at: at, durable: false)
                    done += UInt64(count)
                }
                snapshot.preserved.insert(gap)
            }
        }
    }

    // MARK: Reading a token's data

    /// Reads `buffer.count` bytes of the token's data at `rodOffset`: the data as of POPULATE
    /// TOKEN for persistent tokens, the source as it is now for the others. Throws the token
    /// error when the token stopped being usable (a change-vulnerable token cancelled while
    /// the bytes were read, a revoked token).
    func read(_ use: RODTokenUse, at rodOffset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(TokenReadError) {
        func readPieces() throws(TokenReadError) {
            var position = 0
            let end = rodOffset + UInt64(buffer.count)
            for (pieceROD, sourceOffset, length) in Self.overlapsROD(use.ranges, rodOffset: rodOffset, end: end) {
                let parts: [(Range<UInt64>, Bool)] = use.snapshot?.preserved.split(pieceROD..<(pieceROD + length))
                    ?? [(pieceROD..<(pieceROD + length), false)]
                for (part, preserved) in parts {
                    let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[position..<(position + part.count)])
                    do {
                        if preserved, let snapshot = use.snapshot {
                            try snapshot.store.read(into: slice, at: part.lowerBound)
                        } else {
                            try use.source.store.read(into: slice, at: sourceOffset + (part.lowerBound - pieceROD))
                        }
                    } catch {
                        throw .storage(error)
                    }
                    position += part.count
                }
            }
        }
        if use.type == .pointInTimePersistent {
            try use.watch.lock.withLock { _ throws(TokenReadError) in
                if let error = self.useError(use.identifier) { throw .token(error) }
                try readPieces()
            }
        } else {
            try readPieces()
            if let error = self.useError(use.identifier) { throw .token(error) }
        }
    }

    /// The source pieces covering ROD bytes [rodOffset, end): (ROD offset, source offset, length).
    static func overlapsROD(_ ranges: [ByteRange], rodOffset: UInt64, end: UInt64) -> [(UInt64, UInt64, UInt64)] {
        var base: UInt64 = 0
        var pieces: [(UInt64, UInt64, UInt64)] = []
        for range in ranges {
            let lower = max(base, rodOffset)
            let upper = min(base + range.length, end)
            if lower < upper { pieces.append((lower, range.offset + (lower - base), upper - lower)) }
            base += range.length
            if base >= end { break }
        }
        return pieces
    }

    // MARK: Listing

    static func info(_ record: Record, now: NIODeadline) -> RODTokenInfo {
        let blockSize = UInt64(record.source.blockSize)
        var left: TimeAmount?
        if let deadline = record.machine.deadline { left = deadline > now ? deadline - now : .zero }
        return RODTokenInfo(
            identifier: record.identifier, type: record.type, state: record.machine.state.description,
            isTerminal: record.machine.isTerminal, source: record.source.id,
            ranges: record.ranges.map { ($0.offset / blockSize, $0.length / blockSize) },
            bytesRepresented: record.bytesRepresented, bytesPreserved: record.snapshot?.preserved.byteCount ?? 0,
            owner: record.owner, createdBy: record.createdBy, timeLeft: left)
    }

    /// Every token the store holds (live ones and tombstones), by identifier.
    public var tokens: [RODTokenInfo] {
        let now = self.clock()
        return self.state.withLock { state in
            state.tokens.values.sorted { $0.identifier < $1.identifier }.map { Self.info($0, now: now) }
        }
    }

    /// The bytes of live (not terminal) tokens whose source is `unit`.
    func liveTokenBytes(source unit: CopyUnitID) -> [[UInt8]] {
        self.state.withLock { state in
            state.tokens.values.filter { $0.source.id == unit && !$0.machine.isTerminal }
                .sorted { $0.identifier < $1.identifier }.map(\.bytes)
        }
    }
}

enum TokenReadError: Error {
    case token(RODTokenError)
    case storage(BlockStoreError)
}

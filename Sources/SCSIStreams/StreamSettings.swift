//
// Per-logical-unit stream settings (SBC-4 §4.29 streams; SBC-5 constrained streams) and the
// statistics the streams extension keeps.
//
import Synchronization

/// What one logical unit offers: how many streams, how many of them are permanent, and the
/// two sizes the Block Limits Extension VPD page reports.
public struct StreamSettings: Sendable, Equatable {
    /// MAXIMUM NUMBER OF STREAMS (VPD 0xB7): stream identifiers are 0 ..< maximumStreams.
    /// 0 disables streams on the LU.
    public var maximumStreams: UInt16
    /// Streams 0 ..< permanentStreams are permanent: always open, reported with PERM = 1 and
    /// with ST_ENBLE = 1 in their IO Advice Hints Grouping descriptors. Linux sd (6.9+)
    /// counts them and puts GROUP NUMBER = min(write hint, count) in READ/WRITE CDBs.
    public var permanentStreams: UInt16
    /// OPTIMAL STREAM WRITE SIZE in logical blocks (0: not reported).
    public var optimalStreamWriteSize: UInt16
    /// STREAM GRANULARITY SIZE in units of the optimal stream write size (0: not reported).
    public var streamGranularitySize: UInt32
    /// Offer WRITE STREAM(32) (7Fh/0010h). Off by default: libiscsi's REPORT SUPPORTED
    /// OPERATION CODES test keeps at most 16 bytes of CDB USAGE DATA and fails on any 32-byte
    /// command, so the default target does not advertise one.
    public var writeStream32: Bool

    public init(maximumStreams: UInt16 = 8, permanentStreams: UInt16 = 6, optimalStreamWriteSize: UInt16 = 0,
                streamGranularitySize: UInt32 = 0, writeStream32: Bool = false) {
        precondition(maximumStreams <= 64, "at most 64 streams (one grouping descriptor per group number)")
        precondition(permanentStreams <= maximumStreams, "more permanent streams than streams")
        self.maximumStreams = maximumStreams
        self.permanentStreams = permanentStreams
        self.optimalStreamWriteSize = optimalStreamWriteSize
        self.streamGranularitySize = streamGranularitySize
        self.writeStream32 = writeStream32
    }

    /// The defaults of the default target: 8 streams, the first 6 permanent, so that the five
    /// Linux write hints (group numbers 1–5) all land on stream-enabled descriptors.
    public static let defaultTarget = StreamSettings()
}

/// Counters for one stream or one group number.
public struct TransferCounters: Sendable, Equatable {
    public var readCommands: UInt64 = 0
    public var writeCommands: UInt64 = 0
    public var blocksRead: UInt64 = 0
    public var blocksWritten: UInt64 = 0
    public var bytesRead: UInt64 = 0
    public var bytesWritten: UInt64 = 0

    public init() {}

    mutating func add(_ kind: Kind, blocks: UInt64, bytes: Int) {
        switch kind {
        case .read:
            self.readCommands += 1
            self.blocksRead += blocks
            self.bytesRead += UInt64(bytes)
        case .write:
            self.writeCommands += 1
            self.blocksWritten += blocks
            self.bytesWritten += UInt64(bytes)
        }
    }

    enum Kind { case read, write }
}

/// What arrived on one logical unit, per stream identifier and per GROUP NUMBER.
public struct StreamStatistics: Sendable, Equatable {
    /// Indexed by stream identifier (0 ..< maximumStreams): WRITE STREAM commands, and
    /// READ/WRITE commands whose GROUP NUMBER selects a stream-enabled descriptor.
    public var streams: [TransferCounters]
    /// Indexed by GROUP NUMBER (0–63), every command with a GROUP NUMBER field.
    public var groups: [TransferCounters]

    init(streams: Int) {
        self.streams = Array(repeating: TransferCounters(), count: streams)
        self.groups = Array(repeating: TransferCounters(), count: 64)
    }
}

/// `TransferCounters` for every GROUP NUMBER (0–63) and stream identifier (0–63) of one logical
/// unit, as atomics: counting takes no lock, so sessions on different event loops never wait
/// for each other here.
final class StreamCounters: Sendable {
    enum Slot {
        case group(Int)
        case stream(Int)

        var base: Int {
            switch self {
            case .group(let g): g * StreamCounters.fields
            case .stream(let s): (64 + s) * StreamCounters.fields
            }
        }
    }

    /// readCommands, writeCommands, blocksRead, blocksWritten, bytesRead, bytesWritten.
    static let fields = 6
    private let values: InlineArray<768, Atomic<UInt64>>  // (64 groups + 64 streams) × 6

    init() {
        self.values = InlineArray { _ in Atomic<UInt64>(0) }
    }

    func add(_ kind: TransferCounters.Kind, slot: Slot, blocks: UInt64, bytes: Int) {
        let base = slot.base + (kind == .read ? 0 : 1)
        self.values[base].wrappingAdd(1, ordering: .relaxed)
        self.values[base + 2].wrappingAdd(blocks, ordering: .relaxed)
        self.values[base + 4].wrappingAdd(UInt64(bytes), ordering: .relaxed)
    }

    func load(_ slot: Slot) -> TransferCounters {
        let base = slot.base
        var c = TransferCounters()
        c.readCommands = self.values[base].load(ordering: .relaxed)
        c.writeCommands = self.values[base + 1].load(ordering: .relaxed)
        c.blocksRead = self.values[base + 2].load(ordering: .relaxed)
        c.blocksWritten = self.values[base + 3].load(ordering: .relaxed)
        c.bytesRead = self.values[base + 4].load(ordering: .relaxed)
        c.bytesWritten = self.values[base + 5].load(ordering: .relaxed)
        return c
    }

    /// Zeroes one slot; true if any of its counters was set.
    func reset(_ slot: Slot) -> Bool {
        var any = false
        for i in slot.base..<(slot.base + Self.fields) where self.values[i].exchange(0, ordering: .relaxed) != 0 {
            any = true
        }
        return any
    }
}

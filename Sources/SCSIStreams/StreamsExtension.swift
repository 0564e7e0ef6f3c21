//
// SBC streams as a device extension: STREAM CONTROL, GET STREAM STATUS, WRITE STREAM(16/32),
// the Block Limits Extension VPD page (0xB7), GROUP_SUP in the Extended INQUIRY page, the IO
// Advice Hints Grouping mode page (0x0A/0x05), and per-stream / per-group statistics of what
// the initiator sent (see Docs/streams.md).
//
// Stream identifiers are 0-based, as Linux sd and scsi_debug use them: descriptor k of the
// grouping page describes GROUP NUMBER k, and with ST_ENBLE = 1 that group number is stream
// k. Streams 0 ..< permanentStreams are permanent (always open, PERM = 1); the others are
// opened by STREAM CONTROL, which assigns the lowest free identifier, and closed by STREAM
// CONTROL, by the loss of the I_T nexus that opened them, or by a logical unit reset.
//
import NIOCore
import SCSI
import Synchronization

/// The sense data this module answers with, in one place.
enum StreamSense {
    /// STREAM CONTROL open with every non-permanent identifier in use: 55/10 MAXIMUM NUMBER OF
    /// STREAMS OPEN, with DATA PROTECT as for the other resource-exhaustion codes of the SBC
    /// family (ZBC's 55/0E INSUFFICIENT ZONE RESOURCES).
    static let maximumStreamsOpen = SCSIError(.dataProtect, AdditionalSenseCode(0x55, 0x10))
    /// WRITE STREAM to an identifier that is not open: ILLEGAL REQUEST, 2C/0F STREAM NOT OPEN.
    static let streamNotOpen = SCSIError(.illegalRequest, AdditionalSenseCode(0x2C, 0x0F))
}

/// The mutable stream state of one logical unit (changed by STREAM CONTROL, MODE SELECT, resets
/// and nexus loss; never by READ or WRITE).
struct StreamUnitState: Sendable {
    /// Open non-permanent streams and the I_T nexus that opened each.
    var opened: [UInt16: NexusKey] = [:]
    /// Current IO Advice Hints Grouping descriptors (16 bytes each, one per stream identifier).
    var grouping: [[UInt8]]
}

/// One logical unit's streams: settings, locked state, and lock-free statistics.
final class StreamUnit: Sendable {
    let lun: UInt16
    let settings: StreamSettings
    let state: LockedValue<StreamUnitState>
    /// What arrived per GROUP NUMBER and per stream: atomics, so the READs and WRITEs of every
    /// session count without taking a lock (`Docs/benchmarks.md`).
    let counters = StreamCounters()
    /// Bit g set: grouping descriptor g has ST_ENBLE (GROUP NUMBER g is a stream). Written
    /// with `grouping`, under the lock; read without it on every READ and WRITE.
    let streamEnabledGroups: Atomic<UInt64>

    init(lun: UInt16, settings: StreamSettings) {
        self.lun = lun
        self.settings = settings
        let grouping = StreamUnit.defaultGrouping(settings)
        self.state = LockedValue(StreamUnitState(grouping: grouping))
        self.streamEnabledGroups = Atomic(StreamUnit.streamEnabledMask(grouping))
    }

    /// The ST_ENBLE bits of `grouping` as a mask by descriptor (group number).
    static func streamEnabledMask(_ grouping: [[UInt8]]) -> UInt64 {
        var mask: UInt64 = 0
        for (index, descriptor) in grouping.enumerated() where index < 64 && descriptor[0] & 0x04 != 0 {
            mask |= 1 << UInt64(index)
        }
        return mask
    }

    /// Replaces the grouping descriptors (caller holds the lock through `state`).
    func setGrouping(_ grouping: [[UInt8]], in state: inout StreamUnitState) {
        state.grouping = grouping
        self.streamEnabledGroups.store(StreamUnit.streamEnabledMask(grouping), ordering: .relaxed)
    }

    var descriptorCount: Int { Int(self.settings.maximumStreams) }

    /// Default descriptors: ST_ENBLE for the permanent streams, everything else zero.
    static func defaultGrouping(_ settings: StreamSettings) -> [[UInt8]] {
        (0..<Int(settings.maximumStreams)).map { index in
            var descriptor = [UInt8](repeating: 0, count: 16)
            if index < Int(settings.permanentStreams) { descriptor[0] = 0x04 }  // ST_ENBLE
            return descriptor
        }
    }

    func isPermanent(_ id: UInt16) -> Bool { id < self.settings.permanentStreams }

    /// Permanent streams and the streams STREAM CONTROL opened, ascending.
    func openStreams() -> [UInt16] {
        let opened = self.state.withLock { Array($0.opened.keys) }
        return (Array(0..<self.settings.permanentStreams) + opened).sorted()
    }

    func isOpen(_ id: UInt16) -> Bool {
        self.isPermanent(id) || self.state.withLock { $0.opened[id] != nil }
    }

    /// Whether GROUP NUMBER `group` is a stream identifier (its descriptor has ST_ENBLE).
    func groupIsStream(_ group: UInt8) -> Bool {
        group < 64 && self.streamEnabledGroups.load(ordering: .relaxed) & (1 << UInt64(group)) != 0
    }

    /// Logical unit reset: opened streams close, the grouping page returns to its defaults.
    func reset() {
        self.state.withLock { state in
            state.opened = [:]
            self.setGrouping(StreamUnit.defaultGrouping(self.settings), in: &state)
        }
    }

    /// Counts one READ or WRITE (any session, any thread; no lock).
    func record(_ kind: TransferCounters.Kind, stream: UInt16?, group: UInt8, blocks: UInt64, bytes: Int) {
        let group = group & 0x3F
        self.counters.add(kind, slot: .group(Int(group)), blocks: blocks, bytes: bytes)
        let streamID = stream ?? (self.groupIsStream(group) ? UInt16(group) : nil)
        if let streamID, Int(streamID) < self.descriptorCount {
            self.counters.add(kind, slot: .stream(Int(streamID)), blocks: blocks, bytes: bytes)
        }
    }

    /// A copy of the counters (each value read atomically; a command counted meanwhile may
    /// show in some of them and not yet in others).
    var statistics: StreamStatistics {
        var statistics = StreamStatistics(streams: self.descriptorCount)
        for group in 0..<64 { statistics.groups[group] = self.counters.load(.group(group)) }
        for stream in 0..<self.descriptorCount { statistics.streams[stream] = self.counters.load(.stream(stream)) }
        return statistics
    }
}

/// SBC streams for the logical units that have `StreamSettings`.
public final class StreamsExtension: SCSIDeviceExtension {
    /// Per-LU stream state and flash models; LUs come and go while the target runs.
    let cell: SnapshotCell<(units: [UInt16: StreamUnit], flash: [UInt16: FlashUnit])>
    var units: [UInt16: StreamUnit] { self.cell.withValue { $0.units } }
    var flash: [UInt16: FlashUnit] { self.cell.withValue { $0.flash } }

    /// - Parameters:
    ///   - settings: stream settings per LUN; LUNs not listed (or with `maximumStreams` = 0)
    ///     have no streams and answer the stream commands with INVALID COMMAND OPERATION CODE /
    ///     INVALID FIELD IN CDB, as before.
    ///   - flash: flash models per LUN (any LUN, with or without streams), fed every write.
    public init(settings: [UInt16: StreamSettings], flash: [UInt16: FlashModel] = [:]) {
        var units: [UInt16: StreamUnit] = [:]
        for (lun, value) in settings where value.maximumStreams > 0 {
            units[lun] = StreamUnit(lun: lun, settings: value)
        }
        self.cell = SnapshotCell((units, flash.mapValues { FlashUnit($0) }))
    }

    /// Streams and a flash model for a logical unit added while the target runs.
    public func addUnit(lun: UInt16, settings: StreamSettings?, flash: FlashModel?) {
        self.cell.update { state in
            state.units[lun] = settings.flatMap { $0.maximumStreams > 0 ? StreamUnit(lun: lun, settings: $0) : nil }
            state.flash[lun] = flash.map { FlashUnit($0) }
        }
    }

    /// Forgets a removed logical unit.
    public func removeUnit(lun: UInt16) {
        self.cell.update { state in
            state.units[lun] = nil
            state.flash[lun] = nil
        }
    }

    func unit(_ lu: LogicalUnit) -> StreamUnit? { self.unit(lun: lu.number) }

    func unit(lun: UInt16) -> StreamUnit? { self.cell.withValue { $0.units[lun] } }

    func flashUnit(lun: UInt16) -> FlashUnit? { self.cell.withValue { $0.flash[lun] } }

    /// A copy of the statistics of `lun` (nil: no streams there).
    public func statistics(lun: UInt16) -> StreamStatistics? {
        self.unit(lun: lun)?.statistics
    }

    /// Zeroes the statistics of `lun`.
    public func resetStatistics(lun: UInt16) {
        guard let unit = self.unit(lun: lun) else { return }
        _ = unit.resetCounters(group: nil)
    }

    /// The open stream identifiers of `lun`, ascending (permanent streams included).
    public func openStreams(lun: UInt16) -> [UInt16] {
        self.unit(lun: lun)?.openStreams() ?? []
    }

    // MARK: SCSIDeviceExtension

    public var commandDescriptors: [CommandDescriptor] {
        let offered: @Sendable (LogicalUnitConfiguration) -> Bool = { [cell = self.cell] lu in
            cell.withValue { $0.units[lu.number] } != nil
        }
        let offered32: @Sendable (LogicalUnitConfiguration) -> Bool = { [cell = self.cell] lu in
            cell.withValue { $0.units[lu.number] }?.settings.writeStream32 == true
        }
        let writeFlags: CommandFlags = [.writesMedium, .modifiesUnderPersistentReservation]
        return [
            CommandDescriptor(0x7F, serviceAction: 0x0010, "WRITE STREAM(32)",
                              usage: [0x7F, 0x00, 0, 0, 0xFF, 0xFF, 0x3F, 0x18, 0x00, 0x10, 0x18, 0,
                                      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                      0xFF, 0xFF, 0xFF, 0xFF],
                              direction: .dataOut, flags: writeFlags, timeouts: (1, 30), offered: offered32,
                              handler: { [self] in try self.writeStream($0, form: .thirtyTwo) }),
            CommandDescriptor(0x9A, "WRITE STREAM(16)",
                              usage: [0x9A, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                      0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0x00],
                              direction: .dataOut, flags: writeFlags, timeouts: (1, 30), offered: offered,
                              handler: { [self] in try self.writeStream($0, form: .sixteen) }),
            CommandDescriptor(0x9E, serviceAction: 0x14, "STREAM CONTROL",
                              usage: [0x9E, 0x7F, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x00],
                              direction: .dataIn, offered: offered,
                              handler: { [self] in try self.streamControl($0) }),
            CommandDescriptor(0x9E, serviceAction: 0x16, "GET STREAM STATUS",
                              usage: [0x9E, 0x1F, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x00],
                              direction: .dataIn, offered: offered,
                              handler: { [self] in try self.getStreamStatus($0) }),
        ]
    }

    public func vpdPageCodes(for unit: LogicalUnit) -> [UInt8] {
        self.unit(unit) == nil ? [] : [0xB7]
    }

    public func vpdPage(_ pageCode: UInt8, for unit: LogicalUnit) -> [UInt8]? {
        guard pageCode == 0xB7, let streams = self.unit(unit) else { return nil }
        return Self.blockLimitsExtension(streams.settings)
    }

    /// Block Limits Extension VPD page body (after the 4-byte header; PAGE LENGTH 1Ch).
    static func blockLimitsExtension(_ settings: StreamSettings) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 0x1C)
        body[1] = 0x01  // page byte 5: RSCS
        body.put16(settings.maximumStreams, at: 2)  // 6–7 MAXIMUM NUMBER OF STREAMS
        body.put16(settings.optimalStreamWriteSize, at: 4)  // 8–9 OPTIMAL STREAM WRITE SIZE
        body.put32(settings.streamGranularitySize, at: 6)  // 10–13 STREAM GRANULARITY SIZE
        return body
    }

    public func extendedInquiryBits(for unit: LogicalUnit) -> [Int: UInt8] {
        self.unit(unit) == nil ? [:] : [5: 0x10]  // GROUP_SUP
    }

    public func modePages(for unit: LogicalUnit) -> [any ModePageProvider] {
        guard let streams = self.unit(unit) else { return [] }
        return [GroupingModePage(unit: streams)]
    }

    /// General Statistics and Performance (19h/00h) and Group Statistics and Performance (n)
    /// (19h/01h–1Fh) for groups 1–31.
    /// With a flash model, also the vendor-specific page 30h.
    public func logPages(for unit: LogicalUnit) -> [any LogPageProvider] {
        var pages: [any LogPageProvider] = self.flashUnit(lun: unit.number).map { [FlashLogPage(unit: $0)] } ?? []
        guard let streams = self.unit(unit) else { return pages }
        pages.append(StatisticsLogPage(unit: streams, group: nil))
        return pages + (1...31).map { StatisticsLogPage(unit: streams, group: $0) }
    }

    public func didAccessMedium(_ access: MediumAccess) {
        switch access.kind {
        case .read, .write:
            if access.kind == .write, let flash = self.flashUnit(lun: access.lun) {
                if access.deallocated {
                    flash.trim(lba: access.lba, blocks: access.blocks)
                } else {
                    flash.write(lba: access.lba, blocks: access.blocks, stream: Int(access.groupNumber))
                }
            }
            guard let unit = self.unit(lun: access.lun) else { return }
            unit.record(access.kind == .read ? .read : .write, stream: nil, group: access.groupNumber,
                        blocks: access.blocks, bytes: access.bytes)
        case .copy:
            // Not a command of this LU: the flash device sees the writes, the statistics do not.
            self.flashUnit(lun: access.lun)?.write(lba: access.lba, blocks: access.blocks, stream: 0)
        case .deallocate:
            self.flashUnit(lun: access.lun)?.trim(lba: access.lba, blocks: access.blocks)
        }
    }

    public func nexusDidClose(_ nexus: ITNexus) {
        let key = NexusKey(nexus)
        for unit in self.units.values {
            unit.state.withLock { state in state.opened = state.opened.filter { $0.value != key } }
        }
    }

    public func logicalUnitDidReset(_ unit: LogicalUnit) {
        self.unit(unit)?.reset()
    }
}

// MARK: Commands

extension StreamsExtension {
    /// STREAM CONTROL (SBC-4 §5.32): STR_CTL 01b opens a stream and returns its identifier,
    /// 10b closes STR_ID. The parameter data is 8 bytes: PARAMETER LENGTH 07h, ASSIGNED_STR_ID.
    func streamControl(_ context: CommandContext) throws -> CommandOutcome {
        let cdb = context.cdb
        guard let streams = self.unit(context.lu) else { throw SCSIError.invalidFieldInCDB(byte: 1, bit: 4) }
        let control = (cdb[1] >> 5) & 0x03
        let id = UInt16(cdb[4]) << 8 | UInt16(cdb[5])
        let allocationLength = Int(cdb.get32(at: 10))
        let nexus = NexusKey(context.nexus)
        var data: [UInt8] = [0x07, 0, 0, 0, 0, 0, 0, 0]
        switch control {
        case 0b01:
            let assigned = try streams.state.withLock { state throws(SCSIError) -> UInt16 in
                let free = (streams.settings.permanentStreams..<streams.settings.maximumStreams)
                    .first { state.opened[$0] == nil }
                guard let free else { throw StreamSense.maximumStreamsOpen }
                state.opened[free] = nexus
                return free
            }
            data.put16(assigned, at: 4)
        case 0b10:
            // Permanent streams cannot be closed; a stream that is not open cannot either.
            let closed = !streams.isPermanent(id) && streams.state.withLock { $0.opened.removeValue(forKey: id) != nil }
            guard closed else { throw SCSIError.invalidFieldInCDB(byte: 4, bit: 7) }
        default:
            throw SCSIError.invalidFieldInCDB(byte: 1, bit: 6)
        }
        return .complete(.parameterData(data, allocationLength: allocationLength))
    }

    /// GET STREAM STATUS (SBC-4 §5.9): the open streams from STARTING STREAM IDENTIFIER up.
    /// PARAMETER DATA LENGTH counts every descriptor the device has to return, whatever the
    /// allocation length; permanent streams are always open, with PERM = 1.
    func getStreamStatus(_ context: CommandContext) throws -> CommandOutcome {
        let cdb = context.cdb
        guard let streams = self.unit(context.lu) else { throw SCSIError.invalidFieldInCDB(byte: 1, bit: 4) }
        let start = UInt16(cdb[4]) << 8 | UInt16(cdb[5])
        let allocationLength = Int(cdb.get32(at: 10))
        if start >= streams.settings.maximumStreams { throw SCSIError.invalidFieldInCDB(byte: 4, bit: 7) }
        let open = streams.openStreams()
        let listed = open.filter { $0 >= start }
        var data = [UInt8](repeating: 0, count: 8)
        data.put32(UInt32(listed.count * 8), at: 0)
        data.put16(UInt16(open.count), at: 6)
        for id in listed {
            var descriptor = [UInt8](repeating: 0, count: 8)
            descriptor[0] = streams.isPermanent(id) ? 0x80 : 0x00  // PERM
            descriptor.put16(id, at: 2)
            descriptor[4] = Self.relativeLifetime(id)
            data += descriptor
        }
        return .complete(.parameterData(data, allocationLength: allocationLength))
    }

    /// RELATIVE LIFETIME of a stream: identifier + 1, non-decreasing with the identifier (as
    /// Linux assumes permanent streams are ordered by lifetime, and as scsi_debug reports).
    static func relativeLifetime(_ id: UInt16) -> UInt8 {
        UInt8(min(Int(id) + 1, 0x3F))
    }

    enum WriteStreamForm { case sixteen, thirtyTwo }

    /// WRITE STREAM(16) / (32) (SBC-4 §5.46–5.47): WRITE with a stream identifier.
    func writeStream(_ context: CommandContext, form: WriteStreamForm) throws -> CommandOutcome {
        let cdb = context.cdb
        let unit = context.lu
        guard let streams = self.unit(unit) else { throw SCSIError.invalidCommandOperationCode }
        let lba: UInt64, count: UInt64, id: UInt16, group: UInt8, fua: Bool, lengthOffset: Int, idOffset: Int
        switch form {
        case .sixteen:
            lba = cdb.get64(at: 2)
            id = UInt16(cdb[10]) << 8 | UInt16(cdb[11])
            count = UInt64(UInt16(cdb[12]) << 8 | UInt16(cdb[13]))
            group = cdb[14] & 0x3F
            fua = cdb[1] & 0x08 != 0
            lengthOffset = 12
            idOffset = 10
        case .thirtyTwo:
            if cdb[7] != 0x18 { throw SCSIError.invalidFieldInCDB(byte: 7, bit: 7) }
            lba = cdb.get64(at: 12)
            id = UInt16(cdb[4]) << 8 | UInt16(cdb[5])
            count = UInt64(cdb.get32(at: 28))
            group = cdb[6] & 0x3F
            fua = cdb[10] & 0x08 != 0
            lengthOffset = 28
            idOffset = 4
        }
        if id >= streams.settings.maximumStreams { throw SCSIError.invalidFieldInCDB(byte: idOffset, bit: 7) }
        if !streams.isOpen(id) { throw StreamSense.streamNotOpen }
        try unit.checkRange(lba: lba, count: count)
        if count > UInt64(unit.configuration.maximumTransferBlocks) {
            throw SCSIError.invalidFieldInCDB(byte: lengthOffset, bit: 7)
        }
        guard count > 0 else { return .complete(.good) }
        let expected = Int(count) * unit.blockSize
        let durable = unit.writeMustBeDurable(forceUnitAccess: fua)
        return .execute(wantsDataOut: true, mayBlock: true) { dataOut in
            if let dataOut {
                let byteCount = min(dataOut.readableBytes, expected)
                try unit.writeOrdering.withShared {
                    try unit.write(dataOut, byteCount: byteCount, lba: lba, durable: durable)
                }
                streams.record(.write, stream: id, group: group, blocks: count, bytes: byteCount)
                self.flashUnit(lun: unit.number)?.write(lba: lba, blocks: UInt64(byteCount / unit.blockSize), stream: Int(id))
            }
            return CommandReply(dataIn: nil, transferLength: expected)
        }
    }
}

// MARK: IO Advice Hints Grouping mode page

/// Mode page 0Ah subpage 05h (SBC-4 §6.5.7): a 16-byte header then one 16-byte descriptor per
/// stream identifier. Changeable: IO ADVICE HINTS MODE and CS_ENBLE (byte 0) and the logical
/// block markup (bytes 4–6); ST_ENBLE follows the permanent streams and IC_ENABLE is 0, neither
/// changeable (the Group Statistics log pages count every group whatever IC_ENABLE says).
/// Shared by all I_T nexuses; not saveable.
struct GroupingModePage: ModePageProvider {
    let unit: StreamUnit

    var pageCode: UInt8 { 0x0A }
    var subpageCode: UInt8 { 0x05 }

    static let changeableDescriptor: [UInt8] = [0xC2, 0, 0, 0, 0xBF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0]

    func bytes(_ control: ModePageControl) -> [UInt8] {
        let descriptors: [[UInt8]]
        switch control {
        case .current, .saved: descriptors = self.unit.state.withLock { $0.grouping }
        case .defaults: descriptors = StreamUnit.defaultGrouping(self.unit.settings)
        case .changeable: descriptors = Array(repeating: Self.changeableDescriptor, count: self.unit.descriptorCount)
        }
        var page: [UInt8] = [0x40 | 0x0A, 0x05, 0, 0]
        page.put16(UInt16(12 + 16 * descriptors.count), at: 2)
        page += [UInt8](repeating: 0, count: 12)
        for descriptor in descriptors { page += descriptor }
        return page
    }

    func apply(_ page: [UInt8]) -> Bool {
        let count = self.unit.descriptorCount
        let descriptors = (0..<count).map { Array(page[(16 + 16 * $0)..<(32 + 16 * $0)]) }
        return self.unit.state.withLock { state in
            guard state.grouping != descriptors else { return false }
            self.unit.setGrouping(descriptors, in: &state)
            return true
        }
    }
}

// MARK: Bytes

extension Array where Element == UInt8 {
    func get32(at index: Int) -> UInt32 {
        (index..<(index + 4)).reduce(UInt32(0)) { $0 << 8 | UInt32(index < 0 || $1 >= self.count ? 0 : self[$1]) }
    }

    func get64(at index: Int) -> UInt64 {
        UInt64(self.get32(at: index)) << 32 | UInt64(self.get32(at: index + 4))
    }

    mutating func put16(_ value: UInt16, at index: Int) {
        self[index] = UInt8(truncatingIfNeeded: value >> 8)
        self[index + 1] = UInt8(truncatingIfNeeded: value)
    }

    mutating func put32(_ value: UInt32, at index: Int) {
        self.put16(UInt16(truncatingIfNeeded: value >> 16), at: index)
        self.put16(UInt16(truncatingIfNeeded: value), at: index + 2)
    }
}

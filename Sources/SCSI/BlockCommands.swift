//
// SBC commands: READ CAPACITY, READ/WRITE(6/10/12/16), WRITE AND VERIFY, VERIFY,
// SYNCHRONIZE CACHE, PRE-FETCH, WRITE SAME, UNMAP, GET LBA STATUS, COMPARE AND WRITE.
//
// Every range and length check happens in `prepare`, before any data moves. `execute`
// only moves bytes.
//
// Residuals (write direction): the transport hands over exactly EDTL bytes of Data-Out;
// SPDTL is the CDB transfer length × block size. We write min(EDTL, SPDTL) bytes (the
// store is byte addressed, so a partial last block simply updates its first bytes),
// answer GOOD and report transferLength = SPDTL so the transport sets the residual.
//
import NIOCore

/// The CDB forms of the LBA + length commands.
enum BlockCDBForm: Sendable {
    case six, ten, twelve, sixteen
    /// READ(32)/WRITE(32): variable-length CDBs (7Fh) without protection information.
    case thirtyTwo

    /// LBA and TRANSFER LENGTH; for the six-byte form a length of 0 means 256 blocks.
    func decode(_ cdb: [UInt8]) -> (lba: UInt64, count: UInt64) {
        switch self {
        case .six:
            let lba = UInt64(cdb.bigEndian24(at: 1) & 0x1F_FFFF)
            let count = cdb.byte(4) == 0 ? 256 : UInt64(cdb.byte(4))
            return (lba, count)
        case .ten: return (UInt64(cdb.bigEndian32(at: 2)), UInt64(cdb.bigEndian16(at: 7)))
        case .twelve: return (UInt64(cdb.bigEndian32(at: 2)), UInt64(cdb.bigEndian32(at: 6)))
        case .sixteen: return (cdb.bigEndian64(at: 2), UInt64(cdb.bigEndian32(at: 10)))
        case .thirtyTwo: return (cdb.bigEndian64(at: 12), UInt64(cdb.bigEndian32(at: 28)))
        }
    }

    /// Byte offset of the TRANSFER LENGTH field (for field pointers).
    var lengthFieldOffset: Int {
        switch self {
        case .six: 4
        case .ten: 7
        case .twelve: 6
        case .sixteen: 10
        case .thirtyTwo: 28
        }
    }

    /// The GROUP NUMBER field (bits 5–0 of byte 6, 10, 14, or 6 of a 32-byte CDB); the
    /// six-byte forms have none.
    func groupNumber(_ cdb: [UInt8]) -> UInt8 {
        switch self {
        case .six: 0
        case .ten: cdb.byte(6) & 0x3F
        case .twelve: cdb.byte(10) & 0x3F
        case .sixteen: cdb.byte(14) & 0x3F
        case .thirtyTwo: cdb.byte(6) & 0x3F
        }
    }

    /// Whether the CDB has a FUA bit (the six-byte forms do not).
    var hasFlags: Bool { if case .six = self { false } else { true } }

    /// The byte holding DPO and FUA: 1, or 10 in a 32-byte CDB.
    var flagsByte: Int { if case .thirtyTwo = self { 10 } else { 1 } }
}

extension SCSITargetDevice {
    // MARK: READ CAPACITY

    static func readCapacity10(_ context: CommandContext) throws -> CommandOutcome {
        let cdb = context.cdb
        let unit = context.lu
        if cdb[8] & 0x01 == 0 && cdb.bigEndian32(at: 2) != 0 { throw SCSIError.invalidFieldInCDB(byte: 2, bit: 7) }
        var data: [UInt8] = []
        let last = unit.blockCount == 0 ? 0 : unit.blockCount - 1
        data.appendBigEndian32(last >= 0xFFFF_FFFF ? 0xFFFF_FFFF : UInt32(last))
        data.appendBigEndian32(UInt32(unit.blockSize))
        return .complete(.parameterData(data, allocationLength: 8))
    }

    static func readCapacity16(_ context: CommandContext) throws -> CommandOutcome {
        let cdb = context.cdb
        let unit = context.lu
        if cdb[14] & 0x01 == 0 && cdb.bigEndian64(at: 2) != 0 { throw SCSIError.invalidFieldInCDB(byte: 2, bit: 7) }
        let allocationLength = Int(cdb.bigEndian32(at: 10))
        var data = [UInt8](repeating: 0, count: 32)
        data.setBigEndian64(unit.blockCount == 0 ? 0 : unit.blockCount - 1, at: 0)
        data.setBigEndian32(UInt32(unit.blockSize), at: 8)
        data[13] = unit.configuration.physicalBlockExponent & 0x0F
        if unit.configuration.thinProvisioned {
            data[14] = 0x80 | 0x40  // LBPME, LBPRZ
        }
        return .complete(.parameterData(data, allocationLength: allocationLength))
    }

    // MARK: Transfer checks

    /// LBA range first (21/00), then the Block Limits maximum (24/00 at the length field).
    static func checkTransfer(_ unit: LogicalUnit, lba: UInt64, count: UInt64, form: BlockCDBForm) throws(SCSIError) {
        try unit.checkRange(lba: lba, count: count)
        if count > UInt64(unit.configuration.maximumTransferBlocks) {
            throw SCSIError.invalidFieldInCDB(byte: form.lengthFieldOffset, bit: 7)
        }
    }

    // MARK: READ

    static func read(_ form: BlockCDBForm) -> CommandHandler {
        { context in
            let unit = context.lu
            let (lba, count) = form.decode(context.cdb)
            try checkTransfer(unit, lba: lba, count: count, form: form)
            guard count > 0 else { return .complete(.good) }
            let byteCount = Int(count) * unit.blockSize
            let device = context.device
            let access = device.extensions.isEmpty ? nil
                : MediumAccess(kind: .read, lun: unit.number, operationCode: context.cdb[0], lba: lba, blocks: count,
                               bytes: byteCount, groupNumber: form.groupNumber(context.cdb))
            // From the page cache at once when the data is there, otherwise on the thread pool.
            return .readMedium(MediumRead(unit: unit, lba: lba, byteCount: byteCount, access: access))
        }
    }

    // MARK: WRITE, WRITE AND VERIFY

    static func write(_ form: BlockCDBForm, verify: Bool = false) -> CommandHandler {
        { context in
            let unit = context.lu
            let (lba, count) = form.decode(context.cdb)
            let forceUnitAccess = verify || (form.hasFlags && context.cdb[form.flagsByte] & 0x08 != 0)
            try checkTransfer(unit, lba: lba, count: count, form: form)
            guard count > 0 else { return .complete(.good) }
            let expected = Int(count) * unit.blockSize
            let durable = unit.writeMustBeDurable(forceUnitAccess: forceUnitAccess)
            let device = context.device
            let access = device.extensions.isEmpty ? nil
                : MediumAccess(kind: .write, lun: unit.number, operationCode: context.cdb[0], lba: lba, blocks: count,
                               bytes: 0, groupNumber: form.groupNumber(context.cdb))
            return .execute(wantsDataOut: true, mayBlock: true) { dataOut in
                if let dataOut {
                    let byteCount = min(dataOut.readableBytes, expected)
                    try unit.writeOrdering.withShared {
                        try unit.write(dataOut, byteCount: byteCount, lba: lba, durable: durable)
                    }
                    if var access {
                        access.bytes = byteCount
                        device.reportMediumAccess(access)
                    }
                }
                return CommandReply(dataIn: nil, transferLength: expected)
            }
        }
    }

    // MARK: VERIFY

    static func verify(_ form: BlockCDBForm) -> CommandHandler {
        { context in
            let unit = context.lu
            let (lba, count) = form.decode(context.cdb)
            let byteCheck = (context.cdb[1] >> 1) & 0x03
            if byteCheck == 0b10 { throw SCSIError.invalidFieldInCDB(byte: 1, bit: 2) }
            try checkTransfer(unit, lba: lba, count: count, form: form)
            guard count > 0, byteCheck != 0 else { return .complete(.good) }
            let blockSize = unit.blockSize
            let mediumBytes = Int(count) * blockSize
            // BYTCHK 01b: Data-Out holds every block; 11b: one block compared with each.
            let expected = byteCheck == 0b01 ? mediumBytes : blockSize
            return .execute(wantsDataOut: true, mayBlock: true) { dataOut in
                let sent = dataOut.map { Array($0.readableBytesView.prefix(expected)) } ?? []
                let medium = try unit.readBytes(lba: lba, byteCount: mediumBytes)
                if byteCheck == 0b01 {
                    if let offset = firstDifference(medium, 0, sent, 0, count: sent.count) {
                        throw SCSIError.miscompare(atOffset: offset)
                    }
                } else {
                    guard sent.count == blockSize else { throw SCSIError.parameterListLengthError }
                    for block in 0..<Int(count) {
                        if let offset = firstDifference(medium, block * blockSize, sent, 0, count: blockSize) {
                            throw SCSIError.miscompare(atOffset: block * blockSize + offset)
                        }
                    }
                }
                return CommandReply(dataIn: nil, transferLength: expected)
            }
        }
    }

    /// Offset (relative to the compared range) of the first differing byte.
    static func firstDifference(_ a: [UInt8], _ aStart: Int, _ b: [UInt8], _ bStart: Int, count: Int) -> Int? {
        for index in 0..<count where a[aStart + index] != b[bStart + index] {
            return index
        }
        return nil
    }

    // MARK: SYNCHRONIZE CACHE, PRE-FETCH

    static func synchronizeCache(_ form: BlockCDBForm) -> CommandHandler {
        { context in
            let unit = context.lu
            let (lba, count) = form.decode(context.cdb)
            try unit.checkRange(lba: lba, count: count)
            return .execute(wantsDataOut: false, mayBlock: true) { _ in
                try unit.store.flush()
                return .good
            }
        }
    }

    static func preFetch(_ form: BlockCDBForm) -> CommandHandler {
        { context in
            let (lba, count) = form.decode(context.cdb)
            try context.lu.checkRange(lba: lba, count: count)
            return .complete(.good)
        }
    }

    // MARK: WRITE SAME

    static func writeSame(_ form: BlockCDBForm) -> CommandHandler {
        { context in
            let unit = context.lu
            let cdb = context.cdb
            let (lba, count) = form.decode(cdb)
            let unmap = cdb[1] & 0x08 != 0
            let noDataOut = form == .sixteen && cdb[1] & 0x01 != 0
            // UNMAP on a fully provisioned LU (LBPWS = LBPWS10 = 0) is not supported.
            if unmap && !unit.configuration.thinProvisioned { throw SCSIError.invalidFieldInCDB(byte: 1, bit: 3) }
            // WSNZ = 1: zero blocks is not "to the end of the medium".
            if count == 0 { throw SCSIError.invalidFieldInCDB(byte: form.lengthFieldOffset, bit: 7) }
            if count > unit.configuration.maximumWriteSameBlocks {
                throw SCSIError.invalidFieldInCDB(byte: form.lengthFieldOffset, bit: 7)
            }
            try unit.checkRange(lba: lba, count: count)
            let blockSize = unit.blockSize
            if !noDataOut && context.command.expectedDataTransferLength != blockSize {
                throw SCSIError(.illegalRequest, .invalidFieldInCDB)
            }
            let deallocate = unmap && unit.configuration.thinProvisioned
            let durable = unit.writeMustBeDurable(forceUnitAccess: false)
            let device = context.device
            let access = device.extensions.isEmpty ? nil
                : MediumAccess(kind: .write, lun: unit.number, operationCode: cdb[0], lba: lba, blocks: count,
                               bytes: noDataOut ? 0 : blockSize, groupNumber: form.groupNumber(cdb))
            return .execute(wantsDataOut: !noDataOut, mayBlock: true) { dataOut in
                var pattern = [UInt8](repeating: 0, count: blockSize)
                if !noDataOut {
                    guard let dataOut, dataOut.readableBytes >= blockSize else { throw SCSIError.dataPhaseError }
                    pattern = Array(dataOut.readableBytesView.prefix(blockSize))
                }
                let deallocated = deallocate && pattern.allSatisfy({ $0 == 0 })
                try unit.writeOrdering.withShared {
                    if deallocated {
                        try unit.store.deallocate(at: unit.byteOffset(lba), length: count * UInt64(blockSize))
                        if durable { try unit.store.flush() }
                    } else {
                        try writeRepeated(pattern, unit: unit, lba: lba, count: count, durable: durable)
                    }
                }
                if var access {
                    access.deallocated = deallocated
                    device.reportMediumAccess(access)
                }
                return CommandReply(dataIn: nil, transferLength: noDataOut ? 0 : blockSize)
            }
        }
    }

    /// Writes one block pattern over `count` blocks in chunks of up to 1 MiB.
    static func writeRepeated(_ pattern: [UInt8], unit: LogicalUnit, lba: UInt64, count: UInt64, durable: Bool) throws {
        let blockSize = pattern.count
        let blocksPerChunk = max(1, (1 << 20) / blockSize)
        var chunk = ByteBufferAllocator().buffer(capacity: blocksPerChunk * blockSize)
        for _ in 0..<Int(min(UInt64(blocksPerChunk), count)) { chunk.writeBytes(pattern) }
        var done: UInt64 = 0
        while done < count {
            let blocks = min(UInt64(blocksPerChunk), count - done)
            try unit.write(chunk, byteCount: Int(blocks) * blockSize, lba: lba + done, durable: false)
            done += blocks
        }
        if durable { try unit.store.flush() }
    }

    // MARK: UNMAP

    static func unmap(_ context: CommandContext) throws -> CommandOutcome {
        let unit = context.lu
        let parameterListLength = Int(context.cdb.bigEndian16(at: 7))
        if parameterListLength == 0 { return .complete(.good) }
        if parameterListLength < 8 { throw SCSIError.parameterListLengthError }
        return .execute(wantsDataOut: true, mayBlock: true) { dataOut in
            guard let dataOut, dataOut.readableBytes >= parameterListLength else {
                throw SCSIError.parameterListLengthError
            }
            let list = Array(dataOut.readableBytesView.prefix(parameterListLength))
            let ranges = try parseUnmapList(list, unit: unit)
            try unit.writeOrdering.withShared {
                for (lba, count) in ranges where count > 0 {
                    try unit.store.deallocate(at: unit.byteOffset(lba), length: count * UInt64(unit.blockSize))
                }
            }
            for (lba, count) in ranges where count > 0 {
                context.device.reportMediumAccess(.deallocation(unit, lba: lba, blocks: count, operationCode: 0x42))
            }
            return .good
        }
    }

    /// UNMAP parameter list (SBC-4 §5.32.2): every check before anything is deallocated.
    static func parseUnmapList(_ list: [UInt8], unit: LogicalUnit) throws -> [(UInt64, UInt64)] {
        let dataLength = Int(list.bigEndian16(at: 0))
        let descriptorDataLength = Int(list.bigEndian16(at: 2))
        if dataLength + 2 > list.count { throw SCSIError.invalidFieldInParameterList(byte: 0, bit: 7) }
        if descriptorDataLength + 8 > list.count { throw SCSIError.invalidFieldInParameterList(byte: 2, bit: 7) }
        let descriptorCount = descriptorDataLength / 16  // an incomplete last descriptor is ignored
        if descriptorCount > Int(unit.configuration.maximumUnmapDescriptors) {
            throw SCSIError.invalidFieldInParameterList(byte: 2, bit: 7)
        }
        var ranges: [(UInt64, UInt64)] = []
        for index in 0..<descriptorCount {
            let offset = 8 + index * 16
            let lba = list.bigEndian64(at: offset)
            let count = UInt64(list.bigEndian32(at: offset + 8))
            try unit.checkRange(lba: lba, count: count)
            if count > UInt64(unit.configuration.maximumUnmapBlocks) {
                throw SCSIError.invalidFieldInParameterList(byte: offset + 8, bit: 7)
            }
            ranges.append((lba, count))
        }
        return ranges
    }

    // MARK: GET LBA STATUS

    static func getLBAStatus(_ context: CommandContext) throws -> CommandOutcome {
        let unit = context.lu
        let lba = context.cdb.bigEndian64(at: 2)
        let allocationLength = Int(context.cdb.bigEndian32(at: 10))
        if lba >= unit.blockCount { throw SCSIError.lbaOutOfRange }
        return .execute(wantsDataOut: false, mayBlock: true) { _ in
            let blockSize = UInt64(unit.blockSize)
            let remaining = (unit.blockCount - lba) * blockSize
            let extent = unit.store.provisioningStatus(at: lba * blockSize, length: remaining)
            var blocks = max(1, extent.length / blockSize)
            blocks = min(blocks, unit.blockCount - lba, UInt64(UInt32.max))
            var data: [UInt8] = []
            data.appendBigEndian32(4 + 16)  // PARAMETER DATA LENGTH (bytes after this field)
            data.appendBigEndian32(0)
            data.appendBigEndian64(lba)
            data.appendBigEndian32(UInt32(blocks))
            data.append(extent.mapped ? 0x00 : 0x01)  // PROVISIONING STATUS: mapped / deallocated
            data += [0, 0, 0]
            return .parameterData(data, allocationLength: allocationLength)
        }
    }

    // MARK: COMPARE AND WRITE

    static func compareAndWrite(_ context: CommandContext) throws -> CommandOutcome {
        let unit = context.lu
        let cdb = context.cdb
        let lba = cdb.bigEndian64(at: 2)
        let count = UInt64(cdb[13])
        let forceUnitAccess = cdb[1] & 0x08 != 0
        if count > UInt64(unit.configuration.maximumCompareAndWriteBlocks) {
            throw SCSIError.invalidFieldInCDB(byte: 13, bit: 7)
        }
        try unit.checkRange(lba: lba, count: count)
        let half = Int(count) * unit.blockSize
        // The Data-Out must be exactly verify + write data; this also catches a block count
        // that wrapped to 0 in the one-byte field while the initiator sends data.
        if context.command.expectedDataTransferLength != 2 * half {
            throw SCSIError.invalidFieldInCDB(byte: 13, bit: 7)
        }
        guard count > 0 else { return .complete(.good) }
        let durable = unit.writeMustBeDurable(forceUnitAccess: forceUnitAccess)
        return .execute(wantsDataOut: true, mayBlock: true) { dataOut in
            guard let dataOut, dataOut.readableBytes >= 2 * half else { throw SCSIError.dataPhaseError }
            let verify = Array(dataOut.readableBytesView.prefix(half))
            try unit.writeOrdering.withExclusive {
                let medium = try unit.readBytes(lba: lba, byteCount: half)
                if let offset = firstDifference(medium, 0, verify, 0, count: half) {
                    throw SCSIError.miscompare(atOffset: offset)
                }
                let writeData = dataOut.getSlice(at: dataOut.readerIndex + half, length: half)!
                try unit.write(writeData, byteCount: half, lba: lba, durable: durable)
            }
            context.device.reportMediumAccess(MediumAccess(kind: .write, lun: unit.number, operationCode: 0x89, lba: lba,
                                                           blocks: count, bytes: half, groupNumber: BlockCDBForm.sixteen.groupNumber(context.cdb)))
            return CommandReply(dataIn: nil, transferLength: 2 * half)
        }
    }
}

//
// The remaining SBC-4 commands of a complete disk: ORWRITE(16), READ DEFECT DATA(10/12)
// and WRITE ATOMIC(16).
//
// ORWRITE ORs the Data-Out into the medium (SBC-4 §5.13, BMOP 000b: the only operation of
// the 16-byte form); WRITE ATOMIC(16) writes all of its blocks or none as seen by every
// other command. Both hold the LU's write-ordering lock exclusively, so no other write (and
// no COMPARE AND WRITE) interleaves with the read-modify-write or the atomic write.
// READ DEFECT DATA returns an empty, valid defect list: a file-backed medium has no defects.
//
import NIOCore

extension LogicalUnitConfiguration {
    /// VPD 0xB0 ATOMIC ALIGNMENT and ATOMIC TRANSFER LENGTH GRANULARITY, in logical blocks:
    /// one physical block (1 when physical = logical).
    public var atomicAlignmentBlocks: UInt32 { UInt32(1) << self.physicalBlockExponent }
    public var atomicGranularityBlocks: UInt32 { UInt32(1) << self.physicalBlockExponent }
    /// VPD 0xB0 MAXIMUM ATOMIC TRANSFER LENGTH: the whole transfer limit (≤ MAXIMUM TRANSFER
    /// LENGTH, as the suite checks), rounded down to the granularity.
    public var maximumAtomicTransferBlocks: UInt32 {
        self.maximumTransferBlocks - self.maximumTransferBlocks % self.atomicGranularityBlocks
    }
}

extension SCSITargetDevice {
    static let sbcCompletionDescriptors: [CommandDescriptor] = [
        // READ DEFECT DATA(10): byte 2 REQ_PLIST, REQ_GLIST, DEFECT LIST FORMAT; 7–8 ALLOCATION LENGTH.
        CommandDescriptor(0x37, "READ DEFECT DATA(10)", usage: [0x37, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0x00],
                          direction: .dataIn, handler: { try readDefectData($0, twelve: false) }),
        // ORWRITE(16): byte 1 ORPROTECT (rejected: no protection information), DPO, FUA.
        CommandDescriptor(0x8B, "ORWRITE(16)",
                          usage: [0x8B, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0x00],
                          direction: .dataOut, flags: [.writesMedium, .readsMedium, .modifiesUnderPersistentReservation],
                          timeouts: (1, 30), handler: { try orWrite($0) }),
        // WRITE ATOMIC(16): byte 1 WRPROTECT (rejected), DPO, FUA; 10–11 ATOMIC BOUNDARY;
        // 12–13 TRANSFER LENGTH; 14 GROUP NUMBER.
        CommandDescriptor(0x9C, "WRITE ATOMIC(16)",
                          usage: [0x9C, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0x00],
                          direction: .dataOut, flags: [.writesMedium, .modifiesUnderPersistentReservation],
                          timeouts: (1, 30), handler: { try writeAtomic16($0) }),
        // READ DEFECT DATA(12): byte 1 REQ_PLIST, REQ_GLIST, DEFECT LIST FORMAT; 2–5 ADDRESS
        // DESCRIPTOR INDEX; 6–9 ALLOCATION LENGTH.
        CommandDescriptor(0xB7, "READ DEFECT DATA(12)",
                          usage: [0xB7, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x00],
                          direction: .dataIn, handler: { try readDefectData($0, twelve: true) }),
    ] + sanitizeDescriptors

    // MARK: READ DEFECT DATA

    /// An empty defect list (SBC-4 §5.19/§5.20). The header echoes the requested lists as
    /// valid (PLISTV/GLISTV) and the requested format when it is one SBC-4 defines for
    /// direct-access devices (short/long block, bytes from index, physical sector, vendor
    /// specific); reserved formats are INVALID FIELD IN CDB.
    static func readDefectData(_ context: CommandContext, twelve: Bool) throws -> CommandOutcome {
        let cdb = context.cdb
        let flagsByte = twelve ? 1 : 2
        let requested = cdb[flagsByte] & 0x18
        let format = cdb[flagsByte] & 0x07
        if format == 1 || format == 2 || format == 7 {
            throw SCSIError.invalidFieldInCDB(byte: flagsByte, bit: 2)
        }
        let allocationLength = twelve ? Int(cdb.bigEndian32(at: 6)) : Int(cdb.bigEndian16(at: 7))
        var data: [UInt8] = [0x00, requested | format]
        if twelve {
            data += [0, 0, 0, 0, 0, 0]  // 2–3 reserved, 4–7 DEFECT LIST LENGTH 0
        } else {
            data += [0, 0]  // 2–3 DEFECT LIST LENGTH 0
        }
        return .complete(.parameterData(data, allocationLength: allocationLength))
    }

    // MARK: ORWRITE

    static func orWrite(_ context: CommandContext) throws -> CommandOutcome {
        let unit = context.lu
        let cdb = context.cdb
        let (lba, count) = BlockCDBForm.sixteen.decode(cdb)
        let forceUnitAccess = cdb[1] & 0x08 != 0
        try checkTransfer(unit, lba: lba, count: count, form: .sixteen)
        guard count > 0 else { return .complete(.good) }
        let expected = Int(count) * unit.blockSize
        let durable = unit.writeMustBeDurable(forceUnitAccess: forceUnitAccess)
        return .execute(wantsDataOut: true, mayBlock: true) { dataOut in
            if let dataOut {
                let byteCount = min(dataOut.readableBytes, expected)
                try unit.writeOrdering.withExclusive {
                    var medium = try unit.readBytes(lba: lba, byteCount: byteCount)
                    var index = 0
                    for byte in dataOut.readableBytesView.prefix(byteCount) {
                        medium[index] |= byte
                        index += 1
                    }
                    try unit.write(ByteBuffer(bytes: medium), byteCount: byteCount, lba: lba, durable: durable)
                }
                context.device.reportMediumAccess(MediumAccess(
                    kind: .write, lun: unit.number, operationCode: cdb[0], lba: lba,
                    blocks: UInt64(byteCount / unit.blockSize), bytes: byteCount, groupNumber: BlockCDBForm.sixteen.groupNumber(cdb)))
            }
            return CommandReply(dataIn: nil, transferLength: expected)
        }
    }

    // MARK: WRITE ATOMIC(16)

    /// Checks in the order the suite expects: LBA range first (a request running past the end
    /// is LBA OUT OF RANGE whatever its length), then ATOMIC BOUNDARY (we report MAXIMUM
    /// ATOMIC BOUNDARY SIZE 0, so it must be 0), the maximum atomic transfer length, the
    /// alignment of the LBA and the granularity of the length.
    static func writeAtomic16(_ context: CommandContext) throws -> CommandOutcome {
        let unit = context.lu
        let cdb = context.cdb
        let lba = cdb.bigEndian64(at: 2)
        let count = UInt64(cdb.bigEndian16(at: 12))
        let forceUnitAccess = cdb[1] & 0x08 != 0
        let lu = unit.configuration
        try unit.checkRange(lba: lba, count: count)
        if cdb.bigEndian16(at: 10) != 0 { throw SCSIError.invalidFieldInCDB(byte: 10, bit: 7) }
        if count > UInt64(lu.maximumAtomicTransferBlocks) { throw SCSIError.invalidFieldInCDB(byte: 12, bit: 7) }
        guard count > 0 else { return .complete(.good) }
        if lba % UInt64(lu.atomicAlignmentBlocks) != 0 { throw SCSIError.invalidFieldInCDB(byte: 2, bit: 7) }
        if count % UInt64(lu.atomicGranularityBlocks) != 0 { throw SCSIError.invalidFieldInCDB(byte: 12, bit: 7) }
        let expected = Int(count) * unit.blockSize
        let durable = unit.writeMustBeDurable(forceUnitAccess: forceUnitAccess)
        return .execute(wantsDataOut: true, mayBlock: true) { dataOut in
            // All or nothing: a short Data-Out writes nothing.
            guard let dataOut, dataOut.readableBytes >= expected else { throw SCSIError.dataPhaseError }
            try unit.writeOrdering.withExclusive {
                try unit.write(dataOut, byteCount: expected, lba: lba, durable: durable)
            }
            context.device.reportMediumAccess(MediumAccess(kind: .write, lun: unit.number, operationCode: cdb[0], lba: lba,
                                                           blocks: count, bytes: expected, groupNumber: BlockCDBForm.sixteen.groupNumber(cdb)))
            return CommandReply(dataIn: nil, transferLength: expected)
        }
    }
}

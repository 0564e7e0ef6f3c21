//
// The command table's rows. Each usage mask lists, per CDB byte, the bits this device
// server interprets; every other bit must be zero (CONTROL bytes are 00h: NACA and LINK are
// not supported). Byte 0 is the operation code.
//

extension SCSITargetDevice {
    private static let unitlessFlags: CommandFlags = [.allowedWithoutLogicalUnit, .ignoresUnitAttention,
                                                      .allowedUnderReservation]
    private static let readFlags: CommandFlags = [.readsMedium]
    private static let writeFlags: CommandFlags = [.writesMedium, .modifiesUnderPersistentReservation]
    private static let isThin: @Sendable (LogicalUnitConfiguration) -> Bool = { $0.thinProvisioned }
    private static let offersCDB32: @Sendable (LogicalUnitConfiguration) -> Bool = { $0.offersReadWrite32 }

    /// Usage data of READ(32) / WRITE(32) (service action `sa`): GROUP NUMBER, DPO and FUA,
    /// LBA, the protection fields (accepted and ignored: PROTECT 000b only), TRANSFER LENGTH.
    private static func usage32(_ sa: UInt8) -> [UInt8] {
        [0x7F, 0x00, 0, 0, 0, 0, 0x3F, 0x18, 0x00, sa, 0x18, 0]
            + [UInt8](repeating: 0xFF, count: 20)
    }

    static let commandDescriptors: [CommandDescriptor] = [
        // MARK: SPC
        CommandDescriptor(0x00, "TEST UNIT READY", usage: [0x00, 0, 0, 0, 0, 0x00],
                          handler: { try testUnitReady($0) }),
        CommandDescriptor(0x03, "REQUEST SENSE", usage: [0x03, 0x01, 0, 0, 0xFF, 0x00],
                          direction: .dataIn, flags: unitlessFlags, handler: { try requestSense($0) }),
        CommandDescriptor(0x12, "INQUIRY", usage: [0x12, 0x01, 0xFF, 0xFF, 0xFF, 0x00],
                          direction: .dataIn, flags: unitlessFlags, handler: { try inquiry($0) }),
        CommandDescriptor(0x15, "MODE SELECT(6)", usage: [0x15, 0x11, 0, 0, 0xFF, 0x00],
                          direction: .dataOut, flags: [.modifiesUnderPersistentReservation],
                          handler: { try modeSelect6($0) }),
        CommandDescriptor(0x16, "RESERVE(6)", usage: [0x16, 0, 0, 0, 0, 0x00],
                          handler: { try reserve6($0) }),
        CommandDescriptor(0x17, "RELEASE(6)", usage: [0x17, 0, 0, 0, 0, 0x00],
                          flags: [.allowedUnderReservation], handler: { try release6($0) }),
        // RESERVE(10)/RELEASE(10) (SPC-2 §7.21, §7.16) behave as the 6-byte forms: third-party
        // reservations (3RDPTY, LONGID, a parameter list) are not supported, so every CDB bit but
        // the operation code must be zero.
        CommandDescriptor(0x56, "RESERVE(10)", usage: [0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0x00],
                          handler: { try reserve6($0) }),
        CommandDescriptor(0x57, "RELEASE(10)", usage: [0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0x00],
                          flags: [.allowedUnderReservation], handler: { try release6($0) }),
        CommandDescriptor(0x1A, "MODE SENSE(6)", usage: [0x1A, 0x08, 0xFF, 0xFF, 0xFF, 0x00],
                          direction: .dataIn, handler: { try modeSense6($0) }),
        CommandDescriptor(0x1D, "SEND DIAGNOSTIC", usage: [0x1D, 0xF7, 0, 0xFF, 0xFF, 0x00],
                          direction: .dataOut, handler: { try sendDiagnostic($0) }),
        CommandDescriptor(0x55, "MODE SELECT(10)", usage: [0x55, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x00],
                          direction: .dataOut, flags: [.modifiesUnderPersistentReservation],
                          handler: { try modeSelect10($0) }),
        CommandDescriptor(0x5A, "MODE SENSE(10)", usage: [0x5A, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0x00],
                          direction: .dataIn, handler: { try modeSense10($0) }),
        CommandDescriptor(0x5E, serviceAction: 0x00, "PERSISTENT RESERVE IN / READ KEYS",
                          usage: [0x5E, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x00],
                          direction: .dataIn, flags: [.allowedUnderReservation], handler: { try persistentReserveIn($0) }),
        CommandDescriptor(0x5E, serviceAction: 0x01, "PERSISTENT RESERVE IN / READ RESERVATION",
                          usage: [0x5E, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x00],
                          direction: .dataIn, flags: [.allowedUnderReservation], handler: { try persistentReserveIn($0) }),
        CommandDescriptor(0x5E, serviceAction: 0x02, "PERSISTENT RESERVE IN / REPORT CAPABILITIES",
                          usage: [0x5E, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x00],
                          direction: .dataIn, flags: [.allowedUnderReservation], handler: { try persistentReserveIn($0) }),
        CommandDescriptor(0x5E, serviceAction: 0x03, "PERSISTENT RESERVE IN / READ FULL STATUS",
                          usage: [0x5E, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x00],
                          direction: .dataIn, flags: [.allowedUnderReservation], handler: { try persistentReserveIn($0) }),
    ] + persistentReserveOutDescriptors + blockDescriptors + maintenanceDescriptors + sbcCompletionDescriptors
        + logDescriptors

    private static let persistentReserveOutDescriptors: [CommandDescriptor] = [
        (0x00, "REGISTER"), (0x01, "RESERVE"), (0x02, "RELEASE"), (0x03, "CLEAR"), (0x04, "PREEMPT"),
        (0x05, "PREEMPT AND ABORT"), (0x06, "REGISTER AND IGNORE EXISTING KEY"),
    ].map { action, name in
        CommandDescriptor(0x5F, serviceAction: UInt16(action), "PERSISTENT RESERVE OUT / " + name,
                          usage: [0x5F, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x00],
                          direction: .dataOut, handler: { try persistentReserveOut($0) })
    }

    private static let maintenanceDescriptors: [CommandDescriptor] = [
        CommandDescriptor(0xA0, "REPORT LUNS", usage: [0xA0, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x00],
                          direction: .dataIn, flags: unitlessFlags, handler: { try reportLUNs($0) }),
        CommandDescriptor(0xA3, serviceAction: 0x0C, "REPORT SUPPORTED OPERATION CODES",
                          usage: [0xA3, 0x1F, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x00],
                          direction: .dataIn, flags: [.allowedUnderReservation],
                          handler: { try reportSupportedOperationCodes($0) }),
        CommandDescriptor(0xA3, serviceAction: 0x0D, "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
                          usage: [0xA3, 0x1F, 0x80, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x00],
                          direction: .dataIn, flags: [.allowedUnderReservation],
                          handler: { try reportSupportedTaskManagementFunctions($0) }),
    ]

    // MARK: SBC

    private static let blockDescriptors: [CommandDescriptor] = [
        CommandDescriptor(0x08, "READ(6)", usage: [0x08, 0x1F, 0xFF, 0xFF, 0xFF, 0x00],
                          direction: .dataIn, flags: readFlags, timeouts: (1, 30), handler: read(.six)),
        CommandDescriptor(0x0A, "WRITE(6)", usage: [0x0A, 0x1F, 0xFF, 0xFF, 0xFF, 0x00],
                          direction: .dataOut, flags: writeFlags, timeouts: (1, 30), handler: write(.six)),
        CommandDescriptor(0x1B, "START STOP UNIT", usage: [0x1B, 0x01, 0, 0x0F, 0xF7, 0x00],
                          flags: [.modifiesUnderPersistentReservation], handler: { try startStopUnit($0) }),
        CommandDescriptor(0x1E, "PREVENT ALLOW MEDIUM REMOVAL", usage: [0x1E, 0, 0, 0, 0x03, 0x00],
                          handler: { try preventAllowMediumRemoval($0) }),
        CommandDescriptor(0x25, "READ CAPACITY(10)",
                          usage: [0x25, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01, 0x00],
                          direction: .dataIn, handler: { try readCapacity10($0) }),
        CommandDescriptor(0x28, "READ(10)",
                          usage: [0x28, 0x1E, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0xFF, 0xFF, 0x00],
                          direction: .dataIn, flags: readFlags, timeouts: (1, 30), handler: read(.ten)),
        CommandDescriptor(0x2A, "WRITE(10)",
                          usage: [0x2A, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0xFF, 0xFF, 0x00],
                          direction: .dataOut, flags: writeFlags, timeouts: (1, 30), handler: write(.ten)),
        CommandDescriptor(0x2E, "WRITE AND VERIFY(10)",
                          usage: [0x2E, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0xFF, 0xFF, 0x00],
                          direction: .dataOut, flags: writeFlags, timeouts: (1, 30),
                          handler: write(.ten, verify: true)),
        CommandDescriptor(0x2F, "VERIFY(10)",
                          usage: [0x2F, 0x16, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0xFF, 0xFF, 0x00],
                          direction: .dataOut, flags: readFlags, timeouts: (1, 30), handler: verify(.ten)),
        CommandDescriptor(0x34, "PRE-FETCH(10)",
                          usage: [0x34, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0xFF, 0xFF, 0x00],
                          flags: readFlags, handler: preFetch(.ten)),
        // Byte 1: SYNC_NV (SBC-3, accepted: there is no non-volatile cache to single out) and IMMED.
        CommandDescriptor(0x35, "SYNCHRONIZE CACHE(10)",
                          usage: [0x35, 0x06, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0xFF, 0xFF, 0x00],
                          flags: [.modifiesUnderPersistentReservation], timeouts: (5, 60),
                          handler: synchronizeCache(.ten)),
        CommandDescriptor(0x41, "WRITE SAME(10)",
                          usage: [0x41, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0xFF, 0xFF, 0x00],
                          direction: .dataOut, flags: writeFlags, timeouts: (5, 60), handler: writeSame(.ten)),
        CommandDescriptor(0x42, "UNMAP", usage: [0x42, 0, 0, 0, 0, 0, 0x3F, 0xFF, 0xFF, 0x00],
                          direction: .dataOut, flags: writeFlags, timeouts: (5, 60), offered: isThin,
                          handler: { try unmap($0) }),
        // Opt-in per LU (`read_write_32`): libiscsi's REPORT SUPPORTED OPERATION CODES test
        // cannot hold 32-byte usage data (see Docs/scsi.md).
        CommandDescriptor(0x7F, serviceAction: 0x0009, "READ(32)", usage: usage32(0x09),
                          direction: .dataIn, flags: readFlags, timeouts: (1, 30), offered: offersCDB32,
                          handler: read(.thirtyTwo)),
        CommandDescriptor(0x7F, serviceAction: 0x000B, "WRITE(32)", usage: usage32(0x0B),
                          direction: .dataOut, flags: writeFlags, timeouts: (1, 30), offered: offersCDB32,
                          handler: write(.thirtyTwo)),
        CommandDescriptor(0x88, "READ(16)",
                          usage: [0x88, 0x1E, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0x00],
                          direction: .dataIn, flags: readFlags, timeouts: (1, 30), handler: read(.sixteen)),
        CommandDescriptor(0x89, "COMPARE AND WRITE",
                          usage: [0x89, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0, 0, 0, 0xFF, 0x3F, 0x00],
                          direction: .dataOut, flags: writeFlags, timeouts: (1, 30), handler: { try compareAndWrite($0) }),
        CommandDescriptor(0x8A, "WRITE(16)",
                          usage: [0x8A, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0x00],
                          direction: .dataOut, flags: writeFlags, timeouts: (1, 30), handler: write(.sixteen)),
        CommandDescriptor(0x8E, "WRITE AND VERIFY(16)",
                          usage: [0x8E, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0x00],
                          direction: .dataOut, flags: writeFlags, timeouts: (1, 30),
                          handler: write(.sixteen, verify: true)),
        CommandDescriptor(0x8F, "VERIFY(16)",
                          usage: [0x8F, 0x16, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0x00],
                          direction: .dataOut, flags: readFlags, timeouts: (1, 30), handler: verify(.sixteen)),
        CommandDescriptor(0x90, "PRE-FETCH(16)",
                          usage: [0x90, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0x00],
                          flags: readFlags, handler: preFetch(.sixteen)),
        CommandDescriptor(0x91, "SYNCHRONIZE CACHE(16)",
                          usage: [0x91, 0x06, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0x00],
                          flags: [.modifiesUnderPersistentReservation], timeouts: (5, 60),
                          handler: synchronizeCache(.sixteen)),
        CommandDescriptor(0x93, "WRITE SAME(16)",
                          usage: [0x93, 0x09, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0x00],
                          direction: .dataOut, flags: writeFlags, timeouts: (5, 60), handler: writeSame(.sixteen)),
        CommandDescriptor(0x9E, serviceAction: 0x10, "READ CAPACITY(16)",
                          usage: [0x9E, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00],
                          direction: .dataIn, handler: { try readCapacity16($0) }),
        CommandDescriptor(0x9E, serviceAction: 0x12, "GET LBA STATUS",
                          usage: [0x9E, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 0xFF, 0, 0x00],
                          direction: .dataIn, flags: readFlags, handler: { try getLBAStatus($0) }),
        CommandDescriptor(0xA8, "READ(12)",
                          usage: [0xA8, 0x1E, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0x00],
                          direction: .dataIn, flags: readFlags, timeouts: (1, 30), handler: read(.twelve)),
        CommandDescriptor(0xAA, "WRITE(12)",
                          usage: [0xAA, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0x00],
                          direction: .dataOut, flags: writeFlags, timeouts: (1, 30), handler: write(.twelve)),
        CommandDescriptor(0xAE, "WRITE AND VERIFY(12)",
                          usage: [0xAE, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0x00],
                          direction: .dataOut, flags: writeFlags, timeouts: (1, 30),
                          handler: write(.twelve, verify: true)),
        CommandDescriptor(0xAF, "VERIFY(12)",
                          usage: [0xAF, 0x16, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0x00],
                          direction: .dataOut, flags: readFlags, timeouts: (1, 30), handler: verify(.twelve)),
    ]
}

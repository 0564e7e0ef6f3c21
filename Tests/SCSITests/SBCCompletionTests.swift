import BlockStores
import NIOCore
import Testing
@testable import SCSI

#if canImport(Glibc)
import Glibc
#endif

@Suite struct OrWriteTests {
    func orwrite(lba: UInt64, blocks: UInt32, byte1: UInt8 = 0) -> [UInt8] {
        [0x8B, byte1] + be64(lba) + be32(blocks) + [0, 0]
    }

    @Test func orsDataIntoTheMedium() {
        let harness = Harness()
        #expect(harness.run([0x8A, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0],
                            dataOut: [UInt8](repeating: 0x0F, count: 512)).status == .good)
        let response = harness.run(orwrite(lba: 2, blocks: 1), dataOut: [UInt8](repeating: 0xA0, count: 512))
        #expect(response.status == .good)
        #expect(response.transferLength == 512)
        #expect(harness.store.snapshot(at: 2 * 512, count: 512) == [UInt8](repeating: 0xAF, count: 512))
        #expect(harness.store.snapshot(at: 3 * 512, count: 4) == [0, 0, 0, 0])
    }

    @Test func orProtectIsInvalidField() {
        let response = Harness().run(orwrite(lba: 0, blocks: 1, byte1: 0x20), dataOut: [UInt8](repeating: 1, count: 512))
        #expect(response.isCheckCondition(0x05, 0x24, 0x00))
        // Sense-key-specific field pointer: SKSV, C/D, BPV, bit 5 of byte 1.
        #expect(Array(response.sense[15...17]) == [0xCD, 0x00, 0x01])
    }

    @Test func rangeAndZeroBlocks() {
        let harness = Harness(blockCount: 2048)
        #expect(harness.run(orwrite(lba: 2047, blocks: 2), dataOut: [UInt8](repeating: 1, count: 1024))
            .isCheckCondition(0x05, 0x21, 0x00))
        #expect(harness.run(orwrite(lba: 2049, blocks: 0), edtl: 0).isCheckCondition(0x05, 0x21, 0x00))
        #expect(harness.run(orwrite(lba: 0, blocks: 0), edtl: 0).status == .good)
    }

    @Test func readOnlyIsWriteProtected() {
        #expect(Harness(readOnly: true).run(orwrite(lba: 0, blocks: 1), dataOut: [UInt8](repeating: 1, count: 512))
            .isCheckCondition(0x07, 0x27, 0x00))
    }
}

@Suite struct ReadDefectDataTests {
    @Test func tenByteEmptyList() {
        let response = Harness().run([0x37, 0, 0x18 | 0x04, 0, 0, 0, 0, 0, 32, 0], edtl: 32)
        #expect(response.status == .good)
        #expect(response.data == [0x00, 0x1C, 0x00, 0x00])
    }

    @Test func twelveByteEmptyList() {
        let response = Harness().run([0xB7, 0x00, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0], edtl: 32)
        #expect(response.status == .good)
        #expect(response.data == [0x00, 0x00, 0, 0, 0, 0, 0, 0])
    }

    @Test func reservedFormatIsInvalidField() {
        let response = Harness().run([0x37, 0, 0x01, 0, 0, 0, 0, 0, 32, 0], edtl: 32)
        #expect(response.isCheckCondition(0x05, 0x24, 0x00))
        #expect(Array(response.sense[15...17]) == [0xCA, 0x00, 0x02])
    }

    @Test func allocationLengthTruncates() {
        #expect(Harness().run([0x37, 0, 0x10, 0, 0, 0, 0, 0, 2, 0], edtl: 2).data == [0x00, 0x10])
    }
}

@Suite struct WriteAtomicTests {
    func writeAtomic(lba: UInt64, blocks: UInt16, boundary: UInt16 = 0, byte1: UInt8 = 0) -> [UInt8] {
        [0x9C, byte1] + be64(lba) + [UInt8(boundary >> 8), UInt8(boundary & 0xFF),
                                     UInt8(blocks >> 8), UInt8(blocks & 0xFF), 0, 0]
    }

    @Test func writesAllBlocks() {
        let harness = Harness()
        let data = pattern(1024, seed: 9)
        let response = harness.run(writeAtomic(lba: 6, blocks: 2, byte1: 0x08), dataOut: data)
        #expect(response.status == .good)
        #expect(harness.store.snapshot(at: 6 * 512, count: 1024) == data)
    }

    @Test func blockLimitsReportsAtomicFields() {
        let page = Harness(maximumTransferBlocks: 2048).run([0x12, 0x01, 0xB0, 0, 0x40, 0], edtl: 64).data
        #expect(page.count == 64)
        #expect(Array(page[44...47]) == be32(2048))  // MAXIMUM ATOMIC TRANSFER LENGTH
        #expect(Array(page[48...51]) == be32(1))  // ATOMIC ALIGNMENT
        #expect(Array(page[52...55]) == be32(1))  // ATOMIC TRANSFER LENGTH GRANULARITY
        #expect(Array(page[56...63]) == [0, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func alignmentAndGranularityFollowThePhysicalBlock() {
        var lu = LogicalUnitConfiguration.derived(targetName: targetName, number: 0, blockCount: 64)
        lu.physicalBlockExponent = 3
        let store = MemoryBlockStore(byteCount: 64 * 512)
        let device = SCSITargetDevice(configuration: TargetDeviceConfiguration(targetName: targetName, logicalUnits: [lu]),
                                      stores: [0: store])
        func run(_ cdb: [UInt8], _ count: Int) -> SCSIResponse {
            let command = SCSICommand(lunField: 0, cdb: cdb, expectedDataTransferLength: count,
                                      direction: .fromInitiator, nexus: nexus())
            switch device.prepare(command) {
            case .complete(let response): return response
            case .ready(let prepared):
                return device.execute(prepared, dataOut: ByteBuffer(bytes: [UInt8](repeating: 7, count: count)))
            }
        }
        let misaligned = run(writeAtomic(lba: 1, blocks: 8), 8 * 512)
        #expect(misaligned.isCheckCondition(0x05, 0x24, 0x00))
        #expect(Array(misaligned.sense[15...17]) == [0xCF, 0x00, 0x02])
        let granularity = run(writeAtomic(lba: 8, blocks: 1), 512)
        #expect(granularity.isCheckCondition(0x05, 0x24, 0x00))
        #expect(Array(granularity.sense[15...17]) == [0xCF, 0x00, 0x0C])
        #expect(run(writeAtomic(lba: 8, blocks: 8), 8 * 512).status == .good)
    }

    @Test func rangeBeforeLengthAndBoundary() {
        let harness = Harness(blockCount: 2048)
        #expect(harness.run(writeAtomic(lba: 2047, blocks: 4000), dataOut: [UInt8](repeating: 1, count: 512))
            .isCheckCondition(0x05, 0x21, 0x00))
        #expect(harness.run(writeAtomic(lba: 0, blocks: 1, boundary: 1), dataOut: [UInt8](repeating: 1, count: 512))
            .isCheckCondition(0x05, 0x24, 0x00))
        #expect(harness.run(writeAtomic(lba: UInt64.max, blocks: 0), edtl: 0).isCheckCondition(0x05, 0x21, 0x00))
        #expect(harness.run(writeAtomic(lba: 0, blocks: 0), edtl: 0).status == .good)
    }

    @Test func wrprotectIsInvalidField() {
        #expect(Harness().run(writeAtomic(lba: 0, blocks: 1, byte1: 0x40), dataOut: [UInt8](repeating: 1, count: 512))
            .isCheckCondition(0x05, 0x24, 0x00))
    }

    @Test func shortDataOutWritesNothing() {
        let harness = Harness()
        let response = harness.run(writeAtomic(lba: 0, blocks: 2), dataOut: [UInt8](repeating: 0x55, count: 512))
        #expect(response.status == .checkCondition)
        #expect(harness.store.snapshot(at: 0, count: 4) == [0, 0, 0, 0])
    }

    @Test func reportedInSupportedOperationCodes() {
        // RSOC reporting option 1, WRITE ATOMIC(16): CDB usage data shows DPO and FUA.
        let data = Harness().run([0xA3, 0x0C, 0x01, 0x9C, 0, 0, 0, 0, 0x01, 0, 0, 0], edtl: 256).data
        #expect(data.count >= 4 + 16)
        #expect(data[1] & 0x07 == 0x03)  // SUPPORT: supported in conformance with the standard
        #expect(Array(data[4..<20]) == [0x9C, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                        0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0x00])
    }
}

@Suite struct SanitizeTests {
    func sanitize(_ action: UInt8, immediate: Bool = false, length: UInt16 = 0) -> [UInt8] {
        [0x48, action | (immediate ? 0x80 : 0), 0, 0, 0, 0, 0, UInt8(length >> 8), UInt8(length & 0xFF), 0]
    }

    func overwriteList(count: UInt8 = 1, pattern: [UInt8]) -> [UInt8] {
        [count, 0, UInt8(pattern.count >> 8), UInt8(pattern.count & 0xFF)] + pattern
    }

    @Test func overwriteRepeatsThePatternOverEveryBlock() {
        let harness = Harness(blockCount: 64)
        let list = overwriteList(pattern: [0xA1, 0xB2, 0xC3])
        let response = harness.run(sanitize(0x01, length: UInt16(list.count)), dataOut: list)
        #expect(response.status == .good)
        let expectedBlock = (0..<512).map { [UInt8]([0xA1, 0xB2, 0xC3])[$0 % 3] }
        #expect(harness.store.snapshot(at: 0, count: 512) == expectedBlock)
        #expect(harness.store.snapshot(at: 63 * 512, count: 512) == expectedBlock)
    }

    @Test func overwriteParameterLengthLimits() {
        let harness = Harness()
        for length: UInt16 in [0, 4, 517] {
            let response = harness.run(sanitize(0x01, length: length), dataOut: [UInt8](repeating: 0, count: Int(length)))
            #expect(response.isCheckCondition(0x05, 0x24, 0x00))
            #expect(Array(response.sense[15...17]) == [0xCF, 0x00, 0x07])
        }
    }

    @Test func overwriteParameterListChecks() {
        let harness = Harness()
        let zeroCount = overwriteList(count: 0, pattern: [1, 2, 3, 4])
        #expect(harness.run(sanitize(0x01, length: 8), dataOut: zeroCount).isCheckCondition(0x05, 0x26, 0x00))
        let noPattern: [UInt8] = [1, 0, 0, 0, 9, 9, 9, 9]
        let response = harness.run(sanitize(0x01, length: 8), dataOut: noPattern)
        #expect(response.isCheckCondition(0x05, 0x26, 0x00))
        #expect(Array(response.sense[15...17]) == [0x8F, 0x00, 0x02])
    }

    @Test func blockEraseDeallocatesAThinLU() {
        let harness = Harness(blockCount: 64, thin: true)
        harness.run([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], dataOut: [UInt8](repeating: 0x61, count: 512))
        #expect(harness.run(sanitize(0x02)).status == .good)
        #expect(harness.run([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], edtl: 512).data == [UInt8](repeating: 0, count: 512))
        #expect(harness.run(sanitize(0x02, length: 8), dataOut: [UInt8](repeating: 0, count: 8))
            .isCheckCondition(0x05, 0x24, 0x00))
    }

    @Test func blockEraseIsOfferedOnlyOnThinLUs() {
        #expect(Harness().run(sanitize(0x02)).isCheckCondition(0x05, 0x24, 0x00))
    }

    @Test func cryptoEraseZeroesAThinLU() {
        let harness = Harness(blockCount: 64, thin: true)
        harness.run([0x2A, 0, 0, 0, 0, 63, 0, 0, 1, 0], dataOut: [UInt8](repeating: 0x61, count: 512))
        #expect(harness.run(sanitize(0x03)).status == .good)
        #expect(harness.store.snapshot(at: 63 * 512, count: 512) == [UInt8](repeating: 0, count: 512))
        let page = harness.run([0x12, 1, 0xB1, 0, 64, 0], edtl: 64).data
        #expect(page[7] == 0x50)  // WABEREQ 01b, WACEREQ 01b
    }

    @Test func fullyProvisionedLUOffersOverwriteOnly() {
        let harness = Harness()
        #expect(harness.run(sanitize(0x03)).isCheckCondition(0x05, 0x24, 0x00))
        #expect(harness.run([0x12, 1, 0xB1, 0, 64, 0], edtl: 64).data[7] == 0x00)
    }

    @Test func invalidServiceActionsAndReservedBits() {
        let harness = Harness()
        for action: UInt8 in [0x00, 0x04, 0x10, 0x1E] {
            let response = harness.run(sanitize(action))
            #expect(response.isCheckCondition(0x05, 0x24, 0x00))
            #expect(Array(response.sense[15...17]) == [0xCC, 0x00, 0x01])
        }
        #expect(harness.run([0x48, 0x43, 0, 0, 0, 0, 0, 0, 0, 0]).isCheckCondition(0x05, 0x24, 0x00))
        #expect(harness.run([0x48, 0x03, 0, 0, 5, 0, 0, 0, 0, 0]).isCheckCondition(0x05, 0x24, 0x00))
        #expect(harness.run(sanitize(0x1F)).status == .good)
        #expect(harness.run(sanitize(0x1F, length: 8), dataOut: [UInt8](repeating: 0, count: 8))
            .isCheckCondition(0x05, 0x24, 0x00))
    }

    @Test func readOnlyLUIsWriteProtected() {
        #expect(Harness(thin: true, readOnly: true).run(sanitize(0x03)).isCheckCondition(0x07, 0x27, 0x00))
    }

    @Test func inProgressTerminatesCommandsExceptInquiry() throws {
        var lu = LogicalUnitConfiguration.derived(targetName: targetName, number: 0, blockCount: 64)
        lu.sanitizeMinimumSeconds = 0.6
        lu.thinProvisioned = true
        let device = SCSITargetDevice(configuration: TargetDeviceConfiguration(targetName: targetName, logicalUnits: [lu]),
                                      stores: [0: MemoryBlockStore(byteCount: 64 * 512)])
        func run(_ cdb: [UInt8]) -> SCSIResponse {
            let command = SCSICommand(lunField: 0, cdb: cdb, expectedDataTransferLength: 96, direction: .toInitiator,
                                      nexus: nexus())
            switch device.prepare(command) {
            case .complete(let response): return response
            case .ready(let prepared): return device.execute(prepared, dataOut: nil)
            }
        }
        #expect(run(sanitize(0x03, immediate: true)).status == .good)
        let tur = run([0x00, 0, 0, 0, 0, 0])
        #expect(tur.isCheckCondition(0x02, 0x04, 0x1B))
        #expect(tur.sense[15] == 0x80)  // SKSV: progress indication
        #expect(run([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]).isCheckCondition(0x02, 0x04, 0x1B))
        #expect(run([0x12, 0, 0, 0, 96, 0]).status == .good)
        let requestSense = run([0x03, 0, 0, 0, 18, 0])
        #expect(requestSense.status == .good)
        #expect(requestSense.data.count == 18)
        #expect(requestSense.data[2] == 0x02 && requestSense.data[12] == 0x04 && requestSense.data[13] == 0x1B)
        #expect(requestSense.data[15] == 0x80)
        // A LU reset does not stop the operation.
        #expect(device.taskManagement(.logicalUnitReset, lunField: 0, nexus: nexus()) == .functionComplete)
        #expect(run([0x00, 0, 0, 0, 0, 0]).isCheckCondition(0x06, 0x29, 0x00))
        #expect(run([0x00, 0, 0, 0, 0, 0]).isCheckCondition(0x02, 0x04, 0x1B))
        var waited = 0
        while run([0x00, 0, 0, 0, 0, 0]).status != .good && waited < 300 {
            usleep(10_000)
            waited += 1
        }
        #expect(run([0x00, 0, 0, 0, 0, 0]).status == .good)
    }

    @Test func reportedPerServiceActionInSupportedOperationCodes() {
        // Reporting option 2 (opcode + service action): SANITIZE / OVERWRITE, usage data.
        let data = Harness().run([0xA3, 0x0C, 0x02, 0x48, 0x00, 0x01, 0, 0, 0x01, 0, 0, 0], edtl: 256).data
        #expect(data[1] & 0x07 == 0x03)
        #expect(Array(data[4..<14]) == [0x48, 0xBF, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x00])
    }
}

@Suite struct SoftwareWriteProtectTests {
    @Test func swpIsChangeableAndProtectsTheMedium() {
        let harness = Harness()
        // MODE SENSE(6) changeable values of the Control page: SWP in byte 4.
        let changeable = harness.run([0x1A, 0x08, 0x4A, 0, 255, 0], edtl: 255).data
        #expect(Array(changeable[4..<9]) == [0x0A, 0x0A, 0x04, 0x00, 0x08])
        let current = harness.run([0x1A, 0x08, 0x0A, 0, 255, 0], edtl: 255).data
        var page = Array(current[4...])
        page[4] |= 0x08
        let list: [UInt8] = [0, 0, 0, 0] + page
        #expect(harness.run([0x15, 0x10, 0, 0, UInt8(list.count), 0], dataOut: list).status == .good)
        #expect(harness.run([0x1A, 0x08, 0x0A, 0, 255, 0], edtl: 255).data[2] & 0x80 == 0x80)  // WP
        #expect(harness.run([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], dataOut: [UInt8](repeating: 1, count: 512))
            .isCheckCondition(0x07, 0x27, 0x00))
        #expect(harness.run([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], edtl: 512).status == .good)
        // A LU reset restores the default (SWP = 0).
        _ = harness.device.taskManagement(.logicalUnitReset, lunField: 0, nexus: nexus())
        _ = harness.run([0x00, 0, 0, 0, 0, 0])
        #expect(harness.run([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], dataOut: [UInt8](repeating: 1, count: 512)).status == .good)
    }
}

@Suite struct RemovableMediumTests {
    struct Removable {
        let device: SCSITargetDevice
        init() {
            var lu = LogicalUnitConfiguration.derived(targetName: targetName, number: 0, blockCount: 64)
            lu.removable = true
            self.device = SCSITargetDevice(configuration: TargetDeviceConfiguration(targetName: targetName, logicalUnits: [lu]),
                                           stores: [0: MemoryBlockStore(byteCount: 64 * 512)])
        }

        func run(_ cdb: [UInt8], nexus: ITNexus = nexus()) -> SCSIResponse {
            let command = SCSICommand(lunField: 0, cdb: cdb, expectedDataTransferLength: cdb[0] == 0x12 ? 96 : 0,
                                      direction: cdb[0] == 0x12 ? .toInitiator : .none, nexus: nexus)
            switch device.prepare(command) {
            case .complete(let response): return response
            case .ready(let prepared): return device.execute(prepared, dataOut: nil)
            }
        }
    }

    static let tur: [UInt8] = [0x00, 0, 0, 0, 0, 0]
    static let eject: [UInt8] = [0x1B, 0, 0, 0, 0x02, 0]
    static let load: [UInt8] = [0x1B, 0, 0, 0, 0x03, 0]
    static let prevent: [UInt8] = [0x1E, 0, 0, 0, 0x01, 0]
    static let allow: [UInt8] = [0x1E, 0, 0, 0, 0x00, 0]

    @Test func inquiryReportsRMB() {
        #expect(Removable().run([0x12, 0, 0, 0, 96, 0]).data[1] == 0x80)
        #expect(Harness().run([0x12, 0, 0, 0, 96, 0], edtl: 96).data[1] == 0x00)
    }

    @Test func ejectAndLoad() {
        let lu = Removable()
        #expect(lu.run(Self.eject).status == .good)
        #expect(lu.run(Self.tur).isCheckCondition(0x02, 0x3A, 0x00))
        let command = SCSICommand(lunField: 0, cdb: [0x03, 0, 0, 0, 18, 0], expectedDataTransferLength: 18,
                                  direction: .toInitiator, nexus: nexus())
        if case .complete(let sense) = lu.device.prepare(command) {
            #expect(sense.data.count == 18 && sense.data[2] == 0x02 && sense.data[12] == 0x3A)
        } else {
            Issue.record("REQUEST SENSE should complete at once")
        }
        #expect(lu.run([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]).isCheckCondition(0x02, 0x3A, 0x00))
        #expect(lu.run([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]).isCheckCondition(0x02, 0x3A, 0x00))
        #expect(lu.run([0x12, 0, 0, 0, 96, 0]).status == .good)
        #expect(lu.run(Self.load).status == .good)
        #expect(lu.run(Self.tur).status == .good)
    }

    @Test func powerConditionIgnoresLoej() {
        let lu = Removable()
        #expect(lu.run([0x1B, 0, 0, 0, 0x12, 0]).status == .good)
        #expect(lu.run(Self.tur).status == .good)
    }

    @Test func preventionBlocksEjectFromEveryNexusUntilAllowedOrLost() {
        let lu = Removable()
        lu.device.nexusDidOpen(nexus())
        #expect(lu.run(Self.prevent).status == .good)
        let blocked = lu.run(Self.eject, nexus: nexus(2))
        #expect(blocked.isCheckCondition(0x05, 0x53, 0x02))
        #expect(lu.run(Self.load).isCheckCondition(0x05, 0x53, 0x02))
        #expect(lu.run(Self.allow).status == .good)
        #expect(lu.run(Self.eject).status == .good)
        #expect(lu.run(Self.prevent).status == .good)
        lu.device.nexusDidClose(nexus())  // I_T nexus loss clears its prevention
        #expect(lu.run(Self.load).status == .good)
        #expect(lu.run(Self.tur).status == .good)
    }
}

@Suite struct SynchronizeCacheSyncNVTests {
    @Test func syncNVIsAccepted() {
        let harness = Harness()
        #expect(harness.run([0x35, 0x06, 0, 0, 0, 0, 0, 0, 1, 0]).status == .good)
        #expect(harness.run([0x91, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]).status == .good)
        #expect(harness.run([0x35, 0x08, 0, 0, 0, 0, 0, 0, 1, 0]).isCheckCondition(0x05, 0x24, 0x00))
    }
}

@Suite struct PersistThroughPowerLossTests {
    func device(path: String?, store: MemoryBlockStore) -> SCSITargetDevice {
        var lu = LogicalUnitConfiguration.derived(targetName: targetName, number: 0, blockCount: 64)
        lu.reservationStatePath = path
        return SCSITargetDevice(configuration: TargetDeviceConfiguration(targetName: targetName, logicalUnits: [lu]),
                                stores: [0: store])
    }

    func run(_ device: SCSITargetDevice, _ cdb: [UInt8], dataOut: [UInt8]? = nil, nexus: ITNexus = nexus()) -> SCSIResponse {
        let command = SCSICommand(lunField: 0, cdb: cdb, expectedDataTransferLength: dataOut?.count ?? 255,
                                  direction: dataOut == nil ? .toInitiator : .fromInitiator, nexus: nexus)
        switch device.prepare(command) {
        case .complete(let response): return response
        case .ready(let prepared): return device.execute(prepared, dataOut: dataOut.map { ByteBuffer(bytes: $0) })
        }
    }

    func prout(_ action: UInt8, type: UInt8 = 0, key: UInt64, serviceActionKey: UInt64, aptpl: Bool = false) -> ([UInt8], [UInt8]) {
        ([0x5F, action, type, 0, 0, 0, 0, 0, 24, 0], be64(key) + be64(serviceActionKey) + [0, 0, 0, 0, aptpl ? 1 : 0, 0, 0, 0])
    }

    @Test func registrationsAndReservationSurviveARestart() throws {
        let directory = makeTemporaryDirectory()
        defer { removeTemporaryDirectory(directory) }
        let path = directory + "/lun0.reservations"
        let store = MemoryBlockStore(byteCount: 64 * 512)
        let first = device(path: path, store: store)
        let capabilities = run(first, [0x5E, 0x02, 0, 0, 0, 0, 0, 0, 8, 0]).data
        #expect(capabilities[2] & 0x01 == 0x01)  // PTPL_C
        #expect(capabilities[3] & 0x01 == 0x00)  // PTPL_A
        let (register, registerList) = prout(0x00, key: 0, serviceActionKey: 0xABCD, aptpl: true)
        #expect(run(first, register, dataOut: registerList).status == .good)
        let (reserve, reserveList) = prout(0x01, type: 0x01, key: 0xABCD, serviceActionKey: 0)
        #expect(run(first, reserve, dataOut: reserveList).status == .good)
        #expect(access(path, F_OK) == 0)

        let second = device(path: path, store: store)
        let keys = run(second, [0x5E, 0x00, 0, 0, 0, 0, 0, 0, 255, 0]).data
        #expect(Array(keys[4..<16]) == be32(8) + be64(0xABCD))
        let reservation = run(second, [0x5E, 0x01, 0, 0, 0, 0, 0, 0, 255, 0]).data
        #expect(Array(reservation[8..<16]) == be64(0xABCD))
        #expect(reservation[21] == 0x01)
        #expect(run(second, [0x5E, 0x02, 0, 0, 0, 0, 0, 0, 8, 0]).data[3] & 0x01 == 0x01)  // PTPL_A
        // Another initiator's write conflicts with the restored Write Exclusive reservation.
        let write = run(second, [0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], dataOut: [UInt8](repeating: 1, count: 512),
                        nexus: nexus(2, initiator: "iqn.2026-11.org.example:other"))
        #expect(write.status == .reservationConflict)

        // REGISTER with APTPL = 0 ends persistence: the file goes.
        let (reregister, reregisterList) = prout(0x06, key: 0, serviceActionKey: 0xABCD, aptpl: false)
        #expect(run(second, reregister, dataOut: reregisterList).status == .good)
        #expect(access(path, F_OK) != 0)
    }

    @Test func aptplWithoutAStateFileIsInvalid() {
        let lu = device(path: nil, store: MemoryBlockStore(byteCount: 64 * 512))
        let (register, list) = prout(0x00, key: 0, serviceActionKey: 1, aptpl: true)
        #expect(run(lu, register, dataOut: list).isCheckCondition(0x05, 0x26, 0x00))
        #expect(run(lu, [0x5E, 0x02, 0, 0, 0, 0, 0, 0, 8, 0]).data[2] & 0x01 == 0)
    }

    @Test func stateFileRoundTrip() {
        var pr = PersistentReservationState()
        pr.generation = 7
        pr.persistThroughPowerLoss = true
        let a = NexusKey(initiatorPortName: "iqn.a,i,0x1", targetPortName: "iqn.t,t,0x0001")
        pr.registrations = [(a, 0x1234)]
        pr.reservation = PersistentReservation(holder: nil, type: .exclusiveAccessAllRegistrants)
        let decoded = ReservationPersistence.decode(ReservationPersistence.encode(pr))
        #expect(decoded?.generation == 7)
        #expect(decoded?.registrations.first?.key == 0x1234)
        #expect(decoded?.registrations.first?.nexus == a)
        #expect(decoded?.reservation == pr.reservation)
        #expect(ReservationPersistence.decode("garbage") == nil)
    }
}

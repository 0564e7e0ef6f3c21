import BlockStores
import NIOCore
import Testing
@testable import SCSI

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

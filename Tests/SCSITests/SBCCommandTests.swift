import BlockStores
import NIOCore
import Testing
@testable import SCSI

#if canImport(Glibc)
import Glibc
#endif

@Suite struct ReadCapacityTests {
    @Test func readCapacity10() {
        let data = Harness(blockCount: 2048).run([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]).data
        #expect(data == [0, 0, 0x07, 0xFF, 0, 0, 0x02, 0x00])
    }

    @Test func readCapacity10LBAWithoutPMIIsInvalid() {
        #expect(Harness().run([0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0]).isCheckCondition(0x05, 0x24, 0x00))
    }

    @Test func readCapacity16() {
        let data = Harness(blockSize: 4096, blockCount: 256, thin: true)
            .run([0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]).data
        #expect(data == be64(255) + be32(4096) + [0, 0, 0xC0, 0] + [UInt8](repeating: 0, count: 16))
    }

    @Test func readCapacity16Truncates() {
        let response = Harness().run([0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0])
        #expect(response.data == be64(2047) + be32(512))
    }
}

@Suite struct ReadWriteTests {
    @Test(arguments: [
        ([UInt8]([0x0A, 0, 0, 4, 2, 0]), [UInt8]([0x08, 0, 0, 4, 2, 0])),
        ([0x2A, 0, 0, 0, 0, 4, 0, 0, 2, 0], [0x28, 0, 0, 0, 0, 4, 0, 0, 2, 0]),
        ([0xAA, 0, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0], [0xA8, 0, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0]),
        ([0x8A, 0x08, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0], [0x88, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0]),
    ])
    func roundTrip(write: [UInt8], read: [UInt8]) {
        let harness = Harness()
        let data = pattern(1024, seed: write[0])
        let written = harness.run(write, dataOut: data)
        #expect(written.status == .good)
        #expect(written.transferLength == 1024)
        let response = harness.run(read, edtl: 1024)
        #expect(response.status == .good)
        #expect(response.data == data)
        #expect(harness.store.snapshot(at: 4 * 512, count: 1024) == data)
    }

    /// A READ(32)/WRITE(32) CDB: LBA, blocks, GROUP NUMBER, flags byte 10.
    static func cdb32(_ serviceAction: UInt8, lba: UInt64, blocks: UInt32, group: UInt8 = 0, flags: UInt8 = 0) -> [UInt8] {
        var cdb = [UInt8](repeating: 0, count: 32)
        cdb[0] = 0x7F; cdb[6] = group; cdb[7] = 0x18; cdb[9] = serviceAction; cdb[10] = flags
        for i in 0..<8 { cdb[12 + i] = UInt8(truncatingIfNeeded: lba >> (56 - 8 * UInt64(i))) }
        for i in 0..<4 { cdb[28 + i] = UInt8(truncatingIfNeeded: blocks >> (24 - 8 * UInt32(i))) }
        return cdb
    }

    @Test func readWrite32RoundTripWhenOffered() {
        let harness = Harness(readWrite32: true)
        let data = pattern(2048, seed: 32)
        let written = harness.run(Self.cdb32(0x0B, lba: 9, blocks: 4, group: 3, flags: 0x08), dataOut: data)
        #expect(written.status == .good && written.transferLength == 2048)
        #expect(harness.store.snapshot(at: 9 * 512, count: 2048) == data)
        let read = harness.run(Self.cdb32(0x09, lba: 9, blocks: 4, group: 5), edtl: 2048)
        #expect(read.status == .good && read.data == data)
        // Past the end: LBA OUT OF RANGE; a reserved bit: INVALID FIELD IN CDB; RDPROTECT set: too.
        #expect(harness.run(Self.cdb32(0x09, lba: 2047, blocks: 2), edtl: 1024).isCheckCondition(0x05, 0x21, 0x00))
        #expect(harness.run(Self.cdb32(0x09, lba: 0, blocks: 1, flags: 0x20), edtl: 512).isCheckCondition(0x05, 0x24, 0x00))
        // RSOC lists them, with 32-byte usage data.
        let rsoc = harness.run([0xA3, 0x0C, 0x02, 0x7F, 0x00, 0x09, 0, 0, 0x04, 0x00, 0, 0], edtl: 1024)
        #expect(rsoc.status == .good && rsoc.data.count >= 4 + 32 && rsoc.data[1] & 0x07 == 0x03)
        #expect(Array(rsoc.data[2..<4]) == [0x00, 0x20])
    }

    @Test func readWrite32NotOfferedByDefault() {
        let response = Harness().run(Self.cdb32(0x09, lba: 0, blocks: 1), edtl: 512)
        #expect(response.isCheckCondition(0x05, 0x24, 0x00))
    }

    @Test func read6LengthZeroMeans256Blocks() {
        let response = Harness().run([0x08, 0, 0, 0, 0, 0], edtl: 256 * 512)
        #expect(response.status == .good)
        #expect(response.transferLength == 256 * 512)
    }

    @Test func read10LengthZeroIsNoOp() {
        let response = Harness().run([0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0], edtl: 0)
        #expect(response.status == .good)
        #expect(response.transferLength == 0)
        #expect(response.dataIn == nil)
    }

    @Test func outOfRange() {
        let harness = Harness(blockCount: 2048)
        #expect(harness.run([0x28, 0, 0, 0, 0x07, 0xFF, 0, 0, 2, 0]).isCheckCondition(0x05, 0x21, 0x00))
        #expect(harness.run([0x28, 0, 0, 0, 0x07, 0xFF, 0, 0, 1, 0]).status == .good)
        #expect(harness.run([0x88, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 1, 0, 0])
            .isCheckCondition(0x05, 0x21, 0x00))
        #expect(harness.run([0x2A, 0, 0, 0, 0x08, 0x00, 0, 0, 1, 0], dataOut: pattern(512))
            .isCheckCondition(0x05, 0x21, 0x00))
        #expect(harness.store.flushCount == 0)
    }

    @Test func zeroBlocksAcceptsLBAAtCapacityButNotBeyond() {
        let harness = Harness(blockCount: 2048)
        #expect(harness.run([0x28, 0, 0, 0, 0x08, 0x00, 0, 0, 0, 0], edtl: 0).status == .good)
        #expect(harness.run([0x28, 0, 0, 0, 0x08, 0x01, 0, 0, 0, 0], edtl: 0).isCheckCondition(0x05, 0x21, 0x00))
        #expect(harness.run([0x2F, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0], edtl: 0).isCheckCondition(0x05, 0x21, 0x00))
        #expect(harness.run([0x34, 0, 0x80, 0, 0, 0, 0, 0, 0, 0], edtl: 0).isCheckCondition(0x05, 0x21, 0x00))
        #expect(harness.run([0x2A, 0, 0x80, 0, 0, 0, 0, 0, 0, 0], dataOut: []).isCheckCondition(0x05, 0x21, 0x00))
    }

    @Test func transferLongerThanBlockLimitsIsInvalidField() {
        let response = Harness(maximumTransferBlocks: 8).run([0x28, 0, 0, 0, 0, 0, 0, 0, 9, 0])
        #expect(response.sense[12...] == [0x24, 0x00, 0, 0xCF, 0x00, 0x07])
    }

    @Test func shortEDTLWritesOnlyWhatWasSent() {
        let harness = Harness()
        let before = harness.store.snapshot(at: 0, count: 1024)
        let data = pattern(200, seed: 9)
        let response = harness.run([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], dataOut: data)
        #expect(response.status == .good)
        #expect(response.transferLength == 512)
        #expect(harness.store.snapshot(at: 0, count: 200) == data)
        #expect(harness.store.snapshot(at: 200, count: 824) == Array(before[200...]))
    }

    @Test func longEDTLWritesOnlySPDTL() {
        let harness = Harness()
        let data = pattern(1024, seed: 3)
        let response = harness.run([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], dataOut: data)
        #expect(response.status == .good)
        #expect(response.transferLength == 512)
        #expect(harness.store.snapshot(at: 0, count: 512) == Array(data[0..<512]))
        #expect(harness.store.snapshot(at: 512, count: 512).allSatisfy { $0 == 0 })
    }

    @Test func zeroEDTLWritesNothing() {
        let harness = Harness()
        let response = harness.run([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], dataOut: [])
        #expect(response.status == .good)
        #expect(response.transferLength == 512)
        #expect(harness.store.snapshot(at: 0, count: 512).allSatisfy { $0 == 0 })
    }

    @Test func fuaMakesWriteDurable() {
        let harness = Harness()
        harness.run([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], dataOut: pattern(512))
        #expect(harness.store.flushCount == 0)
        harness.run([0x2A, 0x08, 0, 0, 0, 0, 0, 0, 1, 0], dataOut: pattern(512))
        #expect(harness.store.flushCount == 1)
    }

    @Test func readOnlyRejectsWrites() {
        let harness = Harness(readOnly: true)
        #expect(harness.run([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], dataOut: pattern(512)).isCheckCondition(0x07, 0x27, 0x00))
        #expect(harness.run([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]).status == .good)
    }

    @Test func synchronizeCache() {
        let harness = Harness()
        #expect(harness.run([0x35, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]).status == .good)
        #expect(harness.store.flushCount == 1)
        #expect(harness.run([0x35, 0, 0, 0, 0x08, 0x00, 0, 0, 1, 0]).isCheckCondition(0x05, 0x21, 0x00))
    }

    @Test func fileBlockStoreRoundTrip() throws {
        let directory = makeTemporaryDirectory()
        defer { rmdir(directory) }
        let path = directory + "/lun0.img"
        defer { unlink(path) }
        let store = try FileBlockStore.open(path: path, byteCount: 1 << 20, createIfMissing: true, writeThrough: false)
        #expect(store.byteCount == 1 << 20)
        var lu = LogicalUnitConfiguration.derived(targetName: targetName, number: 0, blockCount: 2048)
        lu.thinProvisioned = true
        let device = SCSITargetDevice(configuration: TargetDeviceConfiguration(targetName: targetName,
                                                                              logicalUnits: [lu]),
                                      stores: [0: store])
        let harness = HarnessRunner(device: device)
        let data = pattern(8192, seed: 5)
        #expect(harness.run([0x2A, 0x08, 0, 0, 0, 16, 0, 0, 16, 0], dataOut: data).status == .good)
        #expect(harness.run([0x28, 0, 0, 0, 0, 16, 0, 0, 16, 0], edtl: 8192).data == data)
        // Deallocate and read back zeros.
        let unmap: [UInt8] = [0, 22, 0, 16, 0, 0, 0, 0] + be64(16) + be32(16) + [0, 0, 0, 0]
        #expect(harness.run([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], dataOut: unmap).status == .good)
        #expect(harness.run([0x28, 0, 0, 0, 0, 16, 0, 0, 16, 0], edtl: 8192).data.allSatisfy { $0 == 0 })
        // Reopening keeps the size and contents; a larger request grows the file.
        #expect(harness.run([0x2A, 0, 0, 0, 0, 1, 0, 0, 1, 0], dataOut: pattern(512, seed: 1)).status == .good)
        let reopened = try FileBlockStore.open(path: path, byteCount: 2 << 20, createIfMissing: false,
                                               writeThrough: true)
        #expect(reopened.fileSize == 2 << 20)
        var buffer = [UInt8](repeating: 0, count: 512)
        try buffer.withUnsafeMutableBytes { try reopened.read(into: $0, at: 512) }
        #expect(buffer == pattern(512, seed: 1))
    }

    @Test func fileBlockStoreReportsUnopenablePath() {
        do {
            _ = try FileBlockStore.open(path: "/nonexistent-dir/x.img", byteCount: 4096, createIfMissing: true,
                                        writeThrough: false)
            Issue.record("open succeeded")
        } catch let error as FileBlockStoreError {
            #expect(error.description.contains("/nonexistent-dir/x.img"))
            #expect(error.description.contains("No such file"))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }
}

/// Runs commands against an arbitrary device.
struct HarnessRunner {
    let device: SCSITargetDevice

    @discardableResult
    func run(_ cdb: [UInt8], edtl: Int? = nil, dataOut: [UInt8]? = nil) -> SCSIResponse {
        var padded = cdb
        if padded.count < 16 { padded += [UInt8](repeating: 0, count: 16 - padded.count) }
        let length = edtl ?? dataOut?.count ?? 4096
        let command = SCSICommand(lunField: 0, cdb: padded, expectedDataTransferLength: length,
                                  direction: dataOut != nil ? .fromInitiator : .toInitiator, nexus: nexus())
        switch device.prepare(command) {
        case .complete(let response): return response
        case .ready(let prepared):
            let buffer = prepared.dataOutLength > 0 ? ByteBuffer(bytes: dataOut ?? []) : nil
            return device.execute(prepared, dataOut: buffer)
        }
    }
}


@Suite struct VerifyTests {
    @Test func byteCheckMiscompareReportsOffset() {
        let harness = Harness()
        let data = pattern(2048, seed: 4)
        harness.run([0x2A, 0, 0, 0, 0, 8, 0, 0, 4, 0], dataOut: data)
        #expect(harness.run([0x2F, 0x02, 0, 0, 0, 8, 0, 0, 4, 0], dataOut: data).status == .good)
        var changed = data
        changed[1234] ^= 0x58
        let response = harness.run([0x2F, 0x02, 0, 0, 0, 8, 0, 0, 4, 0], dataOut: changed)
        #expect(response.sense == [0xF0, 0, 0x0E, 0, 0, 0x04, 0xD2, 10, 0, 0, 0, 0, 0x1D, 0x00, 0, 0, 0, 0])
    }

    @Test func noByteCheckIsRangeCheckOnly() {
        let harness = Harness()
        #expect(harness.run([0x2F, 0, 0, 0, 0, 0, 0, 0, 4, 0], edtl: 0).status == .good)
        #expect(harness.run([0x2F, 0, 0, 0, 0x08, 0, 0, 0, 4, 0], edtl: 0).isCheckCondition(0x05, 0x21, 0x00))
    }

    @Test func vrprotectIsInvalid() {
        #expect(Harness().run([0x2F, 0x20, 0, 0, 0, 0, 0, 0, 1, 0]).isCheckCondition(0x05, 0x24, 0x00))
    }

    @Test func byteCheckSameBlock() {
        let harness = Harness()
        let block = pattern(512, seed: 2)
        harness.run([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], dataOut: block)
        harness.run([0x2A, 0, 0, 0, 0, 1, 0, 0, 1, 0], dataOut: block)
        #expect(harness.run([0x2F, 0x06, 0, 0, 0, 0, 0, 0, 2, 0], dataOut: block).status == .good)
        #expect(harness.run([0x2F, 0x06, 0, 0, 0, 0, 0, 0, 3, 0], dataOut: block).isCheckCondition(0x0E, 0x1D, 0x00))
    }
}

@Suite struct CompareAndWriteTests {
    @Test func matchWritesAndMismatchReports() {
        let harness = Harness()
        let original = pattern(1024, seed: 1)
        let replacement = pattern(1024, seed: 2)
        harness.run([0x2A, 0, 0, 0, 0, 2, 0, 0, 2, 0], dataOut: original)
        let cdb: [UInt8] = [0x89, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0]
        #expect(harness.run(cdb, dataOut: original + replacement).status == .good)
        #expect(harness.store.snapshot(at: 1024, count: 1024) == replacement)
        let response = harness.run(cdb, dataOut: original + pattern(1024, seed: 3))
        #expect(response.isCheckCondition(0x0E, 0x1D, 0x00))
        #expect(response.sense[0] == 0xF0)
        #expect(harness.store.snapshot(at: 1024, count: 1024) == replacement)
    }

    @Test func tooManyBlocks() {
        var lu = LogicalUnitConfiguration.derived(targetName: targetName, number: 0, blockCount: 64)
        lu.maximumCompareAndWriteBlocks = 1
        let device = SCSITargetDevice(configuration: TargetDeviceConfiguration(targetName: targetName,
                                                                              logicalUnits: [lu]),
                                      stores: [0: MemoryBlockStore(byteCount: 64 * 512)])
        let response = HarnessRunner(device: device).run([0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0],
                                                         dataOut: pattern(2048))
        #expect(response.sense[12...] == [0x24, 0x00, 0, 0xCF, 0x00, 0x0D])
    }

    @Test func wrongDataOutLengthIsRejected() {
        let harness = Harness()
        let cdb: [UInt8] = [0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
        #expect(harness.run(cdb, dataOut: pattern(2048)).status == .checkCondition)
    }
}

@Suite struct ProvisioningTests {
    @Test func writeSameUnmapAndGetLBAStatus() {
        let harness = Harness(thin: true)
        harness.run([0x2A, 0, 0, 0, 0, 0, 0, 0, 64, 0], dataOut: pattern(64 * 512))
        var status = harness.run([0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0]).data
        #expect(status.count == 24)
        #expect(Array(status[0..<8]) == [0, 0, 0, 20, 0, 0, 0, 0])
        #expect(status[20] == 0x00)
        // WRITE SAME(16) with UNMAP and NDOB deallocates blocks 8..<24.
        #expect(harness.run([0x93, 0x09, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 16, 0, 0], edtl: 0).status == .good)
        status = harness.run([0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 24, 0, 0]).data
        #expect(Array(status[8..<16]) == be64(8))
        #expect(Array(status[16..<20]) == be32(16))
        #expect(status[20] == 0x01)
        #expect(harness.store.snapshot(at: 8 * 512, count: 16 * 512).allSatisfy { $0 == 0 })
    }

    @Test func writeSameWritesPattern() {
        let harness = Harness()
        let block = pattern(512, seed: 7)
        #expect(harness.run([0x41, 0, 0, 0, 0, 4, 0, 0, 3, 0], dataOut: block).status == .good)
        #expect(harness.store.snapshot(at: 4 * 512, count: 3 * 512) == block + block + block)
        #expect(harness.run([0x41, 0, 0, 0, 0, 4, 0, 0, 0, 0], dataOut: block).isCheckCondition(0x05, 0x24, 0x00))
        #expect(harness.run([0x41, 0, 0, 0, 0, 4, 0, 0, 1, 0], dataOut: block + block).status == .checkCondition)
    }

    @Test func writeSameUnmapNeedsThinProvisioning() {
        let response = Harness().run([0x41, 0x08, 0, 0, 0, 0, 0, 0, 1, 0], dataOut: [UInt8](repeating: 0, count: 512))
        #expect(response.sense[12...] == [0x24, 0x00, 0, 0xCB, 0x00, 0x01])
    }

    @Test func unmapParameterListChecks() {
        let harness = Harness(thin: true)
        #expect(harness.run([0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0], edtl: 0).status == .good)
        #expect(harness.run([0x42, 0, 0, 0, 0, 0, 0, 0, 4, 0], dataOut: [0, 0, 0, 0])
            .isCheckCondition(0x05, 0x1A, 0x00))
        let beyond: [UInt8] = [0, 22, 0, 16, 0, 0, 0, 0] + be64(2040) + be32(16) + [0, 0, 0, 0]
        #expect(harness.run([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], dataOut: beyond).isCheckCondition(0x05, 0x21, 0x00))
        let badLength: [UInt8] = [0, 22, 0, 32, 0, 0, 0, 0] + be64(0) + be32(16) + [0, 0, 0, 0]
        #expect(harness.run([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], dataOut: badLength)
            .isCheckCondition(0x05, 0x26, 0x00))
    }

    @Test func getLBAStatusBeyondEnd() {
        #expect(Harness(thin: true).run([0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 24, 0, 0])
            .isCheckCondition(0x05, 0x21, 0x00))
    }
}

@Suite struct ReservationTests {
    @Test func readKeysWithNoRegistrations() {
        let response = Harness().run([0x5E, 0x00, 0, 0, 0, 0, 0, 0x10, 0x00, 0])
        #expect(response.status == .good)
        #expect(response.data == [0, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func registerReserveAndConflict() {
        let harness = Harness()
        let first = nexus(1)
        let second = nexus(2, initiator: "iqn.2026-11.org.example:other")
        harness.device.nexusDidOpen(first)
        harness.device.nexusDidOpen(second)
        let register = be64(0) + be64(0xABCD) + [0, 0, 0, 0, 0, 0, 0, 0]
        #expect(harness.run([0x5F, 0x00, 0, 0, 0, 0, 0, 0, 24, 0], dataOut: register, nexus: first).status == .good)
        let keys = harness.run([0x5E, 0x00, 0, 0, 0, 0, 0, 0x10, 0x00, 0]).data
        #expect(keys == [0, 0, 0, 1, 0, 0, 0, 8] + be64(0xABCD))
        // Exclusive access, registrants only.
        let reserve = be64(0xABCD) + be64(0) + [0, 0, 0, 0, 0, 0, 0, 0]
        #expect(harness.run([0x5F, 0x01, 0x06, 0, 0, 0, 0, 0, 24, 0], dataOut: reserve, nexus: first).status == .good)
        #expect(harness.run([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], nexus: second).status == .reservationConflict)
        #expect(harness.run([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], nexus: first).status == .good)
        #expect(harness.run([0x12, 0, 0, 0, 36, 0], nexus: second).status == .good)
        let reservation = harness.run([0x5E, 0x01, 0, 0, 0, 0, 0, 0x10, 0x00, 0]).data
        #expect(reservation == [0, 0, 0, 1, 0, 0, 0, 16] + be64(0xABCD) + [0, 0, 0, 0, 0, 0x06, 0, 0])
        // Release and unregister.
        #expect(harness.run([0x5F, 0x02, 0x06, 0, 0, 0, 0, 0, 24, 0], dataOut: reserve, nexus: first).status == .good)
        #expect(harness.run([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], nexus: second).status == .good)
    }

    @Test func reserve6Conflicts() {
        let harness = Harness()
        let first = nexus(1)
        let second = nexus(2, initiator: "iqn.2026-11.org.example:other")
        #expect(harness.run([0x16, 0, 0, 0, 0, 0], nexus: first).status == .good)
        #expect(harness.run([0x16, 0, 0, 0, 0, 0], nexus: first).status == .good)
        #expect(harness.run([0x16, 0, 0, 0, 0, 0], nexus: second).status == .reservationConflict)
        #expect(harness.run([0x1A, 0, 0x3F, 0, 255, 0], nexus: second).status == .reservationConflict)
        #expect(harness.run([0x17, 0, 0, 0, 0, 0], nexus: second).status == .good)
        #expect(harness.run([0x12, 0, 0, 0, 36, 0], nexus: second).status == .good)
        harness.device.nexusDidClose(first)
        #expect(harness.run([0x1A, 0, 0x3F, 0, 255, 0], nexus: second).status == .good)
    }

    @Test func reserve10BehavesLikeReserve6WithoutThirdParty() {
        let harness = Harness()
        let first = nexus(1)
        let second = nexus(2, initiator: "iqn.2026-11.org.example:other")
        #expect(harness.run([0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0], nexus: first).status == .good)
        #expect(harness.run([0x16, 0, 0, 0, 0, 0], nexus: second).status == .reservationConflict)
        #expect(harness.run([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], nexus: second).status == .reservationConflict)
        #expect(harness.run([0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0], nexus: second).status == .good)  // not the holder: no effect
        #expect(harness.run([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], nexus: second).status == .reservationConflict)
        #expect(harness.run([0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0], nexus: first).status == .good)
        #expect(harness.run([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], nexus: second).status == .good)
        // 3RDPTY (byte 1 bit 4): INVALID FIELD IN CDB, field pointer byte 1 bit 4.
        let thirdParty = harness.run([0x56, 0x10, 0, 0x05, 0, 0, 0, 0, 0, 0], nexus: first)
        #expect(thirdParty.isCheckCondition(0x05, 0x24, 0x00))
        #expect(Array(thirdParty.sense[15...17]) == [0xCC, 0x00, 0x01])
    }
}

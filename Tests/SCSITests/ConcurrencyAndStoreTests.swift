import BlockStores
import NIOCore
import Testing
@testable import SCSI

#if canImport(Glibc)
import Glibc
#endif

@Suite struct ConcurrencyTests {
    /// Eight initiators increment one counter block with COMPARE AND WRITE, retrying on
    /// miscompare, while plain writes hit other blocks: no increment may be lost.
    @Test func compareAndWriteIsAtomic() async {
        let harness = Harness()
        let workers = 8
        let incrementsPerWorker = 25
        harness.run([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], dataOut: [UInt8](repeating: 0, count: 512))
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<workers {
                group.addTask {
                    let me = nexus(UInt64(worker + 1), initiator: "iqn.2026-11.org.example:w\(worker)")
                    var done = 0
                    while done < incrementsPerWorker {
                        let current = harness.run([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], edtl: 512, nexus: me).data
                        var next = current
                        let value = UInt32(current[0]) << 24 | UInt32(current[1]) << 16
                            | UInt32(current[2]) << 8 | UInt32(current[3])
                        next.replaceSubrange(0..<4, with: be32(value + 1))
                        let response = harness.run([0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
                                                   dataOut: current + next, nexus: me)
                        if response.status == .good {
                            done += 1
                        } else {
                            #expect(response.isCheckCondition(0x0E, 0x1D, 0x00))
                        }
                        let lba = UInt8(1 + worker)
                        #expect(harness.run([0x2A, 0, 0, 0, 0, lba, 0, 0, 1, 0], dataOut: pattern(512, seed: lba),
                                            nexus: me).status == .good)
                    }
                }
            }
        }
        let final = harness.store.snapshot(at: 0, count: 4)
        #expect(final == be32(UInt32(workers * incrementsPerWorker)))
    }
}

@Suite struct FileBlockStoreTests {
    @Test func sparseCreationAndProvisioningStatus() throws {
        let directory = makeTemporaryDirectory()
        defer { rmdir(directory) }
        let path = directory + "/thin.img"
        defer { unlink(path) }
        let store = try FileBlockStore.open(path: path, byteCount: 1 << 20, createIfMissing: true, writeThrough: false)
        #expect(store.provisioningStatus(at: 0, length: 1 << 20).mapped == false)
        let block = pattern(65536, seed: 3)
        try block.withUnsafeBytes { try store.write($0, at: 0, durable: true) }
        let status = store.provisioningStatus(at: 0, length: 1 << 20)
        #expect(status.mapped)
        #expect(status.length >= 65536 && status.length < 1 << 20)
        if store.supportsDeallocation {
            try store.deallocate(at: 0, length: 65536)
            #expect(store.provisioningStatus(at: 0, length: 1 << 20).mapped == false)
        }
        var back = [UInt8](repeating: 0xFF, count: 65536)
        try back.withUnsafeMutableBytes { try store.read(into: $0, at: 0) }
        #expect(back.allSatisfy { $0 == 0 })
    }

    @Test func outOfRangeAccessIsTyped() throws {
        let directory = makeTemporaryDirectory()
        defer { rmdir(directory) }
        let path = directory + "/small.img"
        defer { unlink(path) }
        let store = try FileBlockStore.open(path: path, byteCount: 4096, createIfMissing: true, writeThrough: true)
        var buffer = [UInt8](repeating: 0, count: 512)
        #expect(throws: BlockStoreError.outOfRange) {
            try buffer.withUnsafeMutableBytes { try store.read(into: $0, at: 4096 - 256) }
        }
    }

    @Test func existingFileIsNeverTruncated() throws {
        let directory = makeTemporaryDirectory()
        defer { rmdir(directory) }
        let path = directory + "/big.img"
        defer { unlink(path) }
        _ = try FileBlockStore.open(path: path, byteCount: 1 << 20, createIfMissing: true, writeThrough: false)
        let smaller = try FileBlockStore.open(path: path, byteCount: 4096, createIfMissing: false, writeThrough: false)
        #expect(smaller.byteCount == 4096)
        #expect(smaller.fileSize == 1 << 20)
        let whole = try FileBlockStore.open(path: path, byteCount: 0, createIfMissing: false, writeThrough: false)
        #expect(whole.byteCount == 1 << 20)
    }

    @Test func missingFileWithoutCreateFails() {
        #expect(throws: FileBlockStoreError.self) {
            _ = try FileBlockStore.open(path: "/tmp/definitely-not-here-\(getpid()).img", byteCount: 4096,
                                        createIfMissing: false, writeThrough: false)
        }
    }
}

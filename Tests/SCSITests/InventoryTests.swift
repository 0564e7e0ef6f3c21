import BlockStores
import NIOCore
import Testing
@testable import SCSI

@Suite("Logical units added and removed while the target runs")
struct InventoryTests {
    static let reportLUNs: [UInt8] = [0xA0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]
    static let testUnitReady: [UInt8] = [0, 0, 0, 0, 0, 0]

    func unit(_ number: UInt16, blocks: UInt64 = 64) -> (LogicalUnitConfiguration, MemoryBlockStore) {
        (.derived(targetName: targetName, number: number, blockSize: 512, blockCount: blocks),
         MemoryBlockStore(byteCount: 512 * blocks))
    }

    @Test("adding a LU: REPORT LUNS lists it, every open nexus gets 3F/0E once on each LU, then the LU serves I/O")
    func add() throws {
        let h = Harness()
        let a = nexus(1), b = nexus(2, initiator: "iqn.2026-11.org.example:other")
        h.device.nexusDidOpen(a)
        h.device.nexusDidOpen(b)
        #expect(h.run(Self.testUnitReady, edtl: 0, nexus: a).status == .good)
        let (lu, store) = unit(5)
        try h.device.addLogicalUnit(lu, store: store)
        // REPORT LUNS ignores unit attentions and answers the new inventory (bytes fixed by SPC-4 §6.33).
        let report = h.run(Self.reportLUNs, nexus: a)
        #expect(report.status == .good)
        #expect(report.data == [0, 0, 0, 16, 0, 0, 0, 0] + [0, 0, 0, 0, 0, 0, 0, 0] + [0, 5, 0, 0, 0, 0, 0, 0])
        for n in [a, b] {
            let ua = h.run(Self.testUnitReady, edtl: 0, nexus: n)
            #expect(ua.isCheckCondition(0x06, 0x3F, 0x0E))
            #expect(h.run(Self.testUnitReady, edtl: 0, nexus: n).status == .good)
        }
        // The new LU reports it too (to each nexus, once), then reads.
        #expect(h.run(Self.testUnitReady, lun: 5, edtl: 0, nexus: a).isCheckCondition(0x06, 0x3F, 0x0E))
        try [UInt8]([1, 2, 3, 4]).withUnsafeBytes { try store.write($0, at: 0, durable: false) }
        let read = h.run([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], lun: 5, edtl: 512, nexus: a)
        #expect(read.status == .good)
        #expect(Array(read.data.prefix(4)) == [1, 2, 3, 4])
        #expect(throws: InventoryError.lunInUse(5)) { try h.device.addLogicalUnit(lu, store: store) }
    }

    @Test("removing a LU: it answers 25/00, REPORT LUNS drops it, the others report 3F/0E")
    func remove() throws {
        let h = Harness(extraLUNs: [1])
        let a = nexus(1)
        h.device.nexusDidOpen(a)
        #expect(h.run(Self.testUnitReady, lun: 1, edtl: 0, nexus: a).status == .good)
        let removed = try h.device.removeLogicalUnit(1)
        #expect(removed.number == 1)
        let gone = h.run(Self.testUnitReady, lun: 1, edtl: 0, nexus: a)
        #expect(gone.isCheckCondition(0x05, 0x25, 0x00))
        #expect(h.run(Self.reportLUNs, nexus: a).data == [0, 0, 0, 8, 0, 0, 0, 0] + [0, 0, 0, 0, 0, 0, 0, 0])
        #expect(h.run(Self.testUnitReady, edtl: 0, nexus: a).isCheckCondition(0x06, 0x3F, 0x0E))
        #expect(h.device.lunNumbers(for: a) == [0])
        #expect(throws: InventoryError.noSuchLUN(1)) { try h.device.removeLogicalUnit(1) }
    }

    @Test("a masked LU's change is announced only to initiators that may see it")
    func masking() throws {
        let h = Harness()
        let allowed = nexus(1), other = nexus(2, initiator: "iqn.2026-11.org.example:other")
        h.device.nexusDidOpen(allowed)
        h.device.nexusDidOpen(other)
        var (lu, store) = unit(3)
        lu.visibleTo = ["iqn.2026-11.org.example:host"]
        try h.device.addLogicalUnit(lu, store: store)
        #expect(h.device.lunNumbers(for: other) == [0])
        #expect(h.device.lunNumbers(for: allowed) == [0, 3])
        #expect(h.run(Self.testUnitReady, lun: 3, edtl: 0, nexus: other).isCheckCondition(0x05, 0x25, 0x00))
        #expect(h.run(Self.testUnitReady, lun: 3, edtl: 0, nexus: allowed).isCheckCondition(0x06, 0x3F, 0x0E))
    }

    @Test("INQUIRY DATA HAS CHANGED reaches every nexus on every LU")
    func inquiryChanged() {
        let h = Harness(extraLUNs: [1])
        let a = nexus(1)
        h.device.nexusDidOpen(a)
        h.device.raiseUnitAttentionOnEveryUnit(.inquiryDataHasChanged)
        for lun: UInt16 in [0, 1] {
            #expect(h.run(Self.testUnitReady, lun: lun, edtl: 0, nexus: a).isCheckCondition(0x06, 0x3F, 0x03))
        }
    }

    @Test("SnapshotCell: readers see the old or the new value, never a torn one, while a writer publishes")
    func snapshotCell() async {
        let cell = SnapshotCell([UInt16: Int]())
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for i in 0..<2000 { cell.update { $0[UInt16(i % 64)] = i } }
            }
            for _ in 0..<2 {
                group.addTask {
                    for _ in 0..<20000 {
                        cell.withValue { map in
                            for (key, value) in map { precondition(Int(key) == value % 64) }
                        }
                    }
                }
            }
        }
        #expect(cell.value.count == 64)
    }

    @Test("a detached file store flushes, then fails every call with EBADF instead of touching another file")
    func detach() throws {
        let directory = makeTemporaryDirectory()
        defer { removeTemporaryDirectory(directory) }
        let path = directory + "/lu.img"
        let store = try FileBlockStore.open(path: path, byteCount: 1 << 20, createIfMissing: true, writeThrough: false)
        let bytes: [UInt8] = [9, 8, 7, 6]
        try bytes.withUnsafeBytes { try store.write($0, at: 0, durable: false) }
        try store.detach()
        var buffer = [UInt8](repeating: 0, count: 4)
        #expect(throws: BlockStoreError.self) { try buffer.withUnsafeMutableBytes { try store.read(into: $0, at: 0) } }
        #expect(throws: BlockStoreError.self) { try bytes.withUnsafeBytes { try store.write($0, at: 0, durable: false) } }
        #expect(throws: BlockStoreError.self) { try store.flush() }
        try store.detach()  // once is enough; again is harmless
        let reopened = try FileBlockStore.open(path: path, byteCount: 1 << 20, createIfMissing: false, writeThrough: false)
        try buffer.withUnsafeMutableBytes { try reopened.read(into: $0, at: 0) }
        #expect(buffer == bytes)
    }
}

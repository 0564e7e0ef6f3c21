import BlockStores
import CopyOffload
import Foundation
import NIOCore
import SCSI
import Synchronization
import Testing

/// A memory store whose reads wait until `open` is called (so a copy is observably running).
final class GatedStore: BlockStore, @unchecked Sendable {
    let inner: MemoryBlockStore
    let gate = DispatchSemaphore(value: 0)
    let reads = Atomic<Int>(0)
    init(byteCount: UInt64) { self.inner = MemoryBlockStore(byteCount: byteCount) }
    var byteCount: UInt64 { inner.byteCount }
    var supportsDeallocation: Bool { false }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) {
        if reads.add(1, ordering: .relaxed).newValue == 2 { gate.wait() }
        try inner.read(into: buffer, at: offset)
    }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64, durable: Bool) throws(BlockStoreError) {
        try inner.write(bytes, at: offset, durable: durable)
    }
    func flush() throws(BlockStoreError) {}
    func deallocate(at offset: UInt64, length: UInt64) throws(BlockStoreError) {}
    func open() { gate.signal() }
}

struct DeviceFixture {
    static let target = "iqn.2026-11.org.example:copy"
    let device: SCSITargetDevice
    let copy: CopyOffloadExtension
    let registry = CopyUnitRegistry()
    let stores: [UInt16: any BlockStore]
    let nexus = ITNexus(initiatorPortName: "iqn.host,i,0x01", targetPortName: DeviceFixture.target + ",t,0x0001", id: 1)

    init(store0: (any BlockStore)? = nil, chunkSize: Int = 1 << 20) {
        let units = [LogicalUnitConfiguration.derived(targetName: Self.target, number: 0, blockCount: 2048),
                     LogicalUnitConfiguration.derived(targetName: Self.target, number: 1, blockCount: 2048)]
        stores = [0: store0 ?? MemoryBlockStore(byteCount: 1 << 20), 1: MemoryBlockStore(byteCount: 1 << 20)]
        copy = CopyOffloadExtension(targetName: Self.target, registry: registry, limits: CopyLimits(chunkSize: chunkSize))
        device = SCSITargetDevice(configuration: TargetDeviceConfiguration(targetName: Self.target, logicalUnits: units),
                                  stores: stores, extensions: [copy])
        copy.register(device: device)
    }

    func run(_ cdb: [UInt8], lun: UInt16 = 0, dataOut: [UInt8]? = nil, edtl: Int = 4096) -> SCSIResponse {
        let command = SCSICommand(lunField: UInt64(lun) << 48, cdb: cdb, expectedDataTransferLength: dataOut?.count ?? edtl,
                                  direction: dataOut != nil ? .fromInitiator : .toInitiator, nexus: nexus)
        switch device.prepare(command) {
        case .complete(let response):
            return response
        case .ready(let prepared):
            return device.execute(prepared, dataOut: dataOut.map { ByteBuffer(bytes: $0) })
        }
    }

    func naa(lun: UInt16) -> [UInt8] {
        let page = run([0x12, 0x01, 0x83, 0x01, 0x00, 0x00], lun: lun).dataIn.map { Array($0.readableBytesView) } ?? []
        return Designator.parseList(page).first { $0.type == 3 }?.value ?? []
    }

    static func xcopyCDB(_ list: [UInt8], serviceAction: UInt8 = 0) -> [UInt8] {
        let n = UInt32(list.count)
        return [0x83, serviceAction, 0, 0, 0, 0, 0, 0, 0, 0, UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF),
                UInt8(n & 0xFF), 0, 0]
    }
}

extension SCSIResponse {
    var bytes: [UInt8] { dataIn.map { Array($0.readableBytesView) } ?? [] }
}

@Suite("Copy offload in a SCSI device")
struct DeviceTests {
    @Test("3PC in standard INQUIRY; VPD 0x00 lists 0x8F; the page header frames the descriptors")
    func inquiry() {
        let f = DeviceFixture()
        #expect(f.run([0x12, 0, 0, 0, 96, 0]).bytes[5] & 0x08 == 0x08)
        #expect(f.run([0x12, 1, 0x00, 0, 255, 0]).bytes.contains(0x8F))
        let page = f.run([0x12, 1, 0x8F, 0x04, 0x00, 0]).bytes
        #expect(Array(page[0..<2]) == [0x00, 0x8F])
        #expect(Int(page[2]) << 8 | Int(page[3]) == page.count - 4)
        #expect(Array(page[4...]) == f.copy.manager.thirdPartyCopyDescriptors())
    }

    @Test("Each LU is registered with the designators its VPD 0x83 reports")
    func registry() throws {
        let f = DeviceFixture()
        let identity = LogicalUnitConfiguration.derivedIdentity(targetName: DeviceFixture.target, lun: 1)
        let unit = try #require(f.registry.unit(CopyUnitID(targetName: DeviceFixture.target, lun: 1)))
        #expect(unit.designators.contains(Designator(codeSet: 1, association: 0, type: 3, value: identity.naa)))
        #expect(unit.designators.contains { $0.type == 1 })  // T10 vendor ID
        #expect(unit.blockCount == 2048 && unit.blockSize == 512)
    }

    @Test("EXTENDED COPY through the device, then RECEIVE COPY STATUS (LID1)")
    func copyThroughDevice() throws {
        let f = DeviceFixture()
        let data = pattern(64 * 512, seed: 9)
        try fill(f.stores[0]!, data, at: 512)
        let list = Lists.lid1(listID: 5, cscds: [Lists.cscd(f.naa(lun: 1))],
                              segments: [Lists.b2b(source: 0xFFFF, destination: 0, blocks: 64, sourceLBA: 1, destinationLBA: 3)])
        #expect(f.run(DeviceFixture.xcopyCDB(list), dataOut: list).status == .good)
        #expect(try contents(f.stores[1]!, at: 3 * 512, count: data.count) == data)
        let status = f.run([0x84, 0x00, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0])
        #expect(status.status == .good && status.bytes == [0, 0, 0, 8, 1, 0, 1, 0, 0, 0, 0x80, 0])
    }

    @Test("LID4 through the device; COPY STATUS (LID4) with the 32-bit list ID")
    func lid4ThroughDevice() {
        let f = DeviceFixture()
        let list = Lists.lid4(listID: 0x0102_0304, cscds: [Lists.cscd(f.naa(lun: 0)), Lists.cscd(f.naa(lun: 1))],
                              segments: [Lists.b2b(blocks: 8, sourceLBA: 0, destinationLBA: 0)])
        #expect(f.run(DeviceFixture.xcopyCDB(list, serviceAction: 1), dataOut: list).status == .good)
        let status = f.run([0x84, 0x05, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0])
        #expect(status.status == .good && status.bytes.count == 32 && status.bytes[4] == 0x01 && status.bytes[5] == 0x01)
    }

    @Test("PARAMETER LIST LENGTH 0 is GOOD; reserved CDB bits, RECEIVE COPY DATA and unknown list IDs are 24/00")
    func cdbChecks() {
        let f = DeviceFixture()
        #expect(f.run(DeviceFixture.xcopyCDB([]), edtl: 0).status == .good)
        var cdb = DeviceFixture.xcopyCDB([1, 2, 3])
        cdb[2] = 0x01
        #expect(f.run(cdb, dataOut: [1, 2, 3]).sense == fixedSense(0x05, 0x24, 0x00, field: 2, bit: 0, cd: true))
        #expect(f.run([0x84, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]).sense
                == fixedSense(0x05, 0x24, 0x00, field: 1, bit: 4, cd: true))
        #expect(f.run([0x84, 0x00, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0]).sense
                == fixedSense(0x05, 0x24, 0x00, field: 2, cd: true))
        #expect(f.run([0x83, 0x1C, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).sense
                == fixedSense(0x05, 0x24, 0x00, field: 2, cd: true))
    }

    @Test("A parameter list error answers CHECK CONDITION with the field pointer through the device")
    func parameterErrorThroughDevice() {
        let f = DeviceFixture()
        let list = Lists.lid1(cscds: [Lists.cscd(type: 0xE0)], segments: [Lists.b2b(blocks: 1, sourceLBA: 0, destinationLBA: 0)])
        #expect(f.run(DeviceFixture.xcopyCDB(list), dataOut: list).sense == fixedSense(0x05, 0x26, 0x07, field: 16))
    }

    @Test("LOGICAL UNIT RESET stops a running copy (no list ID) at its next chunk: TASK ABORTED")
    func resetStopsCopy() async throws {
        let gated = GatedStore(byteCount: 1 << 20)
        let f = DeviceFixture(store0: gated, chunkSize: 4096)
        let list = Lists.lid1(listID: 0, usage: 3, cscds: [Lists.cscd(f.naa(lun: 1))],
                              segments: [Lists.b2b(source: 0xFFFF, destination: 0, blocks: 512, sourceLBA: 0, destinationLBA: 0)])
        let task = Task.detached { f.run(DeviceFixture.xcopyCDB(list), dataOut: list).status }
        while gated.reads.load(ordering: .relaxed) < 2 { await Task.yield() }
        #expect(f.copy.manager.runningCopies == 1)
        #expect(f.device.taskManagement(.logicalUnitReset, lunField: 0, nexus: f.nexus) == .functionComplete)
        gated.open()
        #expect(await task.value == .taskAborted)
        #expect(f.copy.manager.runningCopies == 0)
    }
}

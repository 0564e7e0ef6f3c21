import BlockStores
import CopyOffload
import Foundation
import NIOCore
import SCSI
import Synchronization
import Testing

func pattern(_ count: Int, seed: UInt8 = 1) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
}

func fill(_ store: any BlockStore, _ bytes: [UInt8], at offset: UInt64 = 0) throws {
    try bytes.withUnsafeBytes { try store.write($0, at: offset, durable: false) }
}

func contents(_ store: any BlockStore, at offset: UInt64 = 0, count: Int) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    try out.withUnsafeMutableBytes { try store.read(into: $0, at: offset) }
    return out
}

func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "xcopy-tests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@Suite("Copy mover")
struct CopyMoverTests {
    @Test("Memory to memory in chunks smaller than the copy")
    func memory() throws {
        let a = MemoryBlockStore(byteCount: 1 << 20)
        let b = MemoryBlockStore(byteCount: 1 << 20)
        let data = pattern(300_000)
        try fill(a, data, at: 4096)
        var reports: [UInt64] = []
        let moved = try CopyMover(chunkSize: 65536).move(from: a, at: 4096, to: b, at: 8192, length: 300_000,
                                                         progress: { reports.append($0) })
        #expect(moved == 300_000)
        #expect(reports.count == 5 && reports.last == 300_000)
        #expect(try contents(b, at: 8192, count: 300_000) == data)
    }

    @Test("Overlapping ranges of one store copy as if through an unbounded buffer, both directions")
    func overlap() throws {
        for (from, to) in [(UInt64(0), UInt64(10_000)), (UInt64(10_000), UInt64(0))] {
            let store = MemoryBlockStore(byteCount: 1 << 20)
            let data = pattern(100_000)
            try fill(store, data, at: from)
            try CopyMover(chunkSize: 4096).move(from: store, at: from, to: store, at: to, length: 100_000)
            #expect(try contents(store, at: to, count: 100_000) == data)
        }
    }

    @Test("Stops between chunks when asked, reporting what was moved")
    func stops() throws {
        let a = MemoryBlockStore(byteCount: 1 << 20)
        let b = MemoryBlockStore(byteCount: 1 << 20)
        var chunks = 0
        #expect(throws: MoveError.stopped(moved: 3 * 4096)) {
            try CopyMover(chunkSize: 4096).move(from: a, at: 0, to: b, at: 0, length: 1 << 20,
                                                shouldStop: { chunks += 1; return chunks > 3 })
        }
    }

    @Test("Between two files: copy_file_range (or its fallback) copies exactly the range")
    func files() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let a = try FileBlockStore.open(path: directory + "/a.img", byteCount: 8 << 20, createIfMissing: true, writeThrough: false)
        let b = try FileBlockStore.open(path: directory + "/b.img", byteCount: 8 << 20, createIfMissing: true, writeThrough: false)
        let data = pattern(3 << 20, seed: 7)
        try fill(a, data, at: 512)
        try fill(b, [UInt8](repeating: 0xEE, count: 8 << 20))
        let moved = try CopyMover(chunkSize: 1 << 20, kernelChunkSize: 1 << 20).move(from: a, at: 512, to: b, at: 4096,
                                                                                    length: UInt64(data.count))
        #expect(moved == UInt64(data.count))
        #expect(try contents(b, at: 4096, count: data.count) == data)
        #expect(try contents(b, at: 0, count: 4096) == [UInt8](repeating: 0xEE, count: 4096))
        #expect(try contents(b, at: 4096 + UInt64(data.count), count: 4096) == [UInt8](repeating: 0xEE, count: 4096))
        // Within one file, overlapping: the buffer path.
        try CopyMover(chunkSize: 1 << 20).move(from: a, at: 512, to: a, at: 512 + 4096, length: UInt64(data.count))
        #expect(try contents(a, at: 512 + 4096, count: data.count) == data)
    }
}

/// Two logical units registered with designators; a manager with an injected clock.
struct ManagerFixture {
    let registry = CopyUnitRegistry()
    let a = MemoryBlockStore(byteCount: 1 << 20)
    let b = MemoryBlockStore(byteCount: 1 << 20)
    let manager: CopyManager
    let unitA = CopyUnitID(targetName: "iqn.a", lun: 0)
    let unitB = CopyUnitID(targetName: "iqn.b", lun: 3)
    let nexus = ITNexus(initiatorPortName: "iqn.host,i,0x1", targetPortName: "iqn.a,t,0x0001", id: 1)

    init(limits: CopyLimits = CopyLimits(), readOnlyB: Bool = false) {
        registry.register(CopyUnit(id: unitA, designators: [Designator(codeSet: 1, association: 0, type: 3, value: Lists.naa)],
                                   blockSize: 512, blockCount: 2048, store: a))
        registry.register(CopyUnit(id: unitB, designators: [Designator(codeSet: 1, association: 0, type: 3, value: Lists.naaOther),
                                                             Designator(codeSet: 2, association: 0, type: 1, value: Array("SWIFT   X".utf8))],
                                   blockSize: 512, blockCount: 2048, store: b, isReadOnly: readOnlyB))
        let clock = NIODeadline.uptimeNanoseconds(5_000_000_000)
        manager = CopyManager(registry: registry, limits: limits, clock: { clock })
    }

    func run(_ list: [UInt8], format: ExtendedCopyFormat = .lid1) -> CopyError? {
        do {
            try manager.extendedCopy(list, format: format, unit: unitA, nexus: nexus)
            return nil
        } catch {
            return error
        }
    }
}

@Suite("Copy manager")
struct CopyManagerTests {
    @Test("LID1 between two LUs of different targets, found by NAA designator; status held and read")
    func copyBetweenTargets() throws {
        let f = ManagerFixture()
        let data = pattern(64 * 512)
        try fill(f.a, data, at: 10 * 512)
        #expect(f.run(Lists.lid1(listID: 9, cscds: [Lists.cscd(), Lists.cscd(Lists.naaOther)],
                                 segments: [Lists.b2b(blocks: 64, sourceLBA: 10, destinationLBA: 100)])) == nil)
        #expect(try contents(f.b, at: 100 * 512, count: data.count) == data)
        let status = try f.manager.receiveCopyResults(serviceAction: 0x00, listID: 9, unit: f.unitA, nexus: f.nexus)
        #expect(status == [0, 0, 0, 8, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x80, 0x00])
        #expect(throws: CopyError.invalidFieldInCDB(byte: 2, bit: nil)) {
            try f.manager.receiveCopyResults(serviceAction: 0x00, listID: 9, unit: f.unitA, nexus: f.nexus)
        }
        #expect(f.registry.unit(f.unitB)?.statistics.bytesWritten == UInt64(data.count))
        #expect(f.registry.unit(f.unitA)?.statistics.operations == 1)
    }

    @Test("CSCD ID 0xFFFF is the receiving LU; 0x0A copies bytes at offsets; a T10 designator matches too")
    func receivingUnitAndByteOffsets() throws {
        let f = ManagerFixture()
        let data = pattern(1000)
        try fill(f.a, data, at: 512 + 7)
        var t10 = Lists.cscd(Array("SWIFT   X".utf8))
        t10[4] = 0x02; t10[5] = 0x01
        #expect(f.run(Lists.lid4(cscds: [t10], segments: [Lists.b2bBytes(source: 0xFFFF, destination: 0, bytes: 1000, sourceLBA: 1,
                                                                          destinationLBA: 2, sourceOffset: 7, destinationOffset: 3)]),
                      format: .lid4) == nil)
        #expect(try contents(f.b, at: 1024 + 3, count: 1000) == data)
        let status = try f.manager.receiveCopyResults(serviceAction: 0x05, listID: 0x1234, unit: f.unitA, nexus: f.nexus)
        #expect(status.count == 32 && status[4] == 0x01 && status[5] == 0x01 && status[12] == 0x00)
        #expect(Array(status[16..<24]) == [0, 0, 0, 0, 0, 0, 0x03, 0xE8])
    }

    @Test("A CSCD index past the list: COPY ABORTED 08/04, segment number and pointer to the index field")
    func indexPastList() throws {
        let f = ManagerFixture()
        let error = f.run(Lists.lid1(cscds: [Lists.cscd()], segments: [Lists.b2b(source: 0, destination: 0, blocks: 1, sourceLBA: 0, destinationLBA: 8),
                                                                        Lists.b2b(source: 0, destination: 1, blocks: 1, sourceLBA: 0, destinationLBA: 0)]))
        #expect(error?.sense?.encodeFixed() == fixedSense(0x0A, 0x08, 0x04, csi: 1, field: 48 + 28 + 6))
    }

    @Test("A CSCD naming no LU here: COPY ABORTED 08/04 pointing at its designator")
    func unknownDesignator() throws {
        let f = ManagerFixture()
        let error = f.run(Lists.lid1(cscds: [Lists.cscd([0x61, 1, 2, 3, 4, 5, 6, 7])],
                                     segments: [Lists.b2b(source: 0, destination: 0, blocks: 1, sourceLBA: 0, destinationLBA: 0)]))
        #expect(error?.sense?.encodeFixed() == fixedSense(0x0A, 0x08, 0x04, csi: 0, field: 20))
    }

    @Test("LBAs past the end in a later segment: COPY ABORTED, and no earlier segment was copied")
    func noPartialCopy() throws {
        let f = ManagerFixture()
        try fill(f.a, pattern(512))
        let error = f.run(Lists.lid1(cscds: [Lists.cscd(), Lists.cscd(Lists.naaOther)],
                                     segments: [Lists.b2b(blocks: 1, sourceLBA: 0, destinationLBA: 0),
                                                Lists.b2b(blocks: 2048, sourceLBA: 0, destinationLBA: 2047)]))
        #expect(error?.sense?.encodeFixed() == fixedSense(0x0A, 0x00, 0x00, csi: 1, field: 16 + 64 + 28 + 20))
        #expect(try contents(f.b, count: 512) == [UInt8](repeating: 0, count: 512))
        #expect(f.registry.unit(f.unitA)?.statistics.failedOperations == 1)
    }

    @Test("A read-only destination: COPY ABORTED, WRITE PROTECTED")
    func readOnlyDestination() throws {
        let f = ManagerFixture(readOnlyB: true)
        let error = f.run(Lists.lid1(cscds: [Lists.cscd(), Lists.cscd(Lists.naaOther)],
                                     segments: [Lists.b2b(blocks: 1, sourceLBA: 0, destinationLBA: 0)]))
        #expect(error?.sense?.encodeFixed() == fixedSense(0x0A, 0x27, 0x00, csi: 0, field: 86))
    }

    @Test("Failure details of a held failed copy carry its sense data")
    func failureDetails() throws {
        let f = ManagerFixture()
        _ = f.run(Lists.lid1(listID: 4, cscds: [Lists.cscd()], segments: [Lists.b2b(source: 0, destination: 5, blocks: 1, sourceLBA: 0, destinationLBA: 0)]))
        let status = try f.manager.receiveCopyResults(serviceAction: 0x00, listID: 4, unit: f.unitA, nexus: f.nexus)
        #expect(status[4] == 0x02)
        let details = try f.manager.receiveCopyResults(serviceAction: 0x04, listID: 4, unit: f.unitA, nexus: f.nexus)
        #expect(details.count == 78)
        #expect(Array(details[0..<4]) == [0, 0, 0, 74])
        #expect(details[56] == 0x02 && details[59] == 18)
        #expect(Array(details[60...]) == fixedSense(0x0A, 0x08, 0x04, csi: 0, field: 54))
    }

    @Test("Operating parameters: limits and implemented descriptors")
    func operatingParameters() throws {
        let f = ManagerFixture()
        let data = try f.manager.receiveCopyResults(serviceAction: 0x03, listID: 0, unit: f.unitA, nexus: f.nexus)
        var expected = [UInt8](repeating: 0, count: 48)
        expected[3] = 44; expected[4] = 1
        expected[9] = 32; expected[11] = 64
        expected[14] = 0x08  // 2048
        expected[16] = 0x10  // 256 MiB
        expected[35] = 64; expected[36] = 64
        expected[43] = 4
        expected[44] = 0x02; expected[45] = 0x07; expected[46] = 0x0A; expected[47] = 0xE4
        #expect(data == expected)
    }

    @Test("VPD 0x8F descriptors are whole multiples of four bytes and list the commands")
    func vpd() {
        let body = ManagerFixture().manager.thirdPartyCopyDescriptors()
        var offset = 0
        var types: [UInt16] = []
        while offset < body.count {
            let type = UInt16(body[offset]) << 8 | UInt16(body[offset + 1])
            let length = Int(body[offset + 2]) << 8 | Int(body[offset + 3])
            #expect((length + 4) % 4 == 0)
            types.append(type)
            offset += 4 + length
        }
        #expect(offset == body.count)
        #expect(types == [0x0000, 0x0001, 0x0004, 0x0008, 0x000C, 0x0106, 0x0108, 0x8001])
        #expect(Array(body[36..<56]) == [0x00, 0x01, 0x00, 0x10, 15, 0x83, 5, 0x00, 0x01, 0x10, 0x11, 0x1C,
                                         0x84, 6, 0x00, 0x03, 0x04, 0x05, 0x07, 0x08])
    }

    @Test("COPY OPERATION ABORT stops a running copy between chunks: TASK ABORTED, status 0x60")
    func abortRunningCopy() async throws {
        // A store whose reads block until released, so the copy is observably running.
        let f = ManagerFixture(limits: CopyLimits(chunkSize: 4096))
        let list = Lists.lid1(listID: 2, cscds: [Lists.cscd(), Lists.cscd(Lists.naaOther)],
                              segments: [Lists.b2b(blocks: 2000, sourceLBA: 0, destinationLBA: 0)])
        let started = Atomic<Bool>(false)
        let task = Task.detached { () -> CopyError? in
            started.store(true, ordering: .releasing)
            return f.run(list)
        }
        // Abort as soon as the copy is registered (it may also finish first on a fast machine).
        var aborted = false
        for _ in 0..<100_000 {
            if (try? f.manager.abort(listID: 2, unit: f.unitA, nexus: f.nexus)) != nil { aborted = true; break }
            if !started.load(ordering: .acquiring) { await Task.yield() }
        }
        let error = await task.value
        if aborted {
            #expect(error == .aborted(segment: 0))
            #expect(error?.scsiError.status == .taskAborted)
            let status = try f.manager.receiveCopyResults(serviceAction: 0x05, listID: 2, unit: f.unitA, nexus: f.nexus)
            #expect(status[5] == 0x60)
        } else {
            #expect(error == nil)
        }
    }
}

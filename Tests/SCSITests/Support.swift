import BlockStores
import Foundation
import NIOCore
@testable import SCSI

#if canImport(Glibc)
import Glibc
#endif

let targetName = "iqn.2026-11.org.example:disk"

func nexus(_ id: UInt64 = 1, initiator: String = "iqn.2026-11.org.example:host") -> ITNexus {
    ITNexus(initiatorPortName: initiator + ",i,0x00023d00000\(id)", targetPortName: targetName + ",t,0x0001", id: id)
}

func lunField(_ lun: UInt16) -> UInt64 {
    lun < 256 ? UInt64(lun) << 48 : (UInt64(0x4000 | lun) << 48)
}

struct Harness {
    let device: SCSITargetDevice
    let store: MemoryBlockStore
    let configuration: LogicalUnitConfiguration

    init(blockSize: Int = 512, blockCount: UInt64 = 2048, thin: Bool = false, readOnly: Bool = false,
         extraLUNs: [UInt16] = [], maximumTransferBlocks: UInt32? = nil, readWrite32: Bool = false) {
        var lu = LogicalUnitConfiguration.derived(targetName: targetName, number: 0, blockSize: blockSize,
                                                  blockCount: blockCount)
        lu.thinProvisioned = thin
        lu.readOnly = readOnly
        lu.nonRotational = true
        lu.offersReadWrite32 = readWrite32
        if let maximumTransferBlocks { lu.maximumTransferBlocks = maximumTransferBlocks }
        self.configuration = lu
        self.store = MemoryBlockStore(byteCount: UInt64(blockSize) * blockCount)
        var units = [lu]
        var stores: [UInt16: any BlockStore] = [0: self.store]
        for number in extraLUNs {
            units.append(.derived(targetName: targetName, number: number, blockSize: blockSize, blockCount: 64))
            stores[number] = MemoryBlockStore(byteCount: UInt64(blockSize) * 64)
        }
        self.device = SCSITargetDevice(configuration: TargetDeviceConfiguration(targetName: targetName,
                                                                               targetPortGroupTag: 1,
                                                                               logicalUnits: units),
                                       stores: stores)
    }

    /// Runs a command through prepare and (if needed) execute, the way a transport would.
    @discardableResult
    func run(_ cdb: [UInt8], lun: UInt16 = 0, edtl: Int? = nil, dataOut: [UInt8]? = nil,
             nexus: ITNexus = nexus()) -> SCSIResponse {
        let length = edtl ?? dataOut?.count ?? 4096
        let direction: DataDirection = dataOut != nil ? .fromInitiator : (length > 0 ? .toInitiator : .none)
        var padded = cdb
        if padded.count < 16 { padded += [UInt8](repeating: 0, count: 16 - padded.count) }
        let command = SCSICommand(lunField: lunField(lun), cdb: padded, expectedDataTransferLength: length,
                                  direction: direction, nexus: nexus)
        switch device.prepare(command) {
        case .complete(let response):
            return response
        case .ready(let prepared):
            var buffer: ByteBuffer?
            if prepared.dataOutLength > 0 {
                var bytes = dataOut ?? []
                bytes = Array(bytes.prefix(prepared.dataOutLength))
                buffer = ByteBuffer(bytes: bytes)
            }
            return device.execute(prepared, dataOut: buffer)
        }
    }
}

extension SCSIResponse {
    var data: [UInt8] { self.dataIn.map { Array($0.readableBytesView) } ?? [] }
    var senseKey: UInt8? { self.sense.count > 2 ? self.sense[0] == 0x72 ? self.sense[1] : self.sense[2] & 0x0F : nil }
    var asc: (UInt8, UInt8)? {
        if self.sense.first == 0x72, self.sense.count >= 4 { return (self.sense[2], self.sense[3]) }
        guard self.sense.count >= 14 else { return nil }
        return (self.sense[12], self.sense[13])
    }
    func isCheckCondition(_ key: UInt8, _ asc: UInt8, _ ascq: UInt8) -> Bool {
        self.status == .checkCondition && self.senseKey == key && self.asc.map { $0 == (asc, ascq) } == true
    }
}

func be32(_ value: UInt32) -> [UInt8] {
    [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
}

func be64(_ value: UInt64) -> [UInt8] {
    be32(UInt32(value >> 32)) + be32(UInt32(value & 0xFFFF_FFFF))
}

func pattern(_ count: Int, seed: UInt8 = 1) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }
}

func makeTemporaryDirectory() -> String {
    var template = Array("/tmp/scsitests.XXXXXX".utf8CString)
    let result = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(result != nil)
    return String(cString: result!)
}

/// Removes a directory from `makeTemporaryDirectory` with the files a test left in it
/// (tests here create plain files only, no subdirectories).
func removeTemporaryDirectory(_ directory: String) {
    if let entries = try? FileManager.default.contentsOfDirectory(atPath: directory) {
        for entry in entries { unlink(directory + "/" + entry) }
    }
    rmdir(directory)
}

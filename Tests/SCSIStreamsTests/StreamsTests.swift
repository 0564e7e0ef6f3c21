import BlockStores
import Foundation
import NIOCore
import SCSI
@testable import SCSIStreams
import Testing

let targetName = "iqn.2026-11.org.example:streams"
let samples = "/work/shared/reference/samples"

func nexus(_ id: UInt64 = 1) -> ITNexus {
    ITNexus(initiatorPortName: "iqn.2026-11.org.example:host,i,0x00023d00000\(id)",
            targetPortName: targetName + ",t,0x0001", id: id)
}

/// The sample files: hex bytes separated by white space.
func sample(_ name: String) throws -> [UInt8] {
    let text = try String(contentsOfFile: samples + "/" + name, encoding: .utf8)
    return text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map { UInt8($0, radix: 16)! }
}

struct Harness {
    let device: SCSITargetDevice
    let streams: StreamsExtension
    let store: MemoryBlockStore

    init(_ settings: StreamSettings = StreamSettings(writeStream32: true), blockCount: UInt64 = 2048,
         flash: FlashModelSettings? = nil) {
        let lu = LogicalUnitConfiguration.derived(targetName: targetName, number: 0, blockCount: blockCount)
        self.store = MemoryBlockStore(byteCount: 512 * blockCount)
        let model = flash.map { try! FlashModel(settings: $0, blockCount: blockCount, blockSize: 512) }
        self.streams = StreamsExtension(settings: [0: settings], flash: model.map { [0: $0] } ?? [:])
        self.device = SCSITargetDevice(
            configuration: TargetDeviceConfiguration(targetName: targetName, logicalUnits: [lu]),
            stores: [0: self.store], extensions: [self.streams])
    }

    @discardableResult
    func run(_ cdb: [UInt8], edtl: Int? = nil, dataOut: [UInt8]? = nil, nexus: ITNexus = nexus()) -> SCSIResponse {
        let length = edtl ?? dataOut?.count ?? 4096
        let direction: DataDirection = dataOut != nil ? .fromInitiator : (length > 0 ? .toInitiator : .none)
        var padded = cdb
        if padded.count < 16 { padded += [UInt8](repeating: 0, count: 16 - padded.count) }
        let command = SCSICommand(lunField: 0, cdb: padded, expectedDataTransferLength: length,
                                  direction: direction, nexus: nexus)
        switch self.device.prepare(command) {
        case .complete(let response):
            return response
        case .ready(let prepared):
            let buffer = prepared.dataOutLength > 0 ? ByteBuffer(bytes: Array((dataOut ?? []).prefix(prepared.dataOutLength))) : nil
            return self.device.execute(prepared, dataOut: buffer)
        }
    }
}

extension SCSIResponse {
    var data: [UInt8] { self.dataIn.map { Array($0.readableBytesView) } ?? [] }
    /// (sense key, ASC, ASCQ) of fixed-format sense.
    var senseTriple: [UInt8] { self.sense.count >= 14 ? [self.sense[2] & 0x0F, self.sense[12], self.sense[13]] : [] }
}

//
// REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35), generated from the command table:
// what is advertised (CDB USAGE DATA) is exactly what the validator enforces.
//

extension SCSITargetDevice {
    static func reportSupportedOperationCodes(_ context: CommandContext) throws -> CommandOutcome {
        let cdb = context.cdb
        let unit = context.lu
        let includeTimeouts = cdb[2] & 0x80 != 0  // RCTD
        let reportingOptions = cdb[2] & 0x07
        let requestedOpcode = cdb[3]
        let requestedServiceAction = cdb.bigEndian16(at: 4)
        let allocationLength = Int(cdb.bigEndian32(at: 6))
        let table = context.device.table
        let offered = table.all.filter { $0.isOffered(unit.configuration) }

        var data: [UInt8] = []
        switch reportingOptions {
        case 0b000:
            for descriptor in offered {
                data.append(descriptor.opcode)
                data.append(0)
                data.appendBigEndian16(descriptor.serviceAction ?? 0)
                data.append(0)
                data.append((includeTimeouts ? 0x02 : 0x00) | (descriptor.serviceAction != nil ? 0x01 : 0x00))
                data.appendBigEndian16(UInt16(descriptor.cdbLength))
                if includeTimeouts { data += timeoutsDescriptor(descriptor) }
            }
            var header: [UInt8] = []
            header.appendBigEndian32(UInt32(data.count))
            data = header + data
        case 0b001, 0b010, 0b011:
            let descriptor: CommandDescriptor?
            switch table.entry(forOpcode: requestedOpcode) {
            case nil:
                descriptor = nil
            case .single(let single)?:
                if reportingOptions == 0b010 { throw SCSIError.invalidFieldInCDB(byte: 2, bit: 2) }
                descriptor = single
            case .serviceActions(_, let actions)?:
                if reportingOptions == 0b001 { throw SCSIError.invalidFieldInCDB(byte: 2, bit: 2) }
                descriptor = actions[requestedServiceAction]
            }
            if let descriptor, descriptor.isOffered(unit.configuration) {
                data = [0, (includeTimeouts ? 0x80 : 0x00) | 0b011]  // CTDP, SUPPORT = supported per standard
                data.appendBigEndian16(UInt16(descriptor.cdbLength))
                data += descriptor.usage
                if includeTimeouts { data += timeoutsDescriptor(descriptor) }
            } else {
                data = [0, 0b001, 0, 0]  // SUPPORT = not supported
            }
        default:
            throw SCSIError.invalidFieldInCDB(byte: 2, bit: 2)
        }
        return .complete(.parameterData(data, allocationLength: allocationLength))
    }

    /// Command timeouts descriptor (SPC-4 §6.35.4), 12 bytes.
    static func timeoutsDescriptor(_ descriptor: CommandDescriptor) -> [UInt8] {
        var bytes: [UInt8] = [0x00, 0x0A, 0x00, 0x00]
        bytes.appendBigEndian32(descriptor.nominalTimeout)
        bytes.appendBigEndian32(descriptor.recommendedTimeout)
        return bytes
    }
}

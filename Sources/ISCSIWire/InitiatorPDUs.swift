//
// Typed views of the PDUs an initiator sends (RFC 7143 §11). Decoding checks only what
// the wire format fixes (lengths, AHS layout); protocol rules belong to the engine.
//
import NIOCore

public struct NOPOut: Sendable, Equatable {
    public var isImmediate: Bool
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var cmdSN: UInt32
    public var expStatSN: UInt32
    public var pingData: ByteBuffer
}

public struct SCSICommandRequest: Sendable, Equatable {
    public var isImmediate: Bool
    public var isFinal: Bool
    public var isRead: Bool
    public var isWrite: Bool
    /// SAM task attribute (bits 0–2 of byte 1).
    public var attribute: UInt8
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var expectedDataTransferLength: UInt32
    public var cmdSN: UInt32
    public var expStatSN: UInt32
    /// The whole CDB: the 16 bytes of the BHS followed by an extended-CDB AHS if present.
    public var cdb: [UInt8]
    /// Bidirectional read expected length, from an AHS of type 2.
    public var bidirectionalReadLength: UInt32?
    /// Immediate data.
    public var immediateData: ByteBuffer
}

public struct TaskManagementRequest: Sendable, Equatable {
    public var isImmediate: Bool
    public var function: UInt8
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var referencedTaskTag: UInt32
    public var cmdSN: UInt32
    public var expStatSN: UInt32
    public var refCmdSN: UInt32
    public var expDataSN: UInt32
}

public struct LoginRequest: Sendable, Equatable {
    public var transit: Bool
    public var `continue`: Bool
    public var currentStage: UInt8
    public var nextStage: UInt8
    public var versionMax: UInt8
    public var versionMin: UInt8
    /// 6-byte ISID as a 48-bit number.
    public var isid: UInt64
    public var tsih: UInt16
    public var initiatorTaskTag: UInt32
    public var cid: UInt16
    public var cmdSN: UInt32
    public var expStatSN: UInt32
    public var text: ByteBuffer
}

public struct TextRequest: Sendable, Equatable {
    public var isImmediate: Bool
    public var isFinal: Bool
    public var `continue`: Bool
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var cmdSN: UInt32
    public var expStatSN: UInt32
    public var text: ByteBuffer
}

public struct DataOut: Sendable, Equatable {
    public var isFinal: Bool
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var expStatSN: UInt32
    public var dataSN: UInt32
    public var bufferOffset: UInt32
    public var data: ByteBuffer
}

public struct LogoutRequest: Sendable, Equatable {
    public var isImmediate: Bool
    public var reason: UInt8
    public var initiatorTaskTag: UInt32
    public var cid: UInt16
    public var cmdSN: UInt32
    public var expStatSN: UInt32
}

public struct SNACKRequest: Sendable, Equatable {
    public var type: UInt8
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var expStatSN: UInt32
    public var begRun: UInt32
    public var runLength: UInt32
}

/// Errors in the format of a single PDU (not in the protocol sequence).
public enum PDUFormatError: Error, Sendable, Equatable {
    /// An opcode no initiator sends.
    case unknownOpcode(UInt8)
    /// The AHS does not parse (bad AHS length or type layout).
    case malformedAdditionalHeader
    /// Data is present in a PDU that must not carry data.
    case unexpectedData
}

/// A decoded initiator PDU.
public enum InitiatorPDU: Sendable, Equatable {
    case nopOut(NOPOut)
    case scsiCommand(SCSICommandRequest)
    case taskManagement(TaskManagementRequest)
    case login(LoginRequest)
    case text(TextRequest)
    case dataOut(DataOut)
    case logout(LogoutRequest)
    case snack(SNACKRequest)

    public init(decoding pdu: RawPDU) throws(PDUFormatError) {
        let h = pdu.header
        guard let opcode = InitiatorOpcode(rawValue: h.opcodeByte) else {
            throw .unknownOpcode(h.opcodeByte)
        }
        switch opcode {
        case .nopOut:
            self = .nopOut(NOPOut(
                isImmediate: h.isImmediate, lun: h.lun, initiatorTaskTag: h.initiatorTaskTag,
                targetTransferTag: h.u32(20), cmdSN: h.u32(24), expStatSN: h.u32(28), pingData: pdu.data))
        case .scsiCommand:
            var cdb = h.bytes.getBytes(at: h.bytes.readerIndex + 32, length: 16)!
            var bidi: UInt32? = nil
            var ahs = pdu.additionalHeader
            while ahs.readableBytes > 0 {
                guard let length = ahs.readInteger(as: UInt16.self), let type = ahs.readInteger(as: UInt8.self),
                      ahs.readableBytes >= Int(length)
                else { throw .malformedAdditionalHeader }
                // AHS length counts the type-specific bytes after the type byte (RFC 7143 §11.2.2).
                guard let body = ahs.readBytes(length: Int(length)) else { throw .malformedAdditionalHeader }
                let pad = (4 - (Int(length) + 3) % 4) % 4
                ahs.moveReaderIndex(forwardBy: min(pad, ahs.readableBytes))
                switch type {
                case 1:  // extended CDB: one reserved byte, then CDB bytes 16…
                    guard body.count >= 1 else { throw .malformedAdditionalHeader }
                    cdb.append(contentsOf: body.dropFirst())
                case 2:  // bidirectional read expected data transfer length
                    guard body.count == 5 else { throw .malformedAdditionalHeader }
                    bidi = UInt32(body[1]) << 24 | UInt32(body[2]) << 16 | UInt32(body[3]) << 8 | UInt32(body[4])
                default:
                    throw .malformedAdditionalHeader
                }
            }
            let flags = h.flags
            self = .scsiCommand(SCSICommandRequest(
                isImmediate: h.isImmediate, isFinal: flags & 0x80 != 0, isRead: flags & 0x40 != 0,
                isWrite: flags & 0x20 != 0, attribute: flags & 0x07, lun: h.lun,
                initiatorTaskTag: h.initiatorTaskTag, expectedDataTransferLength: h.u32(20),
                cmdSN: h.u32(24), expStatSN: h.u32(28), cdb: cdb, bidirectionalReadLength: bidi,
                immediateData: pdu.data))
        case .taskManagementRequest:
            self = .taskManagement(TaskManagementRequest(
                isImmediate: h.isImmediate, function: h.flags & 0x7F, lun: h.lun,
                initiatorTaskTag: h.initiatorTaskTag, referencedTaskTag: h.u32(20), cmdSN: h.u32(24),
                expStatSN: h.u32(28), refCmdSN: h.u32(32), expDataSN: h.u32(36)))
        case .loginRequest:
            let flags = h.flags
            let isid = UInt64(h.u32(8)) << 16 | UInt64(h.u16(12))
            self = .login(LoginRequest(
                transit: flags & 0x80 != 0, continue: flags & 0x40 != 0, currentStage: (flags >> 2) & 0x03,
                nextStage: flags & 0x03, versionMax: h.byte(2), versionMin: h.byte(3), isid: isid,
                tsih: h.u16(14), initiatorTaskTag: h.initiatorTaskTag, cid: h.u16(20), cmdSN: h.u32(24),
                expStatSN: h.u32(28), text: pdu.data))
        case .textRequest:
            self = .text(TextRequest(
                isImmediate: h.isImmediate, isFinal: h.flags & 0x80 != 0, continue: h.flags & 0x40 != 0,
                lun: h.lun, initiatorTaskTag: h.initiatorTaskTag, targetTransferTag: h.u32(20),
                cmdSN: h.u32(24), expStatSN: h.u32(28), text: pdu.data))
        case .dataOut:
            self = .dataOut(DataOut(
                isFinal: h.flags & 0x80 != 0, lun: h.lun, initiatorTaskTag: h.initiatorTaskTag,
                targetTransferTag: h.u32(20), expStatSN: h.u32(28), dataSN: h.u32(36), bufferOffset: h.u32(40),
                data: pdu.data))
        case .logoutRequest:
            guard pdu.data.readableBytes == 0 else { throw .unexpectedData }
            self = .logout(LogoutRequest(
                isImmediate: h.isImmediate, reason: h.flags & 0x7F, initiatorTaskTag: h.initiatorTaskTag,
                cid: h.u16(20), cmdSN: h.u32(24), expStatSN: h.u32(28)))
        case .snackRequest:
            self = .snack(SNACKRequest(
                type: h.flags & 0x0F, initiatorTaskTag: h.initiatorTaskTag, targetTransferTag: h.u32(20),
                expStatSN: h.u32(28), begRun: h.u32(40), runLength: h.u32(44)))
        }
    }
}

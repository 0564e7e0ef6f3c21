//
// The PDUs a target sends (RFC 7143 §11), as values that encode into a BHS plus data.
// Sequence numbers are plain fields: the engine fills them when it emits the PDU.
//
import NIOCore

/// A target PDU that carries StatSN, ExpCmdSN and MaxCmdSN (at BHS bytes 24, 28, 32).
public protocol SequenceNumbered {
    var statSN: UInt32 { get set }
    var expCmdSN: UInt32 { get set }
    var maxCmdSN: UInt32 { get set }
}

extension BasicHeaderSegment {
    /// StatSN, ExpCmdSN and MaxCmdSN at their common offsets (RFC 7143 §11: bytes 24–35).
    mutating func setSequence(_ p: some SequenceNumbered, includingStatSN: Bool = true) {
        if includingStatSN { set(24, p.statSN) }
        set(28, p.expCmdSN)
        set(32, p.maxCmdSN)
    }
}

public struct NOPIn: Sendable, Equatable {
    public var lun: UInt64 = 0
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var statSN: UInt32 = 0
    public var expCmdSN: UInt32 = 0
    public var maxCmdSN: UInt32 = 0
    public var pingData: ByteBuffer = ByteBuffer()

    public init(lun: UInt64 = 0, initiatorTaskTag: UInt32, targetTransferTag: UInt32, pingData: ByteBuffer = ByteBuffer()) {
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.targetTransferTag = targetTransferTag
        self.pingData = pingData
    }
}

/// Residual flags shared by SCSI Response and Data-In.
public enum Residual: Sendable, Equatable {
    case none
    case overflow(UInt32)
    case underflow(UInt32)

    var flagBits: UInt8 {
        switch self {
        case .none: 0
        case .overflow: 0x04
        case .underflow: 0x02
        }
    }
    var count: UInt32 {
        switch self {
        case .none: 0
        case .overflow(let n), .underflow(let n): n
        }
    }
}

public struct SCSIResponsePDU: Sendable, Equatable {
    public var initiatorTaskTag: UInt32
    /// iSCSI response code: 0 = command completed at target, 1 = target failure.
    public var response: UInt8 = 0
    public var status: UInt8
    public var residual: Residual = .none
    public var statSN: UInt32 = 0
    public var expCmdSN: UInt32 = 0
    public var maxCmdSN: UInt32 = 0
    public var expDataSN: UInt32 = 0
    /// Sense data (without the 2-byte SenseLength prefix, which encoding adds).
    public var sense: [UInt8] = []

    public init(initiatorTaskTag: UInt32, status: UInt8, residual: Residual = .none, expDataSN: UInt32 = 0,
                sense: [UInt8] = []) {
        self.initiatorTaskTag = initiatorTaskTag
        self.status = status
        self.residual = residual
        self.expDataSN = expDataSN
        self.sense = sense
    }
}

public struct DataIn: Sendable, Equatable {
    public var lun: UInt64 = 0
    public var initiatorTaskTag: UInt32
    public var dataSN: UInt32
    public var bufferOffset: UInt32
    public var data: ByteBuffer
    /// Set on the last PDU of the sequence.
    public var isFinal: Bool
    /// Phase-collapsed status: set only on the final PDU, and then StatSN is meaningful.
    public var status: UInt8?
    public var residual: Residual = .none
    public var statSN: UInt32 = 0
    public var expCmdSN: UInt32 = 0
    public var maxCmdSN: UInt32 = 0

    public init(lun: UInt64, initiatorTaskTag: UInt32, dataSN: UInt32, bufferOffset: UInt32, data: ByteBuffer,
                isFinal: Bool, status: UInt8? = nil, residual: Residual = .none) {
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.dataSN = dataSN
        self.bufferOffset = bufferOffset
        self.data = data
        self.isFinal = isFinal
        self.status = status
        self.residual = residual
    }
}

public struct ReadyToTransfer: Sendable, Equatable {
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var statSN: UInt32 = 0
    public var expCmdSN: UInt32 = 0
    public var maxCmdSN: UInt32 = 0
    public var r2tSN: UInt32
    public var bufferOffset: UInt32
    public var desiredDataTransferLength: UInt32

    public init(lun: UInt64, initiatorTaskTag: UInt32, targetTransferTag: UInt32, r2tSN: UInt32,
                bufferOffset: UInt32, desiredDataTransferLength: UInt32) {
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.targetTransferTag = targetTransferTag
        self.r2tSN = r2tSN
        self.bufferOffset = bufferOffset
        self.desiredDataTransferLength = desiredDataTransferLength
    }
}

public struct TaskManagementResponse: Sendable, Equatable {
    public var initiatorTaskTag: UInt32
    public var response: UInt8
    public var statSN: UInt32 = 0
    public var expCmdSN: UInt32 = 0
    public var maxCmdSN: UInt32 = 0

    public init(initiatorTaskTag: UInt32, response: TaskManagementResponseCode) {
        self.initiatorTaskTag = initiatorTaskTag
        self.response = response.rawValue
    }
}

public struct LoginResponse: Sendable, Equatable {
    public var transit: Bool
    public var `continue`: Bool = false
    public var currentStage: UInt8
    public var nextStage: UInt8
    public var versionMax: UInt8 = 0
    public var versionActive: UInt8 = 0
    public var isid: UInt64
    public var tsih: UInt16
    public var initiatorTaskTag: UInt32
    public var statSN: UInt32 = 0
    public var expCmdSN: UInt32 = 0
    public var maxCmdSN: UInt32 = 0
    public var status: LoginStatus
    public var text: ByteBuffer

    public init(transit: Bool, currentStage: UInt8, nextStage: UInt8, isid: UInt64, tsih: UInt16,
                initiatorTaskTag: UInt32, status: LoginStatus, text: ByteBuffer) {
        self.transit = transit
        self.currentStage = currentStage
        self.nextStage = nextStage
        self.isid = isid
        self.tsih = tsih
        self.initiatorTaskTag = initiatorTaskTag
        self.status = status
        self.text = text
    }
}

public struct TextResponse: Sendable, Equatable {
    public var isFinal: Bool
    public var `continue`: Bool
    public var lun: UInt64 = 0
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var statSN: UInt32 = 0
    public var expCmdSN: UInt32 = 0
    public var maxCmdSN: UInt32 = 0
    public var text: ByteBuffer

    public init(isFinal: Bool, continue: Bool, lun: UInt64, initiatorTaskTag: UInt32, targetTransferTag: UInt32,
                text: ByteBuffer) {
        self.isFinal = isFinal
        self.continue = `continue`
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.targetTransferTag = targetTransferTag
        self.text = text
    }
}

public struct LogoutResponse: Sendable, Equatable {
    public var initiatorTaskTag: UInt32
    public var response: UInt8
    public var statSN: UInt32 = 0
    public var expCmdSN: UInt32 = 0
    public var maxCmdSN: UInt32 = 0
    public var time2Wait: UInt16 = 0
    public var time2Retain: UInt16 = 0

    public init(initiatorTaskTag: UInt32, response: UInt8) {
        self.initiatorTaskTag = initiatorTaskTag
        self.response = response
    }
}

public struct AsynchronousMessage: Sendable, Equatable {
    public var lun: UInt64 = 0
    public var statSN: UInt32 = 0
    public var expCmdSN: UInt32 = 0
    public var maxCmdSN: UInt32 = 0
    public var event: UInt8
    public var vendorCode: UInt8 = 0
    public var parameter1: UInt16 = 0
    public var parameter2: UInt16 = 0
    public var parameter3: UInt16 = 0
    public var data: ByteBuffer = ByteBuffer()

    public init(event: UInt8, parameter1: UInt16 = 0, parameter2: UInt16 = 0, parameter3: UInt16 = 0) {
        self.event = event
        self.parameter1 = parameter1
        self.parameter2 = parameter2
        self.parameter3 = parameter3
    }
}

public struct Reject: Sendable, Equatable {
    public var reason: RejectReason
    public var statSN: UInt32 = 0
    public var expCmdSN: UInt32 = 0
    public var maxCmdSN: UInt32 = 0
    public var dataSNOrR2TSN: UInt32 = 0
    /// The complete header of the rejected PDU.
    public var rejectedHeader: [UInt8]

    public init(reason: RejectReason, rejectedHeader: [UInt8]) {
        self.reason = reason
        self.rejectedHeader = rejectedHeader
    }
}

/// Any PDU a target sends.
public enum TargetPDU: Sendable, Equatable {
    case nopIn(NOPIn)
    case scsiResponse(SCSIResponsePDU)
    case taskManagementResponse(TaskManagementResponse)
    case loginResponse(LoginResponse)
    case textResponse(TextResponse)
    case dataIn(DataIn)
    case logoutResponse(LogoutResponse)
    case readyToTransfer(ReadyToTransfer)
    case asynchronousMessage(AsynchronousMessage)
    case reject(Reject)

    /// The header and the (unpadded) data segment.
    public func encoded(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> (BasicHeaderSegment, ByteBuffer) {
        switch self {
        case .nopIn(let p):
            var h = BasicHeaderSegment(opcode: TargetOpcode.nopIn.rawValue)
            h.set(1, UInt8(0x80))
            h.set(8, p.lun)
            h.set(16, p.initiatorTaskTag)
            h.set(20, p.targetTransferTag)
            h.setSequence(p)
            h.setDataSegmentLength(p.pingData.readableBytes)
            return (h, p.pingData)
        case .scsiResponse(let p):
            var h = BasicHeaderSegment(opcode: TargetOpcode.scsiResponse.rawValue)
            h.set(1, UInt8(0x80) | p.residual.flagBits)
            h.set(2, p.response)
            h.set(3, p.status)
            h.set(16, p.initiatorTaskTag)
            h.setSequence(p)
            h.set(36, p.expDataSN)
            h.set(44, p.residual.count)
            var data = ByteBuffer()
            if !p.sense.isEmpty {
                data = allocator.buffer(capacity: p.sense.count + 2)
                data.writeInteger(UInt16(p.sense.count))
                data.writeBytes(p.sense)
            }
            h.setDataSegmentLength(data.readableBytes)
            return (h, data)
        case .taskManagementResponse(let p):
            var h = BasicHeaderSegment(opcode: TargetOpcode.taskManagementResponse.rawValue)
            h.set(1, UInt8(0x80))
            h.set(2, p.response)
            h.set(16, p.initiatorTaskTag)
            h.setSequence(p)
            return (h, ByteBuffer())
        case .loginResponse(let p):
            var h = BasicHeaderSegment(opcode: TargetOpcode.loginResponse.rawValue)
            let transitBit: UInt8 = p.transit ? 0x80 : 0
            let continueBit: UInt8 = p.continue ? 0x40 : 0
            let stages: UInt8 = (p.currentStage & 3) << 2 | (p.nextStage & 3)
            h.set(1, transitBit | continueBit | stages)
            h.set(2, p.versionMax)
            h.set(3, p.versionActive)
            h.set(8, UInt32(truncatingIfNeeded: p.isid >> 16))
            h.set(12, UInt16(truncatingIfNeeded: p.isid))
            h.set(14, p.tsih)
            h.set(16, p.initiatorTaskTag)
            h.setSequence(p)
            h.set(36, p.status.statusClass)
            h.set(37, p.status.detail)
            h.setDataSegmentLength(p.text.readableBytes)
            return (h, p.text)
        case .textResponse(let p):
            var h = BasicHeaderSegment(opcode: TargetOpcode.textResponse.rawValue)
            let finalBit: UInt8 = p.isFinal ? 0x80 : 0
            let continueBit: UInt8 = p.continue ? 0x40 : 0
            h.set(1, finalBit | continueBit)
            h.set(8, p.lun)
            h.set(16, p.initiatorTaskTag)
            h.set(20, p.targetTransferTag)
            h.setSequence(p)
            h.setDataSegmentLength(p.text.readableBytes)
            return (h, p.text)
        case .dataIn(let p):
            var h = BasicHeaderSegment(opcode: TargetOpcode.dataIn.rawValue)
            var flags: UInt8 = p.isFinal ? 0x80 : 0
            if let status = p.status {
                flags |= 0x01 | p.residual.flagBits
                h.set(3, status)
                h.set(24, p.statSN)
                h.set(44, p.residual.count)
            }
            h.set(1, flags)
            h.set(8, p.lun)
            h.set(16, p.initiatorTaskTag)
            h.set(20, WireConstants.reservedTag)
            h.setSequence(p, includingStatSN: false)
            h.set(36, p.dataSN)
            h.set(40, p.bufferOffset)
            h.setDataSegmentLength(p.data.readableBytes)
            return (h, p.data)
        case .logoutResponse(let p):
            var h = BasicHeaderSegment(opcode: TargetOpcode.logoutResponse.rawValue)
            h.set(1, UInt8(0x80))
            h.set(2, p.response)
            h.set(16, p.initiatorTaskTag)
            h.setSequence(p)
            h.set(40, p.time2Wait)
            h.set(42, p.time2Retain)
            return (h, ByteBuffer())
        case .readyToTransfer(let p):
            var h = BasicHeaderSegment(opcode: TargetOpcode.readyToTransfer.rawValue)
            h.set(1, UInt8(0x80))
            h.set(8, p.lun)
            h.set(16, p.initiatorTaskTag)
            h.set(20, p.targetTransferTag)
            h.setSequence(p)
            h.set(36, p.r2tSN)
            h.set(40, p.bufferOffset)
            h.set(44, p.desiredDataTransferLength)
            return (h, ByteBuffer())
        case .asynchronousMessage(let p):
            var h = BasicHeaderSegment(opcode: TargetOpcode.asynchronousMessage.rawValue)
            h.set(1, UInt8(0x80))
            h.set(8, p.lun)
            h.set(16, WireConstants.reservedTag)
            h.setSequence(p)
            h.set(36, p.event)
            h.set(37, p.vendorCode)
            h.set(38, p.parameter1)
            h.set(40, p.parameter2)
            h.set(42, p.parameter3)
            h.setDataSegmentLength(p.data.readableBytes)
            return (h, p.data)
        case .reject(let p):
            var h = BasicHeaderSegment(opcode: TargetOpcode.reject.rawValue)
            h.set(1, UInt8(0x80))
            h.set(2, p.reason.rawValue)
            h.set(16, WireConstants.reservedTag)
            h.setSequence(p)
            h.set(36, p.dataSNOrR2TSN)
            var data = allocator.buffer(capacity: p.rejectedHeader.count)
            data.writeBytes(p.rejectedHeader)
            h.setDataSegmentLength(data.readableBytes)
            return (h, data)
        }
    }
}

extension NOPIn: SequenceNumbered {}
extension SCSIResponsePDU: SequenceNumbered {}
extension DataIn: SequenceNumbered {}
extension ReadyToTransfer: SequenceNumbered {}
extension TaskManagementResponse: SequenceNumbered {}
extension LoginResponse: SequenceNumbered {}
extension TextResponse: SequenceNumbered {}
extension LogoutResponse: SequenceNumbered {}
extension AsynchronousMessage: SequenceNumbered {}
extension Reject: SequenceNumbered {}

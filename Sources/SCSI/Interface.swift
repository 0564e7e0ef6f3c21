//
// The boundary between a SCSI transport (iSCSI here) and the SCSI device model.
//
// The transport decodes its own PDUs and hands the device a `SCSICommand`: the LUN,
// the CDB bytes, the transport's Expected Data Transfer Length and direction, and the
// I_T nexus the command arrived on. The device never sees a PDU; the transport never
// sees sense codes or CDB fields beyond what this file exposes.
//
// A command runs in two steps:
//   1. `SCSIDevice.prepare(_:)` — cheap, never blocks, callable on an event loop. It
//      decodes and validates the CDB (LUN exists, opcode supported, reserved bits clear,
//      LBA range inside the medium, transfer length limits). It answers either
//      `.complete(SCSIResponse)` (an error, or a command that needed no data and no
//      blocking work) or `.ready(PreparedCommand)`, which says how many bytes of
//      Data-Out the command wants and whether its execution may block.
//   2. `SCSIDevice.execute(_:dataOut:)` — performs the command. It may block on storage
//      I/O when `PreparedCommand.mayBlock` is true; the transport then calls it from a
//      thread pool, never from an event loop.
//
import NIOCore

/// The identity of an I_T nexus: initiator port and target port, as SPC names them.
/// For iSCSI the initiator port name is `InitiatorName + ",i,0x" + ISID` and the target
/// port name is `TargetName + ",t,0x" + TPGT` (RFC 7143 §4.4.1 / SAM).
public struct ITNexus: Hashable, Sendable, CustomStringConvertible {
    public var initiatorPortName: String
    public var targetPortName: String
    /// A number unique among live nexuses of this process (used for bookkeeping, e.g.
    /// the RELATIVE TARGET PORT of the session is carried separately).
    public var id: UInt64
    /// The relative target port identifier (the iSCSI TPGT maps 1:1 here).
    public var relativeTargetPort: UInt16

    public init(initiatorPortName: String, targetPortName: String, id: UInt64, relativeTargetPort: UInt16 = 1) {
        self.initiatorPortName = initiatorPortName
        self.targetPortName = targetPortName
        self.id = id
        self.relativeTargetPort = relativeTargetPort
    }

    public var description: String { "\(initiatorPortName) -> \(targetPortName)" }

    /// The initiator's name: the initiator port name without its ",i,0x<ISID>" suffix.
    public var initiatorName: String {
        let bytes = Array(initiatorPortName.utf8)
        var i = bytes.count - 3
        while i >= 0 {
            if bytes[i] == UInt8(ascii: ","), bytes[i + 1] == UInt8(ascii: "i"), bytes[i + 2] == UInt8(ascii: ",") {
                return String(decoding: bytes[..<i], as: UTF8.self)
            }
            i -= 1
        }
        return initiatorPortName
    }
}

/// The direction the transport says data flows (iSCSI R and W bits).
public enum DataDirection: Sendable, Equatable {
    case none
    case fromInitiator  // write (Data-Out)
    case toInitiator    // read (Data-In)
    case bidirectional
}

/// SAM task attributes.
public enum TaskAttribute: UInt8, Sendable {
    case untagged = 0, simple = 1, ordered = 2, headOfQueue = 3, aca = 4
}

/// A SCSI command as a transport delivers it.
public struct SCSICommand: Sendable {
    /// The 64-bit LUN field as received (SAM-5 §4.7). `lunNumber` decodes the common
    /// peripheral and flat addressing forms.
    public var lunField: UInt64
    public var cdb: [UInt8]
    /// The transport's Expected Data Transfer Length in bytes for the main direction.
    public var expectedDataTransferLength: Int
    public var direction: DataDirection
    public var attribute: TaskAttribute
    public var nexus: ITNexus

    public init(lunField: UInt64, cdb: [UInt8], expectedDataTransferLength: Int, direction: DataDirection,
                attribute: TaskAttribute = .simple, nexus: ITNexus) {
        self.lunField = lunField
        self.cdb = cdb
        self.expectedDataTransferLength = expectedDataTransferLength
        self.direction = direction
        self.attribute = attribute
        self.nexus = nexus
    }

    /// The LUN number for peripheral device (00b) and flat space (01b) addressing;
    /// nil for forms this target does not assign.
    public var lunNumber: UInt16? {
        let top = UInt16(truncatingIfNeeded: lunField >> 48)
        guard lunField & 0x0000_FFFF_FFFF_FFFF == 0 else { return nil }
        switch top >> 14 {
        case 0b00: return (top >> 8) & 0x3F == 0 ? top & 0x00FF : nil
        case 0b01: return top & 0x3FFF
        default: return nil
        }
    }
}

/// SAM status codes.
public enum SCSIStatus: UInt8, Sendable, Equatable {
    case good = 0x00
    case checkCondition = 0x02
    case conditionMet = 0x04
    case busy = 0x08
    case reservationConflict = 0x18
    case taskSetFull = 0x28
    case acaActive = 0x30
    case taskAborted = 0x40
}

/// What the device answers. The transport sends `dataIn` (trimmed to the EDTL), then the
/// status with `sense` (already encoded, fixed or descriptor format), and computes the
/// residual from `expectedDataTransferLength` and `transferLength`.
public struct SCSIResponse: Sendable {
    public var status: SCSIStatus
    /// Encoded sense data (e.g. 18 bytes of fixed format); empty when there is none.
    public var sense: [UInt8]
    /// Data for the initiator (Data-In). Its length is what the device would transfer;
    /// the transport never sends more than the EDTL.
    public var dataIn: ByteBuffer?
    /// The number of bytes the command itself (the CDB) called for in its data direction:
    /// SPDTL. For reads this equals `dataIn.readableBytes` unless an error stopped it; for
    /// writes it is the CDB transfer length in bytes. The transport derives the
    /// iSCSI residual (U/O flags) from EDTL versus this value.
    public var transferLength: Int

    public init(status: SCSIStatus, sense: [UInt8] = [], dataIn: ByteBuffer? = nil, transferLength: Int = 0) {
        self.status = status
        self.sense = sense
        self.dataIn = dataIn
        self.transferLength = transferLength
    }

    public static let good = SCSIResponse(status: .good)
}

/// A command that passed validation and may run.
public struct PreparedCommand: Sendable {
    public var command: SCSICommand
    /// How many Data-Out bytes the transport should collect before `execute`: the EDTL
    /// for a write-direction command (the device itself copes with EDTL ≠ SPDTL).
    public var dataOutLength: Int
    /// True when `execute` may block (storage I/O): run it off the event loop.
    public var mayBlock: Bool
    /// Opaque decoded state owned by the device model.
    public var decoded: PreparedExecution

    public init(command: SCSICommand, dataOutLength: Int, mayBlock: Bool, decoded: PreparedExecution) {
        self.command = command
        self.dataOutLength = dataOutLength
        self.mayBlock = mayBlock
        self.decoded = decoded
    }
}

public enum PrepareResult: Sendable {
    case complete(SCSIResponse)
    case ready(PreparedCommand)
}

/// Task management functions as a transport requests them.
public enum TaskManagementFunction: Sendable, Equatable {
    case abortTask
    case abortTaskSet
    case clearTaskSet
    case clearACA
    case logicalUnitReset
    case targetWarmReset
    case targetColdReset
}

public enum TaskManagementOutcome: Sendable, Equatable {
    case functionComplete
    case lunDoesNotExist
    case functionNotSupported
}

/// One SCSI target device: the set of logical units one iSCSI target exposes.
/// Thread-safe: many sessions on many event loops call it at once.
public protocol SCSIDevice: AnyObject, Sendable {
    /// Validate and decode. Never blocks.
    func prepare(_ command: SCSICommand) -> PrepareResult
    /// Execute a prepared command. `dataOut` holds exactly `dataOutLength` bytes for
    /// write-direction commands (fewer only if the transport failed; the device then
    /// answers an error). May block when `mayBlock` is true.
    func execute(_ prepared: PreparedCommand, dataOut: ByteBuffer?) -> SCSIResponse
    /// Task management for the LUN (when it applies) from the nexus.
    func taskManagement(_ function: TaskManagementFunction, lunField: UInt64, nexus: ITNexus) -> TaskManagementOutcome
    /// A nexus came into existence (login) or went away (logout, connection loss).
    func nexusDidOpen(_ nexus: ITNexus)
    func nexusDidClose(_ nexus: ITNexus)
    /// The LUN numbers this device exposes to the given initiator port (REPORT LUNS order).
    func lunNumbers(for nexus: ITNexus) -> [UInt16]
}

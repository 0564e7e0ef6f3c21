//
// The command table: one descriptor per (operation code, service action).
//
// A descriptor says how long the CDB is, which bits of each CDB byte the device server
// looks at (the usage mask, byte 0 being the operation code itself), which way data
// flows, the policy flags checked once before any handler runs, and the handler. One
// validator (`CommandDescriptor.validate(_:)`) rejects every bit outside the mask with
// INVALID FIELD IN CDB pointing at that byte and bit, so handlers never re-check
// reserved bits; REPORT SUPPORTED OPERATION CODES prints the same masks as CDB USAGE DATA,
// so what is advertised and what is enforced cannot drift apart.
//
import NIOCore

/// Where a command's service action lives.
enum ServiceActionField: Sendable {
    /// Byte 1 bits 4–0 (MAINTENANCE IN/OUT, SERVICE ACTION IN(16), PERSISTENT RESERVE IN/OUT).
    case byte1LowBits
    /// Bytes 8–9 of a variable-length CDB (operation code 7Fh, SPC-4 §4.2.3).
    case bytes8And9

    static func forOpcode(_ opcode: UInt8) -> ServiceActionField {
        opcode == 0x7F ? .bytes8And9 : .byte1LowBits
    }
}

/// Which way parameter or user data flows for a command.
public enum CommandDataDirection: Sendable, Equatable {
    case none
    case dataIn
    case dataOut
}

public struct CommandFlags: OptionSet, Sendable {
    public let rawValue: UInt16

    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Runs even when the addressed LUN does not exist (INQUIRY, REPORT LUNS, REQUEST SENSE).
    public static let allowedWithoutLogicalUnit = CommandFlags(rawValue: 1 << 0)
    /// Does not report (and does not clear) a pending unit attention (SAM-5 §5.14).
    public static let ignoresUnitAttention = CommandFlags(rawValue: 1 << 1)
    /// Modifies the medium: DATA PROTECT, WRITE PROTECTED on a read-only LU.
    public static let writesMedium = CommandFlags(rawValue: 1 << 2)
    /// Allowed to an I_T nexus that does not hold a RESERVE(6) reservation of the LU (SPC-2 §5.5.1).
    public static let allowedUnderReservation = CommandFlags(rawValue: 1 << 3)
    /// Reads the medium: conflicts with Exclusive Access persistent reservations held by others.
    public static let readsMedium = CommandFlags(rawValue: 1 << 4)
    /// Changes the medium or LU state: conflicts with every persistent reservation type held
    /// by others (SPC-4 Table 63, "write" class).
    public static let modifiesUnderPersistentReservation = CommandFlags(rawValue: 1 << 5)
}

/// The result of a reply-producing step.
public struct CommandReply: Sendable {
    public var dataIn: ByteBuffer?
    public var transferLength: Int
    public var status: SCSIStatus = .good

    public init(dataIn: ByteBuffer?, transferLength: Int, status: SCSIStatus = .good) {
        self.dataIn = dataIn
        self.transferLength = transferLength
        self.status = status
    }

    public static let good = CommandReply(dataIn: nil, transferLength: 0)

    /// Parameter data truncated to the allocation length (SPC-4 §4.2.5.6).
    public static func parameterData(_ bytes: [UInt8], allocationLength: Int) -> CommandReply {
        let count = min(bytes.count, allocationLength)
        guard count > 0 else { return CommandReply(dataIn: nil, transferLength: 0) }
        var buffer = ByteBufferAllocator().buffer(capacity: count)
        buffer.writeBytes(bytes[0..<count])
        return CommandReply(dataIn: buffer, transferLength: count)
    }
}

/// The work left for `execute` once `prepare` has decoded the CDB.
public typealias CommandExecution = @Sendable (_ dataOut: ByteBuffer?) throws -> CommandReply

/// What a handler decides during `prepare`.
public enum CommandOutcome: Sendable {
    /// Finished: nothing to transfer from the initiator and nothing that blocks.
    case complete(CommandReply)
    /// Needs `execute`: collect Data-Out first when `wantsDataOut`, and run off the event
    /// loop when `mayBlock`.
    case execute(wantsDataOut: Bool, mayBlock: Bool, CommandExecution)
    /// A read of the medium, decoded: it finishes at once when the data is in the page cache
    /// (`SCSITargetDevice.executeWithoutWaiting`), otherwise off the event loop as for
    /// `.execute(mayBlock: true)`. A value rather than closures: the READ path allocates none.
    case readMedium(MediumRead)
}

/// A decoded read of `byteCount` bytes at `lba` of `unit`; `access` (if any) is reported to
/// the device's extensions once the data is read.
public struct MediumRead: Sendable {
    let unit: LogicalUnit
    let lba: UInt64
    let byteCount: Int
    let access: MediumAccess?

    init(unit: LogicalUnit, lba: UInt64, byteCount: Int, access: MediumAccess?) {
        self.unit = unit
        self.lba = lba
        self.byteCount = byteCount
        self.access = access
    }
}

public typealias CommandHandler = @Sendable (_ context: CommandContext) throws -> CommandOutcome

/// Everything a handler may look at while preparing a command.
public struct CommandContext: Sendable {
    public let device: SCSITargetDevice
    /// The addressed logical unit; nil only for commands flagged `allowedWithoutLogicalUnit`.
    public let unit: LogicalUnit?
    public let command: SCSICommand
    public var cdb: [UInt8] { self.command.cdb }
    public var nexus: ITNexus { self.command.nexus }

    /// The addressed logical unit for handlers that are never called without one.
    public var lu: LogicalUnit {
        guard let unit else { preconditionFailure("handler needs a logical unit") }
        return unit
    }
}

public struct CommandDescriptor: Sendable {
    public let opcode: UInt8
    /// nil: the operation code has no service actions.
    public let serviceAction: UInt16?
    public let name: String
    /// Allowed bits per CDB byte; `usage.count` is the CDB length and `usage[0]` the opcode.
    public let usage: [UInt8]
    public let direction: CommandDataDirection
    public let flags: CommandFlags
    /// Nominal and recommended command timeouts in seconds for RSOC (0: not specified).
    public let nominalTimeout: UInt32
    public let recommendedTimeout: UInt32
    /// Whether this logical unit offers the command (e.g. UNMAP only when thin provisioned).
    public let isOffered: @Sendable (LogicalUnitConfiguration) -> Bool
    public let handler: CommandHandler

    public init(_ opcode: UInt8, serviceAction: UInt16? = nil, _ name: String, usage: [UInt8],
         direction: CommandDataDirection = .none, flags: CommandFlags = [],
         timeouts: (UInt32, UInt32) = (0, 0),
         offered: @escaping @Sendable (LogicalUnitConfiguration) -> Bool = { _ in true },
         handler: @escaping CommandHandler) {
        precondition(usage.first == opcode, "usage[0] must be the operation code")
        self.opcode = opcode
        self.serviceAction = serviceAction
        self.name = name
        self.usage = usage
        self.direction = direction
        self.flags = flags
        self.nominalTimeout = timeouts.0
        self.recommendedTimeout = timeouts.1
        self.isOffered = offered
        self.handler = handler
    }

    public var cdbLength: Int { self.usage.count }

    /// Rejects any set bit outside the usage mask: INVALID FIELD IN CDB, field pointer to
    /// the byte and its most significant offending bit (C/D = 1).
    public func validate(_ cdb: [UInt8]) throws(SCSIError) {
        // A CDB shorter than the command's own length (a transport that cut it): handlers
        // index every byte of their CDB (found by fuzzing, `iscsi-fuzz cdb`).
        guard cdb.count >= self.usage.count else {
            throw SCSIError.invalidFieldInCDB(byte: max(cdb.count - 1, 0), bit: 7)
        }
        for index in 1..<self.usage.count {
            let stray = cdb.byte(index) & ~self.usage[index]
            if stray != 0 {
                let bit = 7 - stray.leadingZeroBitCount
                throw SCSIError.invalidFieldInCDB(byte: index, bit: bit)
            }
        }
    }
}

/// Operation codes with and without service actions, looked up in O(1).
struct CommandTable: Sendable {
    enum Entry: Sendable {
        case single(CommandDescriptor)
        case serviceActions(field: ServiceActionField, [UInt16: CommandDescriptor])
    }

    private(set) var entries: [UInt8: Entry] = [:]
    /// Every descriptor, ordered by (opcode, service action), for RSOC.
    private(set) var all: [CommandDescriptor] = []

    init(_ descriptors: [CommandDescriptor]) {
        for descriptor in descriptors {
            if let serviceAction = descriptor.serviceAction {
                var actions: [UInt16: CommandDescriptor] = [:]
                switch self.entries[descriptor.opcode] {
                case .serviceActions(_, let existing)?: actions = existing
                case .single?: preconditionFailure("\(descriptor.name): operation code has no service actions")
                case nil: break
                }
                precondition(actions[serviceAction] == nil, "duplicate \(descriptor.name)")
                actions[serviceAction] = descriptor
                self.entries[descriptor.opcode] = .serviceActions(field: .forOpcode(descriptor.opcode), actions)
            } else {
                precondition(self.entries[descriptor.opcode] == nil, "duplicate \(descriptor.name)")
                self.entries[descriptor.opcode] = .single(descriptor)
            }
        }
        self.all = descriptors.sorted {
            ($0.opcode, $0.serviceAction ?? 0) < ($1.opcode, $1.serviceAction ?? 0)
        }
    }

    /// Finds the descriptor for a CDB: unknown opcode → INVALID COMMAND OPERATION CODE;
    /// unknown service action of a known opcode → INVALID FIELD IN CDB at the SA field.
    func lookup(_ cdb: [UInt8]) throws(SCSIError) -> CommandDescriptor {
        guard let opcode = cdb.first, let entry = self.entries[opcode] else {
            throw SCSIError.invalidCommandOperationCode
        }
        switch entry {
        case .single(let descriptor):
            return descriptor
        case .serviceActions(.byte1LowBits, let actions):
            guard let descriptor = actions[UInt16(cdb.byte(1) & 0x1F)] else {
                throw SCSIError.invalidFieldInCDB(byte: 1, bit: 4)
            }
            return descriptor
        case .serviceActions(.bytes8And9, let actions):
            guard let descriptor = actions[cdb.bigEndian16(at: 8)] else {
                throw SCSIError.invalidFieldInCDB(byte: 8, bit: 7)
            }
            return descriptor
        }
    }

    /// For RSOC reporting options 1–3.
    func entry(forOpcode opcode: UInt8) -> Entry? { self.entries[opcode] }
}

//
// The seam between the iSCSI session engine and the SCSI device model: translates an
// iSCSI SCSI Command into a transport-neutral `SCSICommand`, and device answers back
// into the engine's terms. Neither side imports the other.
//
import ISCSIEngine
import ISCSIWire
import NIOCore
import SCSI

struct DevicePort: CommandPort {
    let device: SCSITargetDevice
    let nexus: ITNexus
    /// Commands answered at admission (errors, commands without data) are counted here.
    var metrics: TargetMetrics? = nil

    func scsiCommand(_ c: SCSICommandRequest) -> SCSICommand {
        let direction: DataDirection =
            c.isRead && c.isWrite ? .bidirectional : c.isWrite ? .fromInitiator : c.isRead ? .toInitiator : DataDirection.none
        return SCSICommand(
            lunField: c.lun, cdb: c.cdb, expectedDataTransferLength: Int(c.expectedDataTransferLength),
            direction: direction, attribute: TaskAttribute(rawValue: c.attribute) ?? .simple, nexus: nexus)
    }

    func admit(_ c: SCSICommandRequest) -> CommandDisposition {
        let command = scsiCommand(c)
        switch device.prepare(command) {
        case .complete(let response):
            metrics?.record(command: command, response: response, nanoseconds: 0)
            return .complete(CommandResult(response))
        case .ready(let prepared):
            return .accept(token: prepared, dataOutLength: prepared.dataOutLength)
        }
    }

    func taskManagement(_ function: TaskManagementFunctionCode, lun: UInt64) -> TaskManagementResponseCode {
        let f: TaskManagementFunction
        switch function {
        case .abortTask: f = .abortTask
        case .abortTaskSet: f = .abortTaskSet
        case .clearACA: f = .clearACA
        case .clearTaskSet: f = .clearTaskSet
        case .logicalUnitReset: f = .logicalUnitReset
        case .targetWarmReset: f = .targetWarmReset
        case .targetColdReset: f = .targetColdReset
        case .taskReassign: return .reassignmentNotSupported
        }
        switch device.taskManagement(f, lunField: lun, nexus: nexus) {
        case .functionComplete: return .functionComplete
        case .lunDoesNotExist: return .lunDoesNotExist
        case .functionNotSupported: return .functionNotSupported
        }
    }
}

extension CommandResult {
    init(_ r: SCSIResponse) {
        self.init(status: r.status.rawValue, sense: r.sense, dataIn: r.dataIn, transferLength: r.transferLength)
    }
}

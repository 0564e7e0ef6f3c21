//
// APTPL (SPC-4 §5.9.5): persistent reservations that survive a restart of the target, for
// LUs configured with a reservation state file (`reservationStatePath`, PTPL_C = 1).
//
// The APTPL bit of the most recent successful REGISTER / REGISTER AND IGNORE EXISTING KEY
// decides (PTPL_A): with APTPL = 1 every change of the registrations or the reservation is
// written to the file (a temporary file renamed over it, then fsync'ed); with APTPL = 0 the
// file is removed. On start the LU loads the file when present. An LU without a state file
// answers APTPL = 1 with INVALID FIELD IN PARAMETER LIST, as before.
//
// Format (text, one record per line, fields separated by tabs; names contain no tabs):
//   iscsi-target persistent reservations 1
//   generation<TAB>N
//   registration<TAB>KEY(hex)<TAB>initiator port name<TAB>target port name
//   reservation<TAB>TYPE<TAB>holder initiator port name<TAB>holder target port name   (holder "-" for all-registrants)
//
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

enum ReservationPersistence {
    static let header = "iscsi-target persistent reservations 1"

    static func encode(_ pr: PersistentReservationState) -> String {
        var lines = [header, "generation\t\(pr.generation)"]
        for registration in pr.registrations {
            lines.append("registration\t\(String(registration.key, radix: 16))\t"
                         + "\(registration.nexus.initiatorPortName)\t\(registration.nexus.targetPortName)")
        }
        if let reservation = pr.reservation {
            let holder = reservation.holder.map { "\($0.initiatorPortName)\t\($0.targetPortName)" } ?? "-\t-"
            lines.append("reservation\t\(reservation.type.rawValue)\t\(holder)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// nil when the text is not a state file of this format.
    static func decode(_ text: String) -> PersistentReservationState? {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        guard lines.first == header else { return nil }
        lines.removeFirst()
        var pr = PersistentReservationState()
        pr.persistThroughPowerLoss = true
        for line in lines {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            switch fields.first {
            case "generation" where fields.count == 2:
                guard let generation = UInt32(fields[1]) else { return nil }
                pr.generation = generation
            case "registration" where fields.count == 4:
                guard let key = UInt64(fields[1], radix: 16) else { return nil }
                pr.registrations.append((NexusKey(initiatorPortName: fields[2], targetPortName: fields[3]), key))
            case "reservation" where fields.count == 4:
                guard let raw = UInt8(fields[1]), let type = PersistentReservationType(rawValue: raw) else { return nil }
                let holder = fields[2] == "-" ? nil : NexusKey(initiatorPortName: fields[2], targetPortName: fields[3])
                pr.reservation = PersistentReservation(holder: holder, type: type)
            default:
                return nil
            }
        }
        return pr
    }

    static func load(path: String) -> PersistentReservationState? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            bytes += chunk[0..<count]
            if bytes.count > 1 << 20 { return nil }
        }
        return decode(String(decoding: bytes, as: UTF8.self))
    }

    /// Writes (APTPL active) or removes (inactive) the state file. Errors are reported to the
    /// caller: the PERSISTENT RESERVE OUT then fails rather than silently not persisting.
    static func store(_ pr: PersistentReservationState, path: String) throws(SCSIError) {
        guard pr.persistThroughPowerLoss else {
            if unlink(path) != 0 && errno != ENOENT { throw SCSIError(.hardwareError, .internalTargetFailure) }
            return
        }
        let temporary = path + ".tmp"
        let bytes = Array(encode(pr).utf8)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw SCSIError(.hardwareError, .internalTargetFailure) }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == bytes.count, synced, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw SCSIError(.hardwareError, .internalTargetFailure)
        }
    }
}

extension NexusKey {
    init(initiatorPortName: String, targetPortName: String) {
        self.init(ITNexus(initiatorPortName: initiatorPortName, targetPortName: targetPortName, id: 0))
    }
}

//
// Reservations: RESERVE(6)/RELEASE(6) (SPC-2 §5.5.1) and persistent reservations
// (SPC-4 §5.9, PERSISTENT RESERVE IN/OUT §6.15–6.16).
//
// Scope is always LU_SCOPE; registrations are per I_T nexus (ALL_TG_PT, SPEC_I_PT and
// REGISTER AND MOVE are not supported). State is lost when the process exits, except on LUs
// with a reservation state file after a REGISTER with APTPL = 1 (ReservationPersistence.swift).
//

enum PersistentReservationType: UInt8, Sendable {
    case writeExclusive = 0x1
    case exclusiveAccess = 0x3
    case writeExclusiveRegistrantsOnly = 0x5
    case exclusiveAccessRegistrantsOnly = 0x6
    case writeExclusiveAllRegistrants = 0x7
    case exclusiveAccessAllRegistrants = 0x8

    var isAllRegistrants: Bool { self == .writeExclusiveAllRegistrants || self == .exclusiveAccessAllRegistrants }
    var isRegistrantsOnly: Bool { self == .writeExclusiveRegistrantsOnly || self == .exclusiveAccessRegistrantsOnly }
    var excludesReads: Bool {
        self == .exclusiveAccess || self == .exclusiveAccessRegistrantsOnly || self == .exclusiveAccessAllRegistrants
    }
}

struct PersistentReservation: Sendable, Equatable {
    /// The holder; for the all-registrants types every registrant holds it and this is nil.
    var holder: NexusKey?
    var type: PersistentReservationType
}

struct PersistentReservationState: Sendable {
    var generation: UInt32 = 0
    /// Registrations in registration order.
    var registrations: [(nexus: NexusKey, key: UInt64)] = []
    var reservation: PersistentReservation?
    /// PTPL_A: the last REGISTER asked for persistence through power loss (APTPL = 1).
    var persistThroughPowerLoss = false

    func key(of nexus: NexusKey) -> UInt64? {
        self.registrations.first { $0.nexus == nexus }?.key
    }

    func isHolder(_ nexus: NexusKey) -> Bool {
        guard let reservation else { return false }
        if reservation.type.isAllRegistrants { return self.key(of: nexus) != nil }
        return reservation.holder == nexus
    }

    /// The key READ RESERVATION reports: the holder's key, or 0 for all-registrants.
    var reservationKey: UInt64 {
        guard let reservation else { return 0 }
        if reservation.type.isAllRegistrants { return 0 }
        return reservation.holder.flatMap { self.key(of: $0) } ?? 0
    }
}

extension LogicalUnit {
    /// Reservation checks run by the pipeline when the LU is reserved (fast path skips this).
    func checkReservationConflict(_ descriptor: CommandDescriptor, command: SCSICommand,
                                  nexus: NexusKey) throws(SCSIError) {
        let conflict = self.state.withLock { state -> Bool in
            if let holder = state.reservationHolder, holder != nexus {
                return !descriptor.flags.contains(.allowedUnderReservation)
            }
            guard let reservation = state.persistentReservations.reservation,
                  !state.persistentReservations.isHolder(nexus) else { return false }
            let registered = state.persistentReservations.key(of: nexus) != nil
            if descriptor.opcode == 0x16 || descriptor.opcode == 0x17 {
                return true  // RESERVE(6)/RELEASE(6) conflict with any persistent reservation
            }
            // Registrants of a registrants-only / all-registrants reservation have full access.
            if registered && (reservation.type.isRegistrantsOnly || reservation.type.isAllRegistrants) {
                return false
            }
            if descriptor.flags.contains(.modifiesUnderPersistentReservation) { return true }
            if descriptor.flags.contains(.readsMedium) && reservation.type.excludesReads { return true }
            return false
        }
        if conflict { throw SCSIError.reservationConflict }
    }
}

extension SCSITargetDevice {
    // MARK: PERSISTENT RESERVE IN

    static func persistentReserveIn(_ context: CommandContext) throws -> CommandOutcome {
        let cdb = context.cdb
        let serviceAction = cdb[1] & 0x1F
        let allocationLength = Int(cdb.bigEndian16(at: 7))
        let unit = context.lu
        let data: [UInt8] = unit.state.withLock { state in
            let pr = state.persistentReservations
            var data: [UInt8] = []
            switch serviceAction {
            case 0x00:  // READ KEYS
                data.appendBigEndian32(pr.generation)
                data.appendBigEndian32(UInt32(pr.registrations.count * 8))
                for registration in pr.registrations { data.appendBigEndian64(registration.key) }
            case 0x01:  // READ RESERVATION
                data.appendBigEndian32(pr.generation)
                if let reservation = pr.reservation {
                    data.appendBigEndian32(16)
                    data.appendBigEndian64(pr.reservationKey)
                    data += [0, 0, 0, 0, 0, reservation.type.rawValue, 0, 0]
                } else {
                    data.appendBigEndian32(0)
                }
            case 0x02:  // REPORT CAPABILITIES
                data = [0x00, 0x08, 0x00, 0x80 | 0x10, 0, 0, 0, 0]
                // CRH 0 SIP_C 0 ATP_C 0 PTPL_C (a state file is configured); TMV 1, ALLOW
                // COMMANDS 001b, PTPL_A; type mask:
                if unit.configuration.reservationStatePath != nil { data[2] |= 0x01 }
                if pr.persistThroughPowerLoss { data[3] |= 0x01 }
                data[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02  // WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX
                data[5] = 0x01  // EX_AC_AR
            default:  // 0x03 READ FULL STATUS
                data.appendBigEndian32(pr.generation)
                data.appendBigEndian32(0)
                for registration in pr.registrations {
                    let holder = pr.isHolder(registration.nexus)
                    var descriptor: [UInt8] = []
                    descriptor.appendBigEndian64(registration.key)
                    descriptor += [0, 0, 0, 0]
                    descriptor.append(holder ? 0x01 : 0x00)  // ALL_TG_PT 0, R_HOLDER
                    descriptor.append(holder ? pr.reservation!.type.rawValue : 0)
                    descriptor += [0, 0, 0, 0]
                    descriptor.appendBigEndian16(context.nexus.relativeTargetPort)
                    let transportID = iSCSITransportID(registration.nexus.initiatorPortName)
                    descriptor.appendBigEndian32(UInt32(transportID.count))
                    data += descriptor + transportID
                }
                data.setBigEndian32(UInt32(data.count - 8), at: 4)
            }
            return data
        }
        return .complete(.parameterData(data, allocationLength: allocationLength))
    }

    /// iSCSI TransportID, format 01b (initiator port name with ISID) (SPC-4 §7.6.4.6).
    static func iSCSITransportID(_ initiatorPortName: String) -> [UInt8] {
        var name = Array(initiatorPortName.utf8)
        name.append(0)
        while name.count < 20 || name.count % 4 != 0 { name.append(0) }
        var id: [UInt8] = [0x40 | 0x05, 0]
        id.appendBigEndian16(UInt16(name.count))
        return id + name
    }

    // MARK: PERSISTENT RESERVE OUT

    static func persistentReserveOut(_ context: CommandContext) throws -> CommandOutcome {
        let cdb = context.cdb
        let serviceAction = cdb[1] & 0x1F
        let scope = cdb[2] >> 4
        let typeCode = cdb[2] & 0x0F
        let parameterListLength = Int(cdb.bigEndian32(at: 5))
        if serviceAction > 0x06 { throw SCSIError.invalidFieldInCDB(byte: 1, bit: 4) }
        if parameterListLength != 24 { throw SCSIError.parameterListLengthError }
        let needsType = serviceAction == 0x01 || serviceAction == 0x02 || serviceAction == 0x04 || serviceAction == 0x05
        if needsType {
            if scope != 0 { throw SCSIError.invalidFieldInCDB(byte: 2, bit: 7) }
            if PersistentReservationType(rawValue: typeCode) == nil {
                throw SCSIError.invalidFieldInCDB(byte: 2, bit: 3)
            }
        }
        let type = needsType ? PersistentReservationType(rawValue: typeCode) : nil
        let unit = context.lu
        let device = context.device
        let nexus = NexusKey(context.nexus)
        // With a reservation state file the change is written (and fsync'ed) before GOOD.
        return .execute(wantsDataOut: true, mayBlock: unit.configuration.reservationStatePath != nil) { dataOut in
            guard let dataOut, dataOut.readableBytes >= 24 else { throw SCSIError.parameterListLengthError }
            let list = Array(dataOut.readableBytesView.prefix(24))
            let reservationKey = list.bigEndian64(at: 0)
            let serviceActionKey = list.bigEndian64(at: 8)
            if list[20] & 0x08 != 0 { throw SCSIError.invalidFieldInParameterList(byte: 20, bit: 3) }  // SPEC_I_PT
            if list[20] & 0x04 != 0 { throw SCSIError.invalidFieldInParameterList(byte: 20, bit: 2) }  // ALL_TG_PT
            let statePath = unit.configuration.reservationStatePath
            let aptpl = list[20] & 0x01 != 0
            if aptpl && statePath == nil { throw SCSIError.invalidFieldInParameterList(byte: 20, bit: 0) }
            var notices: [(AdditionalSenseCode, [NexusKey])] = []
            try unit.withReservations { state in
                notices = try applyPersistentReserveOut(
                    serviceAction: serviceAction, type: type, reservationKey: reservationKey,
                    serviceActionKey: serviceActionKey, nexus: nexus, state: &state.persistentReservations)
                if let statePath {
                    // APTPL counts from REGISTER and REGISTER AND IGNORE EXISTING KEY only.
                    if serviceAction == 0x00 || serviceAction == 0x06 {
                        state.persistentReservations.persistThroughPowerLoss = aptpl
                    }
                    try ReservationPersistence.store(state.persistentReservations, path: statePath)
                }
            }
            let open = Set(device.openNexuses(except: nil))
            for (code, targets) in notices {
                unit.raiseUnitAttention(code, for: targets.filter { open.contains($0) })
            }
            return .good
        }
    }

    /// The PERSISTENT RESERVE OUT state machine. Returns unit attentions to raise.
    static func applyPersistentReserveOut(
        serviceAction: UInt8, type: PersistentReservationType?, reservationKey: UInt64,
        serviceActionKey: UInt64, nexus: NexusKey, state pr: inout PersistentReservationState
    ) throws(SCSIError) -> [(AdditionalSenseCode, [NexusKey])] {
        let registeredKey = pr.key(of: nexus)
        func requireRegistration() throws(SCSIError) {
            guard let registeredKey, registeredKey == reservationKey else { throw SCSIError.reservationConflict }
        }
        func unregister(_ target: NexusKey) {
            pr.registrations.removeAll { $0.nexus == target }
            if let reservation = pr.reservation {
                if reservation.type.isAllRegistrants {
                    if pr.registrations.isEmpty { pr.reservation = nil }
                } else if reservation.holder == target {
                    pr.reservation = nil
                }
            }
        }
        var notices: [(AdditionalSenseCode, [NexusKey])] = []
        switch serviceAction {
        case 0x00, 0x06:  // REGISTER, REGISTER AND IGNORE EXISTING KEY
            if serviceAction == 0x00 {
                if let registeredKey {
                    if registeredKey != reservationKey { throw SCSIError.reservationConflict }
                } else if reservationKey != 0 {
                    throw SCSIError.reservationConflict
                }
            }
            if serviceActionKey == 0 {
                if registeredKey != nil {
                    let releasedRegistrantsOnly = pr.reservation.map {
                        $0.type.isRegistrantsOnly && $0.holder == nexus
                    } ?? false
                    unregister(nexus)
                    if releasedRegistrantsOnly {
                        notices.append((.reservationsReleased, pr.registrations.map(\.nexus)))
                    }
                    pr.generation &+= 1
                }
            } else if let index = pr.registrations.firstIndex(where: { $0.nexus == nexus }) {
                pr.registrations[index].key = serviceActionKey
                pr.generation &+= 1
            } else {
                pr.registrations.append((nexus, serviceActionKey))
                pr.generation &+= 1
            }
        case 0x01:  // RESERVE
            try requireRegistration()
            if let reservation = pr.reservation {
                if !pr.isHolder(nexus) || reservation.type != type { throw SCSIError.reservationConflict }
            } else {
                pr.reservation = PersistentReservation(holder: type!.isAllRegistrants ? nil : nexus, type: type!)
            }
        case 0x02:  // RELEASE
            try requireRegistration()
            guard let reservation = pr.reservation, pr.isHolder(nexus) else { break }
            if reservation.type != type { throw SCSIError(.illegalRequest, .invalidReleaseOfPersistentReservation) }
            pr.reservation = nil
            if reservation.type.isRegistrantsOnly || reservation.type.isAllRegistrants {
                notices.append((.reservationsReleased, pr.registrations.map(\.nexus).filter { $0 != nexus }))
            }
        case 0x03:  // CLEAR
            try requireRegistration()
            let others = pr.registrations.map(\.nexus).filter { $0 != nexus }
            pr.registrations = []
            pr.reservation = nil
            pr.generation &+= 1
            notices.append((.reservationsPreempted, others))
        default:  // 0x04 PREEMPT, 0x05 PREEMPT AND ABORT
            try requireRegistration()
            let newType = type!
            if let reservation = pr.reservation, reservation.type.isAllRegistrants, serviceActionKey == 0 {
                let others = pr.registrations.map(\.nexus).filter { $0 != nexus }
                pr.registrations.removeAll { $0.nexus != nexus }
                pr.reservation = PersistentReservation(holder: newType.isAllRegistrants ? nil : nexus, type: newType)
                notices.append((.registrationsPreempted, others))
            } else if let reservation = pr.reservation, !reservation.type.isAllRegistrants,
                      pr.reservationKey == serviceActionKey {
                let preempted = pr.registrations.filter { $0.key == serviceActionKey && $0.nexus != nexus }.map(\.nexus)
                pr.registrations.removeAll { $0.key == serviceActionKey && $0.nexus != nexus }
                pr.reservation = PersistentReservation(holder: newType.isAllRegistrants ? nil : nexus, type: newType)
                notices.append((.registrationsPreempted, preempted))
            } else {
                if serviceActionKey == 0 { throw SCSIError.invalidFieldInParameterList(byte: 8, bit: 7) }
                let preempted = pr.registrations.filter { $0.key == serviceActionKey }.map(\.nexus)
                if preempted.isEmpty { throw SCSIError.reservationConflict }
                for target in preempted { unregister(target) }
                notices.append((.registrationsPreempted, preempted.filter { $0 != nexus }))
            }
            pr.generation &+= 1
        }
        return notices
    }
}

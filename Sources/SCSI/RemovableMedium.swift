//
// Removable media (SBC-4 §4.5, §5.14, §5.25): a LU configured `removable` reports RMB = 1,
// its medium can be ejected and loaded with START STOP UNIT (LOEJ = 1) unless an I_T nexus
// prevents removal with PREVENT ALLOW MEDIUM REMOVAL, and while no medium is loaded every
// command that needs the medium is terminated with NOT READY, MEDIUM NOT PRESENT (02/3A/00).
// The prevention is per I_T nexus and cleared by its loss (logout, connection drop) and by
// LU and target resets; the medium state survives resets.
//
extension LogicalUnit {
    /// Whether a command is terminated before its handler because the medium is absent or
    /// a sanitize operation runs (or failed).
    func mediumTermination(for descriptor: CommandDescriptor) -> SCSIError? {
        if self.configuration.removable && !self.isMediumPresent && descriptor.needsMedium {
            return SCSIError(.notReady, .mediumNotPresent)
        }
        return self.sanitizer.termination(for: descriptor)
    }

    /// What REQUEST SENSE reports when no unit attention is pending: SANITIZE IN PROGRESS with
    /// its progress indication, or MEDIUM NOT PRESENT (SPC-4 §6.39).
    var notReadySense: SenseData? {
        if self.sanitizer.isInProgress { return self.sanitizer.inProgressSense }
        if self.configuration.removable && !self.isMediumPresent {
            return SenseData(key: .notReady, code: .mediumNotPresent)
        }
        return nil
    }

    /// Whether any I_T nexus prevents medium removal.
    var isRemovalPrevented: Bool {
        self.state.withLock { !$0.preventingRemoval.isEmpty }
    }
}

extension CommandDescriptor {
    /// Commands that access or describe the medium: READ/WRITE/VERIFY/..., TEST UNIT READY,
    /// READ CAPACITY and the other SERVICE ACTION IN(16) commands, SYNCHRONIZE CACHE,
    /// READ DEFECT DATA.
    var needsMedium: Bool {
        if self.flags.contains(.readsMedium) || self.flags.contains(.writesMedium) { return true }
        return [0x00, 0x25, 0x35, 0x37, 0x91, 0x9E, 0xB7].contains(self.opcode)
    }
}

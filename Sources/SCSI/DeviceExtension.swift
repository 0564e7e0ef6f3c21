//
// The extension point: how a module other than `SCSI` contributes to one device.
//
// Copy offload and SBC streams live in their own modules over the same block stores. Each
// provides a `SCSIDeviceExtension` and hands it to
// `SCSITargetDevice(configuration:stores:extensions:)`:
//
//     let streams = StreamsExtension(settings: …)
//     let device = SCSITargetDevice(configuration: configuration, stores: stores,
//                                   extensions: [streams])
//
// What an extension contributes is merged into the device's own structures, so the rest of
// the device treats it exactly like a built-in feature:
// - `commandDescriptors` join the ONE command table: the usage-mask validator, the policy
//   prechecks (LUN, unit attention, reservations, write protection, `isOffered`) and
//   REPORT SUPPORTED OPERATION CODES cover them. A duplicate (operation code, service
//   action) is a programming error caught when the device is built.
// - `vpdPageCodes(for:)` / `vpdPage(_:for:)` add VPD pages, listed in VPD 0x00 in page code
//   order.
// - `modePages(for:)` adds mode pages and subpages (values per logical unit, kept by the
//   extension). MODE SENSE lists them in page/subpage order in 0x3F/0x00 (subpage 0 only),
//   0x3F/0xFF and PAGE/0xFF; MODE SELECT validates them against the changeable mask like
//   the built-in pages and applies all pages of a parameter list or none. Saved values
//   follow the device's policy (not saveable: 39/00).
// - `logPages(for:)` adds log pages and subpages (LOG SENSE; LOG SELECT resets their
//   cumulative values). The device lists them in the Supported Log Pages (00h), Supported Log
//   Pages and Subpages (00h/FFh) and Supported Subpages (xxh/FFh) pages it answers itself.
// - `standardInquiryBits(for:)` and `extendedInquiryBits(for:)` OR bits into standard
//   INQUIRY data (e.g. byte 5 3PC) and into the Extended INQUIRY Data VPD page (e.g. byte 5
//   GROUP_SUP); offsets are byte offsets in the returned data, headers included.
// - `didAccessMedium(_:)` reports every successful read and write of the medium by a
//   built-in command (LBA range and GROUP NUMBER), for statistics, and every other change of
//   the medium: blocks deallocated (UNMAP, WRITE SAME with UNMAP, SANITIZE) and blocks written
//   by the copy manager.
// - the lifecycle hooks clean up per-nexus and per-LU state: `nexusDidClose(_:)` when the
//   last session of an I_T nexus goes, `logicalUnitDidReset(_:)` on LOGICAL UNIT RESET and
//   target resets (mode pages return to their defaults there), `taskManagement(…)` after the
//   device has performed any task management function.
//
// Every hook has a default implementation that does nothing, so an extension implements
// only what it needs. Hooks may be called concurrently from many sessions.
//

/// A mode page (or subpage) an extension implements for one logical unit.
public protocol ModePageProvider: Sendable {
    /// PAGE CODE (0x00–0x3E).
    var pageCode: UInt8 { get }
    /// SUBPAGE CODE (0x00 for a page_0 format page; 0x01–0xFE for a subpage).
    var subpageCode: UInt8 { get }
    /// The whole page, header included (byte 0 with SPF set for a subpage, PS = 0), for
    /// PC = current, changeable (a mask of the changeable bits) or default values.
    /// `.saved` is never asked: the device answers 39/00 itself.
    func bytes(_ control: ModePageControl) -> [UInt8]
    /// Extra checks on a page MODE SELECT sent, after the device has checked its length and
    /// that only changeable bits differ from the current values. Throw `SCSIError` to reject
    /// a combination of values; `offset` is where the page starts in the parameter list (for
    /// field pointers). Default: accept.
    func validate(_ page: [UInt8], offset: Int) throws(SCSIError)
    /// Installs the changeable fields of a validated `page` as the current values. Returns
    /// true if anything changed (the device then raises MODE PARAMETERS CHANGED for the
    /// other nexuses). Called only once every page of the parameter list was accepted.
    func apply(_ page: [UInt8]) -> Bool
}

extension ModePageProvider {
    public func validate(_ page: [UInt8], offset: Int) throws(SCSIError) {}
}

/// A read or write of the medium by a built-in command, as `didAccessMedium` reports it.
public struct MediumAccess: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A read or write command the LU received (counted in command statistics).
        case read, write
        /// Blocks the copy manager wrote (EXTENDED COPY, WRITE USING TOKEN): the medium
        /// changed, but no write command arrived for it.
        case copy
        /// Blocks that no longer hold data (UNMAP, WRITE SAME with UNMAP, SANITIZE, the zero
        /// ROD token on a thin LU): a flash device would trim them.
        case deallocate
    }
    public var kind: Kind
    public var lun: UInt16
    public var operationCode: UInt8
    public var lba: UInt64
    /// Logical blocks moved (for WRITE SAME: blocks written).
    public var blocks: UInt64
    /// Bytes transferred over the transport.
    public var bytes: Int
    /// GROUP NUMBER field of the CDB (0 when the CDB has none).
    public var groupNumber: UInt8
    /// A write command that deallocated its blocks instead of writing them (WRITE SAME with
    /// UNMAP on a thin LU): a command for the statistics, a trim for a flash device.
    public var deallocated = false

    public init(kind: Kind, lun: UInt16, operationCode: UInt8, lba: UInt64, blocks: UInt64, bytes: Int,
                groupNumber: UInt8) {
        self.kind = kind
        self.lun = lun
        self.operationCode = operationCode
        self.lba = lba
        self.blocks = blocks
        self.bytes = bytes
        self.groupNumber = groupNumber
    }
}

extension MediumAccess {
    /// `blocks` blocks at `lba` of `unit` deallocated by the command `operationCode`.
    static func deallocation(_ unit: LogicalUnit, lba: UInt64, blocks: UInt64, operationCode: UInt8) -> MediumAccess {
        MediumAccess(kind: .deallocate, lun: unit.number, operationCode: operationCode, lba: lba, blocks: blocks,
                     bytes: 0, groupNumber: 0)
    }
}

/// A set of commands, pages and state that another module adds to a `SCSITargetDevice`.
public protocol SCSIDeviceExtension: AnyObject, Sendable {
    /// Commands merged into the device's command table.
    var commandDescriptors: [CommandDescriptor] { get }
    /// Extra VPD page codes this logical unit reports (not 0x00 and none the device has).
    func vpdPageCodes(for unit: LogicalUnit) -> [UInt8]
    /// The page body after the 4-byte header, or nil if the page is not one of ours.
    func vpdPage(_ pageCode: UInt8, for unit: LogicalUnit) -> [UInt8]?
    /// Mode pages and subpages for this logical unit.
    func modePages(for unit: LogicalUnit) -> [any ModePageProvider]
    /// Log pages and subpages for this logical unit (page code 01h–3Fh, subpage 00h–FEh).
    func logPages(for unit: LogicalUnit) -> [any LogPageProvider]
    /// Bits to OR into standard INQUIRY data: byte offset → bits (nil unit: no LU).
    func standardInquiryBits(for unit: LogicalUnit?) -> [Int: UInt8]
    /// Bits to OR into the Extended INQUIRY Data VPD page: byte offset → bits.
    func extendedInquiryBits(for unit: LogicalUnit) -> [Int: UInt8]
    /// A built-in command read, wrote or deallocated the medium, or the copy manager wrote it
    /// (after success).
    func didAccessMedium(_ access: MediumAccess)
    /// The last session of `nexus` ended (I_T nexus loss).
    func nexusDidClose(_ nexus: ITNexus)
    /// A LOGICAL UNIT RESET or target reset reset this logical unit.
    func logicalUnitDidReset(_ unit: LogicalUnit)
    /// The device performed `function` for `lun` (nil: target-wide) from `nexus`.
    func taskManagement(_ function: TaskManagementFunction, lun: UInt16?, nexus: ITNexus)
}

extension SCSIDeviceExtension {
    public var commandDescriptors: [CommandDescriptor] { [] }
    public func vpdPageCodes(for unit: LogicalUnit) -> [UInt8] { [] }
    public func vpdPage(_ pageCode: UInt8, for unit: LogicalUnit) -> [UInt8]? { nil }
    public func modePages(for unit: LogicalUnit) -> [any ModePageProvider] { [] }
    public func logPages(for unit: LogicalUnit) -> [any LogPageProvider] { [] }
    public func standardInquiryBits(for unit: LogicalUnit?) -> [Int: UInt8] { [:] }
    public func extendedInquiryBits(for unit: LogicalUnit) -> [Int: UInt8] { [:] }
    public func didAccessMedium(_ access: MediumAccess) {}
    public func nexusDidClose(_ nexus: ITNexus) {}
    public func logicalUnitDidReset(_ unit: LogicalUnit) {}
    public func taskManagement(_ function: TaskManagementFunction, lun: UInt16?, nexus: ITNexus) {}
}

extension SCSITargetDevice {
    /// Extension VPD pages of `unit`: code → body.
    func extensionVPDPageCodes(for unit: LogicalUnit) -> [UInt8] {
        self.extensions.flatMap { $0.vpdPageCodes(for: unit) }
    }

    func extensionVPDPage(_ code: UInt8, for unit: LogicalUnit) -> [UInt8]? {
        for ext in self.extensions {
            if let body = ext.vpdPage(code, for: unit) { return body }
        }
        return nil
    }

    func extensionModePages(for unit: LogicalUnit) -> [any ModePageProvider] {
        self.extensions.flatMap { $0.modePages(for: unit) }
    }

    /// Tells every extension of a medium access (commands of other modules report theirs here).
    public func reportMediumAccess(_ access: MediumAccess) {
        for ext in self.extensions { ext.didAccessMedium(access) }
    }
}

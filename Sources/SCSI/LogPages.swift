//
// LOG SENSE (4Dh) and LOG SELECT (4Ch) (SPC-4 §6.6, §6.7; log page format §7.3).
//
// Log pages come from `LogPageProvider`s: the device's own Temperature page (0Dh) and whatever
// the extensions contribute (`SCSIDeviceExtension.logPages(for:)`, e.g. the Group Statistics
// and Performance pages of SBC streams). The device answers the two listing pages itself:
// Supported Log Pages (00h/00h) and Supported Log Pages and Subpages (00h/FFh), plus the
// Supported Subpages page (xxh/FFh) of every page code it has.
//
// Nothing is saveable: SP = 1 is outside both usage masks (INVALID FIELD IN CDB, byte 1 bit 0)
// and every page header has DS = 1. The PPC bit (obsolete since SPC-4) is not interpreted
// either (byte 1 bit 1). LOG SELECT resets values (PCR = 1, or PC = 11b with PCR = 0) but
// takes no parameter list: PARAMETER LIST LENGTH is outside its usage mask.
//

/// The PC field of LOG SENSE and LOG SELECT: which values of a log page.
public enum LogPageControl: UInt8, Sendable {
    case threshold = 0, cumulative = 1, defaultThreshold = 2, defaultCumulative = 3
}

/// One log parameter (SPC-4 §7.3.2.2): PARAMETER CODE, the control byte, the value.
public struct LogParameter: Sendable, Equatable {
    public var code: UInt16
    public var control: UInt8
    public var value: [UInt8]

    /// DU 0, TSD 0, ETC 0, TMC 00b, FORMAT AND LINKING 11b (binary format list): what SPC
    /// fixes for the statistics and temperature parameters.
    public static let binaryFormatList: UInt8 = 0x03

    public init(code: UInt16, control: UInt8 = LogParameter.binaryFormatList, value: [UInt8]) {
        precondition(value.count <= 255, "PARAMETER LENGTH is one byte")
        self.code = code
        self.control = control
        self.value = value
    }

    /// The parameter as it appears in a log page.
    public var bytes: [UInt8] {
        [UInt8(truncatingIfNeeded: self.code >> 8), UInt8(truncatingIfNeeded: self.code), self.control,
         UInt8(self.value.count)] + self.value
    }
}

/// A log page (or subpage) for one logical unit.
public protocol LogPageProvider: Sendable {
    /// PAGE CODE (01h–3Fh; 00h is the device's own listing).
    var pageCode: UInt8 { get }
    /// SUBPAGE CODE (00h–FEh; FFh is the device's own listing).
    var subpageCode: UInt8 { get }
    /// The page's parameters for `control`, any order (the device sorts them by code).
    func parameters(_ control: LogPageControl) -> [LogParameter]
    /// LOG SELECT asked for the cumulative values to return to their defaults. Returns true if
    /// anything changed (the device then raises LOG PARAMETERS CHANGED for the other nexuses).
    /// Default: nothing to reset.
    func resetCumulativeValues() -> Bool
}

extension LogPageProvider {
    public func resetCumulativeValues() -> Bool { false }
}

/// Temperature log page (0Dh, SPC-4 §7.3.21). An emulated disk has no sensor: TEMPERATURE and
/// REFERENCE TEMPERATURE are FFh, "not available", for every PC value.
struct TemperatureLogPage: LogPageProvider {
    var pageCode: UInt8 { 0x0D }
    var subpageCode: UInt8 { 0x00 }

    func parameters(_ control: LogPageControl) -> [LogParameter] {
        [LogParameter(code: 0x0000, value: [0x00, 0xFF]), LogParameter(code: 0x0001, value: [0x00, 0xFF])]
    }
}

extension AdditionalSenseCode {
    public static let logParametersChanged = AdditionalSenseCode(0x2A, 0x02)
}

extension SCSITargetDevice {
    static let logDescriptors: [CommandDescriptor] = [
        CommandDescriptor(0x4C, "LOG SELECT", usage: [0x4C, 0x02, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0x00],
                          flags: [.modifiesUnderPersistentReservation], handler: { try logSelect($0) }),
        CommandDescriptor(0x4D, "LOG SENSE", usage: [0x4D, 0x00, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x00],
                          direction: .dataIn, flags: [.allowedUnderReservation], handler: { try logSense($0) }),
    ]

    /// The log pages of `unit`, in (page code, subpage code) order.
    func logPages(for unit: LogicalUnit) -> [any LogPageProvider] {
        let pages: [any LogPageProvider] = [TemperatureLogPage()] + self.extensions.flatMap { $0.logPages(for: unit) }
        return pages.sorted { ($0.pageCode, $0.subpageCode) < ($1.pageCode, $1.subpageCode) }
    }

    /// Every (page, subpage) LOG SENSE answers, ascending: the listings and the providers'.
    static func supportedLogPages(_ pages: [any LogPageProvider]) -> [(page: UInt8, subpage: UInt8)] {
        var listed: Set<UInt16> = [0x0000, 0x00FF]
        for page in pages {
            listed.insert(UInt16(page.pageCode) << 8 | UInt16(page.subpageCode))
            listed.insert(UInt16(page.pageCode) << 8 | 0xFF)
        }
        return listed.sorted().map { (UInt8($0 >> 8), UInt8($0 & 0xFF)) }
    }

    static func logSense(_ context: CommandContext) throws -> CommandOutcome {
        let cdb = context.cdb
        let control = LogPageControl(rawValue: cdb[2] >> 6)!
        let pageCode = cdb[2] & 0x3F
        let subpageCode = cdb[3]
        let pointer = cdb.bigEndian16(at: 5)
        let allocationLength = Int(cdb.bigEndian16(at: 7))
        let pages = context.device.logPages(for: context.lu)
        let supported = supportedLogPages(pages)

        var body: [UInt8] = []
        var header: UInt8 = pageCode
        if subpageCode == 0xFF || (pageCode == 0x00 && subpageCode == 0x00) {
            // Supported Log Pages (00h), Supported Log Pages and Subpages (00h/FFh), Supported
            // Subpages (xxh/FFh): lists without parameter codes, so PARAMETER POINTER must be 0.
            guard supported.contains(where: { $0.page == pageCode }) else { throw SCSIError.invalidFieldInCDB(byte: 2, bit: 5) }
            if pointer != 0 { throw SCSIError.invalidFieldInCDB(byte: 5, bit: 7) }
            if subpageCode == 0x00 {
                var codes: [UInt8] = []
                for entry in supported where codes.last != entry.page { codes.append(entry.page) }
                body = codes
            } else {
                header |= 0x40
                body = supported.filter { pageCode == 0x00 || $0.page == pageCode }.flatMap { [$0.page, $0.subpage] }
            }
        } else {
            guard let provider = pages.first(where: { $0.pageCode == pageCode && $0.subpageCode == subpageCode }) else {
                throw supported.contains(where: { $0.page == pageCode })
                    ? SCSIError.invalidFieldInCDB(byte: 3, bit: 7) : SCSIError.invalidFieldInCDB(byte: 2, bit: 5)
            }
            let parameters = provider.parameters(control).sorted { $0.code < $1.code }
            // A pointer beyond the last parameter code: INVALID FIELD IN CDB (SPC-4 §6.6).
            if pointer > (parameters.last?.code ?? 0) { throw SCSIError.invalidFieldInCDB(byte: 5, bit: 7) }
            header |= 0x80 | (subpageCode != 0 ? 0x40 : 0)  // DS: not saveable; SPF
            body = parameters.filter { $0.code >= pointer }.flatMap(\.bytes)
        }
        var data: [UInt8] = [header, subpageCode, 0, 0]
        data.setBigEndian16(UInt16(body.count), at: 2)
        data += body
        return .complete(.parameterData(data, allocationLength: allocationLength))
    }

    /// LOG SELECT without a parameter list: PCR = 1 resets the values PC selects (cumulative
    /// for 01b/11b; thresholds, which no page has, for 00b/10b) of the addressed page, or of
    /// every page when PAGE CODE and SUBPAGE CODE are 0; PCR = 0 with PC = 11b resets the
    /// cumulative values the same way; any other combination changes nothing.
    static func logSelect(_ context: CommandContext) throws -> CommandOutcome {
        let cdb = context.cdb
        let unit = context.lu
        let device = context.device
        let parameterCodeReset = cdb[1] & 0x02 != 0
        let control = LogPageControl(rawValue: cdb[2] >> 6)!
        let pageCode = cdb[2] & 0x3F
        let subpageCode = cdb[3]
        let pages = device.logPages(for: unit)
        let addressed: [any LogPageProvider]
        if pageCode == 0 && subpageCode == 0 {
            addressed = pages
        } else {
            guard pages.contains(where: { $0.pageCode == pageCode }) else { throw SCSIError.invalidFieldInCDB(byte: 2, bit: 5) }
            addressed = pages.filter { $0.pageCode == pageCode && $0.subpageCode == subpageCode }
            if addressed.isEmpty { throw SCSIError.invalidFieldInCDB(byte: 3, bit: 7) }
        }
        let resetsCumulative = control == .defaultCumulative || (parameterCodeReset && control == .cumulative)
        guard resetsCumulative else { return .complete(.good) }
        var changed = false
        for page in addressed where page.resetCumulativeValues() { changed = true }
        if changed {
            unit.raiseUnitAttention(.logParametersChanged, for: device.openNexuses(except: NexusKey(context.nexus)))
        }
        return .complete(.good)
    }
}

//
// MODE SENSE(6)/(10) and MODE SELECT(6)/(10) (SPC-4 §6.11–6.14, §7.5; SBC-4 §6.5).
//
// Pages: Read-Write Error Recovery (01h), Caching (08h, WCE changeable), Control (0Ah,
// D_SENSE changeable) and Informational Exceptions Control (1Ch). No page is saveable:
// PC = 11b (saved values) and MODE SELECT with SP = 1 are answered with ILLEGAL REQUEST,
// SAVING PARAMETERS NOT SUPPORTED (39/00), as SPC-4 §6.11 prescribes when saved values
// are not implemented. Defaults come from the configuration; a LU reset restores them.
//

extension ModeParameters {
    static func defaults(for configuration: LogicalUnitConfiguration) -> ModeParameters {
        ModeParameters(writeCacheEnabled: configuration.writeCacheEnabled, descriptorSense: false)
    }
}

/// The PC field of MODE SENSE: which values of a page are asked for.
public enum ModePageControl: UInt8, Sendable {
    case current = 0, changeable = 1, defaults = 2, saved = 3
}

/// The mode pages this device implements, in page code order.
enum ModePage: UInt8, CaseIterable {
    case readWriteErrorRecovery = 0x01
    case caching = 0x08
    case control = 0x0A
    case informationalExceptions = 0x1C

    /// The PAGE LENGTH field value (bytes after byte 1).
    var pageLength: Int {
        switch self {
        case .readWriteErrorRecovery: 0x0A
        case .caching: 0x12
        case .control: 0x0A
        case .informationalExceptions: 0x0A
        }
    }

    /// The page with the given values (PS = 0, SPF = 0).
    func bytes(_ values: ModeParameters) -> [UInt8] {
        var page = [UInt8](repeating: 0, count: self.pageLength + 2)
        page[0] = self.rawValue
        page[1] = UInt8(self.pageLength)
        switch self {
        case .readWriteErrorRecovery:
            break  // no automatic reallocation, no retries reported, no recovery time limit
        case .caching:
            page[2] = values.writeCacheEnabled ? 0x04 : 0x00  // WCE; RCD = 0 (read cache enabled)
        case .control:
            page[2] = 0x02 | (values.descriptorSense ? 0x04 : 0x00)  // GLTSD, D_SENSE; TST = 000b
            page[3] = 0x10  // QUEUE ALGORITHM MODIFIER 1 (unrestricted reordering), QERR 00b
            page[4] = values.softwareWriteProtect ? 0x08 : 0x00  // SWP
            page.setBigEndian16(0xFFFF, at: 8)  // BUSY TIMEOUT PERIOD: unlimited
        case .informationalExceptions:
            page[2] = 0x08  // DEXCPT: informational exception reporting disabled; MRIE 0
        }
        return page
    }

    /// The changeable-values mask (PC = 01b).
    var changeableMask: [UInt8] {
        var page = [UInt8](repeating: 0, count: self.pageLength + 2)
        page[0] = self.rawValue
        page[1] = UInt8(self.pageLength)
        switch self {
        case .caching: page[2] = 0x04  // WCE
        case .control:
            page[2] = 0x04  // D_SENSE
            page[4] = 0x08  // SWP
        case .readWriteErrorRecovery, .informationalExceptions: break
        }
        return page
    }

    /// Reads the changeable values this page carries back into `values`.
    func apply(_ page: [UInt8], to values: inout ModeParameters) {
        switch self {
        case .caching: values.writeCacheEnabled = page[2] & 0x04 != 0
        case .control:
            values.descriptorSense = page[2] & 0x04 != 0
            values.softwareWriteProtect = page[4] & 0x08 != 0
        case .readWriteErrorRecovery, .informationalExceptions: break
        }
    }
}

extension SCSITargetDevice {
    static func modeSense6(_ context: CommandContext) throws -> CommandOutcome {
        try modeSense(context, tenByte: false)
    }

    static func modeSense10(_ context: CommandContext) throws -> CommandOutcome {
        try modeSense(context, tenByte: true)
    }

    private static func modeSense(_ context: CommandContext, tenByte: Bool) throws -> CommandOutcome {
        let cdb = context.cdb
        let unit = context.lu
        let disableBlockDescriptors = cdb[1] & 0x08 != 0
        let longLBAAccepted = tenByte && cdb[1] & 0x10 != 0
        let control = ModePageControl(rawValue: cdb[2] >> 6)!
        let pageCode = cdb[2] & 0x3F
        let subpageCode = cdb[3]
        let allocationLength = tenByte ? Int(cdb.bigEndian16(at: 7)) : Int(cdb[4])

        // Built-in pages and extension pages/subpages, in (page code, subpage code) order.
        let extensionPages = context.device.extensionModePages(for: unit)
        var available: [(page: UInt8, subpage: UInt8, source: ModePageSource)] =
            ModePage.allCases.map { ($0.rawValue, 0, .builtIn($0)) }
        available += extensionPages.map { ($0.pageCode, $0.subpageCode, .provided($0)) }
        available.sort { ($0.page, $0.subpage) < ($1.page, $1.subpage) }
        let selected: [ModePageSource]
        if pageCode == 0x3F {
            guard subpageCode == 0x00 || subpageCode == 0xFF else { throw SCSIError.invalidFieldInCDB(byte: 3, bit: 7) }
            selected = available.filter { subpageCode == 0xFF || $0.subpage == 0 }.map(\.source)
        } else {
            let samePage = available.filter { $0.page == pageCode }
            guard !samePage.isEmpty else { throw SCSIError.invalidFieldInCDB(byte: 2, bit: 5) }
            if subpageCode == 0xFF {
                selected = samePage.map(\.source)
            } else {
                guard let match = samePage.first(where: { $0.subpage == subpageCode }) else {
                    throw subpageCode == 0x00
                        ? SCSIError.invalidFieldInCDB(byte: 2, bit: 5) : SCSIError.invalidFieldInCDB(byte: 3, bit: 7)
                }
                selected = [match.source]
            }
        }

        let values: ModeParameters
        switch control {
        case .current: values = unit.modeParameters
        case .defaults, .changeable: values = ModeParameters.defaults(for: unit.configuration)
        case .saved: throw SCSIError(.illegalRequest, .savingParametersNotSupported)
        }
        var pageData: [UInt8] = []
        for source in selected {
            switch source {
            case .builtIn(let page):
                pageData += control == .changeable ? page.changeableMask : page.bytes(values)
            case .provided(let provider):
                pageData += provider.bytes(control)
            }
        }

        var blockDescriptor: [UInt8] = []
        if !disableBlockDescriptors {
            if longLBAAccepted {
                blockDescriptor.appendBigEndian64(unit.blockCount)
                blockDescriptor.appendBigEndian32(0)
                blockDescriptor.appendBigEndian32(UInt32(unit.blockSize))
            } else {
                blockDescriptor.appendBigEndian32(UInt32(min(unit.blockCount, UInt64(UInt32.max))))
                blockDescriptor.append(0)
                blockDescriptor += [UInt8(truncatingIfNeeded: unit.blockSize >> 16),
                                    UInt8(truncatingIfNeeded: unit.blockSize >> 8),
                                    UInt8(truncatingIfNeeded: unit.blockSize)]
            }
        }
        // DEVICE-SPECIFIC PARAMETER (SBC-4 §6.5.1): WP, DPOFUA.
        let deviceSpecific: UInt8 = (unit.isWriteProtected ? 0x80 : 0x00) | 0x10
        var data: [UInt8]
        if tenByte {
            data = [0, 0, 0x00, deviceSpecific, longLBAAccepted && !blockDescriptor.isEmpty ? 0x01 : 0x00, 0, 0, 0]
            data.setBigEndian16(UInt16(blockDescriptor.count), at: 6)
            data += blockDescriptor + pageData
            data.setBigEndian16(UInt16(data.count - 2), at: 0)
        } else {
            data = [0, 0x00, deviceSpecific, UInt8(blockDescriptor.count)]
            data += blockDescriptor + pageData
            data[0] = UInt8(min(data.count - 1, 255))
        }
        return .complete(.parameterData(data, allocationLength: allocationLength))
    }

    static func modeSelect6(_ context: CommandContext) throws -> CommandOutcome {
        try modeSelect(context, tenByte: false)
    }

    static func modeSelect10(_ context: CommandContext) throws -> CommandOutcome {
        try modeSelect(context, tenByte: true)
    }

    private static func modeSelect(_ context: CommandContext, tenByte: Bool) throws -> CommandOutcome {
        let cdb = context.cdb
        let unit = context.lu
        let device = context.device
        let origin = NexusKey(context.nexus)
        if cdb[1] & 0x01 != 0 { throw SCSIError(.illegalRequest, .savingParametersNotSupported) }
        let parameterListLength = tenByte ? Int(cdb.bigEndian16(at: 7)) : Int(cdb[4])
        if parameterListLength == 0 { return .complete(.good) }
        return .execute(wantsDataOut: true, mayBlock: true) { dataOut in
            guard var buffer = dataOut, buffer.readableBytes >= parameterListLength,
                  let list = buffer.readBytes(length: parameterListLength) else {
                throw SCSIError.parameterListLengthError
            }
            let old = unit.modeParameters
            var staged: [(any ModePageProvider, [UInt8])] = []
            let new = try parseModeParameterList(list, tenByte: tenByte, unit: unit, current: old,
                                                 extensionPages: device.extensionModePages(for: unit),
                                                 staged: &staged)
            if old.writeCacheEnabled && !new.writeCacheEnabled {
                try unit.store.flush()
            }
            var changed = unit.setModeParameters(new)
            for (provider, page) in staged where provider.apply(page) { changed = true }
            if changed {
                unit.raiseUnitAttention(.modeParametersChanged, for: device.openNexuses(except: origin))
            }
            return .good
        }
    }

    /// Validates a whole MODE SELECT parameter list and returns the values it sets. Nothing
    /// is applied unless every page is acceptable.
    /// Extension pages are validated here and returned in `staged`, for the caller to apply.
    static func parseModeParameterList(_ list: [UInt8], tenByte: Bool, unit: LogicalUnit,
                                       current: ModeParameters,
                                       extensionPages: [any ModePageProvider] = [],
                                       staged: inout [(any ModePageProvider, [UInt8])]) throws -> ModeParameters {
        let headerLength = tenByte ? 8 : 4
        guard list.count >= headerLength else { throw SCSIError.parameterListLengthError }
        let mediumTypeOffset = tenByte ? 2 : 1
        if list[mediumTypeOffset] != 0 { throw SCSIError.invalidFieldInParameterList(byte: mediumTypeOffset, bit: 7) }
        let longLBA = tenByte && list[4] & 0x01 != 0
        let blockDescriptorLength = tenByte ? Int(list.bigEndian16(at: 6)) : Int(list[3])
        let expectedDescriptorLength = longLBA ? 16 : 8
        if blockDescriptorLength != 0 && blockDescriptorLength != expectedDescriptorLength {
            throw SCSIError.invalidFieldInParameterList(byte: tenByte ? 6 : 3, bit: 7)
        }
        guard list.count >= headerLength + blockDescriptorLength else { throw SCSIError.parameterListLengthError }
        if blockDescriptorLength > 0 {
            let lengthOffset = headerLength + (longLBA ? 12 : 5)
            let blockLength = longLBA ? Int(list.bigEndian32(at: lengthOffset)) : Int(list.bigEndian24(at: lengthOffset))
            if blockLength != unit.blockSize {
                throw SCSIError.invalidFieldInParameterList(byte: lengthOffset, bit: 7)
            }
        }
        var values = current
        var offset = headerLength + blockDescriptorLength
        while offset < list.count {
            guard offset + 2 <= list.count else { throw SCSIError.parameterListLengthError }
            let subpageFormat = list[offset] & 0x40 != 0
            if let provider = extensionPages.first(where: {
                $0.pageCode == list[offset] & 0x3F && $0.subpageCode == (subpageFormat ? list[offset + 1] : 0)
            }) {
                offset = try stageExtensionPage(list, at: offset, provider: provider, staged: &staged)
                continue
            }
            if subpageFormat {
                // Sub-page format: none of our pages has sub-pages.
                throw SCSIError.invalidFieldInParameterList(byte: offset, bit: 6)
            }
            guard let page = ModePage(rawValue: list[offset] & 0x3F) else {
                throw SCSIError.invalidFieldInParameterList(byte: offset, bit: 5)
            }
            let length = Int(list[offset + 1])
            guard offset + 2 + length <= list.count else { throw SCSIError.parameterListLengthError }
            guard length == page.pageLength else {
                throw SCSIError.invalidFieldInParameterList(byte: offset + 1, bit: 7)
            }
            let sent = Array(list[offset..<(offset + 2 + length)])
            let reference = page.bytes(values)
            let changeable = page.changeableMask
            for index in 2..<sent.count {
                let wrong = (sent[index] ^ reference[index]) & ~changeable[index]
                if wrong != 0 {
                    throw SCSIError.invalidFieldInParameterList(byte: offset + index, bit: 7 - wrong.leadingZeroBitCount)
                }
            }
            page.apply(sent, to: &values)
            offset += 2 + length
        }
        return values
    }
}

/// Where MODE SENSE takes a page from.
enum ModePageSource {
    case builtIn(ModePage)
    case provided(any ModePageProvider)
}

extension SCSITargetDevice {
    /// Checks one extension page of a MODE SELECT parameter list (length as the current page,
    /// only changeable bits differing from the current values, then the provider's own
    /// checks) and stages it; returns the offset of the next page.
    static func stageExtensionPage(_ list: [UInt8], at offset: Int, provider: any ModePageProvider,
                                   staged: inout [(any ModePageProvider, [UInt8])]) throws -> Int {
        let subpageFormat = list[offset] & 0x40 != 0
        let headerLength = subpageFormat ? 4 : 2
        guard offset + headerLength <= list.count else { throw SCSIError.parameterListLengthError }
        let length = subpageFormat ? Int(list.bigEndian16(at: offset + 2)) : Int(list[offset + 1])
        guard offset + headerLength + length <= list.count else { throw SCSIError.parameterListLengthError }
        let reference = provider.bytes(.current)
        let changeable = provider.bytes(.changeable)
        guard headerLength + length == reference.count else {
            throw SCSIError.invalidFieldInParameterList(byte: offset + (subpageFormat ? 2 : 1), bit: 7)
        }
        let sent = Array(list[offset..<(offset + headerLength + length)])
        for index in headerLength..<sent.count {
            let wrong = (sent[index] ^ reference[index]) & ~changeable.byte(index)
            if wrong != 0 {
                throw SCSIError.invalidFieldInParameterList(byte: offset + index, bit: 7 - wrong.leadingZeroBitCount)
            }
        }
        try provider.validate(sent, offset: offset)
        staged.append((provider, sent))
        return offset + headerLength + length
    }
}

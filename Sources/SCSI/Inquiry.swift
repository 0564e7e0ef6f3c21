//
// INQUIRY: standard data (SPC-4 §6.6.2) and the vital product data pages (SPC-4 §7.8,
// SBC-4 §6.6).
//

enum VPDPage: UInt8, CaseIterable {
    case supportedPages = 0x00
    case unitSerialNumber = 0x80
    case deviceIdentification = 0x83
    case extendedInquiry = 0x86
    case blockLimits = 0xB0
    case blockDeviceCharacteristics = 0xB1
    case logicalBlockProvisioning = 0xB2
}

/// SPC-4 Annex E version descriptors (no version claimed).
enum VersionDescriptor {
    static let sam5: UInt16 = 0x00A0
    static let iSCSI: UInt16 = 0x0960
    static let spc4: UInt16 = 0x0460
    static let sbc3: UInt16 = 0x04C0
}

extension SCSITargetDevice {
    static func inquiry(_ context: CommandContext) throws -> CommandOutcome {
        let cdb = context.cdb
        let evpd = cdb[1] & 0x01 != 0
        let pageCode = cdb.byte(2)
        let allocationLength = Int(cdb.bigEndian16(at: 3))
        let data: [UInt8]
        if !evpd {
            guard pageCode == 0 else { throw SCSIError.invalidFieldInCDB(byte: 2, bit: 7) }
            data = context.device.standardInquiryData(for: context.unit)
        } else {
            guard let unit = context.unit else { throw SCSIError.logicalUnitNotSupported }
            if let page = VPDPage(rawValue: pageCode) {
                data = context.device.vpdPage(page, unit: unit, nexus: context.nexus)
            } else if context.device.extensionVPDPageCodes(for: unit).contains(pageCode),
                      let body = context.device.extensionVPDPage(pageCode, for: unit) {
                var page: [UInt8] = [0x00, pageCode]
                page.appendBigEndian16(UInt16(body.count))
                data = page + body
            } else {
                throw SCSIError.invalidFieldInCDB(byte: 2, bit: 7)
            }
        }
        return .complete(.parameterData(data, allocationLength: allocationLength))
    }

    /// Standard INQUIRY data, 96 bytes. A LUN that does not exist answers PERIPHERAL
    /// QUALIFIER 011b, PERIPHERAL DEVICE TYPE 1Fh.
    func standardInquiryData(for unit: LogicalUnit?) -> [UInt8] {
        let lu = unit?.configuration ?? self.logicalUnits.first?.configuration ?? self.configuration.logicalUnits.first
        var data: [UInt8] = []
        data.append(unit == nil ? 0x7F : 0x00)  // PQ 000b / PDT 00h direct access block device
        data.append(lu?.removable == true && unit != nil ? 0x80 : 0x00)  // RMB
        data.append(0x06)  // VERSION: SPC-4
        data.append(0x12)  // NORMACA 0, HISUP 1, RESPONSE DATA FORMAT 2
        data.append(96 - 5)  // ADDITIONAL LENGTH
        data.append(lu?.thirdPartyCopy == true ? 0x08 : 0x00)  // SCCS 0, ACC 0, TPGS 00b, 3PC, PROTECT 0
        data.append(0x00)  // ENCSERV 0, MULTIP 0
        data.append(0x02)  // CMDQUE 1
        data.appendPaddedASCII(lu?.vendor ?? "SWIFT", width: 8)
        data.appendPaddedASCII(lu?.product ?? "ISCSI DISK", width: 16)
        data.appendPaddedASCII(lu?.revision ?? "0001", width: 4)
        data += [UInt8](repeating: 0, count: 20)  // 36–55 vendor specific
        data += [0x00, 0x00]  // 56 CLOCKING/QAS/IUS, 57 reserved
        for descriptor in [VersionDescriptor.sam5, VersionDescriptor.iSCSI, VersionDescriptor.spc4,
                           VersionDescriptor.sbc3] {
            data.appendBigEndian16(descriptor)
        }
        data += [UInt8](repeating: 0, count: 96 - data.count)
        for ext in self.extensions {
            for (offset, bits) in ext.standardInquiryBits(for: unit) where offset < data.count { data[offset] |= bits }
        }
        return data
    }

    func vpdPage(_ page: VPDPage, unit: LogicalUnit, nexus: ITNexus) -> [UInt8] {
        let lu = unit.configuration
        var body: [UInt8] = []
        switch page {
        case .supportedPages:
            body = (VPDPage.allCases.map(\.rawValue) + self.extensionVPDPageCodes(for: unit)).sorted()
        case .unitSerialNumber:
            body = lu.serialNumber.utf8.map { $0 >= 0x20 && $0 < 0x7F ? $0 : UInt8(ascii: "_") }
        case .deviceIdentification:
            body = self.deviceIdentificationDesignators(unit: unit, nexus: nexus)
        case .extendedInquiry:
            body = [UInt8](repeating: 0, count: 0x3C)
            body[1] = 0x07  // byte 5: HEADSUP, ORDSUP, SIMPSUP
            body[2] = 0x01  // byte 6: V_SUP (volatile cache present)
            body[3] = 0x01  // byte 7: LUICLR (unit attentions are per I_T nexus)
        case .blockLimits:
            body = self.blockLimitsPage(lu)
        case .blockDeviceCharacteristics:
            body = [UInt8](repeating: 0, count: 0x3C)
            body.setBigEndian16(lu.nonRotational ? 0x0001 : 0x0000, at: 0)  // MEDIUM ROTATION RATE
            // Byte 7: WABEREQ and WACEREQ 01b where SANITIZE BLOCK ERASE and CRYPTOGRAPHIC ERASE
            // are offered (thin LUs): reads after an erase complete GOOD (with zeros).
            body[3] = lu.thinProvisioned ? 0x40 | 0x10 : 0x00
        case .logicalBlockProvisioning:
            body = [0, 0, 0, 0]
            if lu.thinProvisioned {
                // LBPU, LBPWS, LBPWS10, LBPRZ (SBC-4 LBPRZ = 001b); provisioning type: thin.
                body[1] = 0x80 | 0x40 | 0x20 | 0x04
                body[2] = 0x02
            }
        }
        var data: [UInt8] = [0x00, page.rawValue]
        data.appendBigEndian16(UInt16(body.count))
        data += body
        if page == .extendedInquiry {
            for ext in self.extensions {
                for (offset, bits) in ext.extendedInquiryBits(for: unit) where offset >= 4 && offset < data.count {
                    data[offset] |= bits
                }
            }
        }
        return data
    }

    /// Block Limits (SBC-4 §6.6.4), page length 3Ch.
    func blockLimitsPage(_ lu: LogicalUnitConfiguration) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 0x3C)
        body[0] = 0x01  // byte 4: WSNZ (a WRITE SAME of 0 blocks is not "to the end")
        body[1] = lu.maximumCompareAndWriteBlocks  // byte 5
        let granularity = max(UInt16(1) << lu.physicalBlockExponent, UInt16(max(1, 4096 / lu.blockSize)))
        body.setBigEndian16(granularity, at: 2)  // bytes 6–7 OPTIMAL TRANSFER LENGTH GRANULARITY
        body.setBigEndian32(lu.maximumTransferBlocks, at: 4)  // 8–11
        body.setBigEndian32(min(lu.optimalTransferBlocks, lu.maximumTransferBlocks), at: 8)  // 12–15
        body.setBigEndian32(lu.maximumTransferBlocks, at: 12)  // 16–19 MAXIMUM PREFETCH LENGTH
        if lu.thinProvisioned {
            body.setBigEndian32(lu.maximumUnmapBlocks, at: 16)  // 20–23
            body.setBigEndian32(lu.maximumUnmapDescriptors, at: 20)  // 24–27
            body.setBigEndian32(UInt32(1) << lu.physicalBlockExponent, at: 24)  // 28–31 OPTIMAL UNMAP GRANULARITY
            body.setBigEndian32(0x8000_0000, at: 28)  // 32–35 UGAVALID, alignment 0
        }
        body.setBigEndian64(lu.maximumWriteSameBlocks, at: 32)  // 36–43
        body.setBigEndian32(lu.maximumAtomicTransferBlocks, at: 40)  // 44–47 MAXIMUM ATOMIC TRANSFER LENGTH
        body.setBigEndian32(lu.atomicAlignmentBlocks, at: 44)  // 48–51 ATOMIC ALIGNMENT
        body.setBigEndian32(lu.atomicGranularityBlocks, at: 48)  // 52–55 ATOMIC TRANSFER LENGTH GRANULARITY
        // 56–63: no atomic boundaries (MAXIMUM ATOMIC BOUNDARY SIZE 0).
        return body
    }

    /// Device Identification designators (SPC-4 §7.8.6).
    func deviceIdentificationDesignators(unit: LogicalUnit, nexus: ITNexus) -> [UInt8] {
        let lu = unit.configuration
        var out: [UInt8] = []
        func designator(protocolIdentifier: UInt8?, codeSet: UInt8, association: UInt8, type: UInt8,
                        _ value: [UInt8]) {
            let piv: UInt8 = protocolIdentifier == nil ? 0 : 0x80
            out.append((protocolIdentifier ?? 0) << 4 | codeSet)
            out.append(piv | association << 4 | type)
            out.append(0)
            out.append(UInt8(value.count))
            out += value
        }
        let iSCSIProtocol: UInt8 = 0x5
        // NAA IEEE Registered Extended, logical unit.
        designator(protocolIdentifier: nil, codeSet: 1, association: 0, type: 3, lu.naaIdentifier)
        // T10 vendor ID based, logical unit: vendor (8) + product (16) + serial.
        var t10: [UInt8] = []
        t10.appendPaddedASCII(lu.vendor, width: 8)
        t10.appendPaddedASCII(lu.product, width: 16)
        t10 += lu.serialNumber.utf8
        designator(protocolIdentifier: nil, codeSet: 2, association: 0, type: 1, t10)
        // Relative target port and target port group, target port association.
        let relativePort = nexus.relativeTargetPort == 0 ? self.configuration.targetPortGroupTag : nexus.relativeTargetPort
        designator(protocolIdentifier: iSCSIProtocol, codeSet: 1, association: 1, type: 4,
                   [0, 0, UInt8(relativePort >> 8), UInt8(relativePort & 0xFF)])
        let group = self.configuration.targetPortGroupTag
        designator(protocolIdentifier: iSCSIProtocol, codeSet: 1, association: 1, type: 5,
                   [0, 0, UInt8(group >> 8), UInt8(group & 0xFF)])
        // SCSI name strings: target port (",t,0x" + TPGT) and target device (the iSCSI name).
        let portName = nexus.targetPortName.isEmpty ? self.configuration.targetPortName : nexus.targetPortName
        designator(protocolIdentifier: iSCSIProtocol, codeSet: 3, association: 1, type: 8, scsiNameString(portName))
        designator(protocolIdentifier: iSCSIProtocol, codeSet: 3, association: 2, type: 8,
                   scsiNameString(self.configuration.targetName))
        return out
    }
}

/// UTF-8, null terminated, null padded to a multiple of four bytes (SPC-4 §7.8.6.11), at most 252.
func scsiNameString(_ name: String) -> [UInt8] {
    var bytes = Array(name.utf8.prefix(251))
    bytes.append(0)
    while bytes.count % 4 != 0 { bytes.append(0) }
    return bytes
}

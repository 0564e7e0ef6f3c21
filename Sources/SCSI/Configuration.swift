//
// What the server tells the device model about each logical unit and the target.
//

/// One logical unit: geometry, identity strings and the few behaviours an operator picks.
public struct LogicalUnitConfiguration: Sendable, Equatable {
    /// The LUN (0–16383; < 256 is reported with peripheral addressing, above with flat).
    public var number: UInt16
    /// Logical block size in bytes: 512 or 4096 (any power of two ≥ 512 works).
    public var blockSize: Int
    /// Number of logical blocks. The device uses min(blockCount, store.byteCount / blockSize).
    public var blockCount: UInt64
    /// VPD 0x80 UNIT SERIAL NUMBER (ASCII).
    public var serialNumber: String
    /// VPD 0x83 NAA designator: 16 bytes, NAA type 6 (IEEE Registered Extended).
    public var naaIdentifier: [UInt8]
    /// INQUIRY T10 VENDOR IDENTIFICATION (8), PRODUCT IDENTIFICATION (16), PRODUCT REVISION LEVEL (4).
    public var vendor: String
    public var product: String
    public var revision: String
    /// Initial (and default) value of the Caching mode page WCE bit. With WCE = 0 every
    /// write is made durable before GOOD.
    public var writeCacheEnabled: Bool
    /// Reported with the WP bit; every medium-modifying command gets DATA PROTECT, WRITE PROTECTED.
    public var readOnly: Bool
    /// Thin provisioning: LBPME in READ CAPACITY(16), UNMAP and WRITE SAME with UNMAP deallocate.
    public var thinProvisioned: Bool
    /// VPD 0xB1 MEDIUM ROTATION RATE = 1 (non-rotating medium).
    public var nonRotational: Bool
    /// VPD 0xB0 MAXIMUM TRANSFER LENGTH in logical blocks; longer READ/WRITE/VERIFY are
    /// INVALID FIELD IN CDB.
    public var maximumTransferBlocks: UInt32
    /// VPD 0xB0 OPTIMAL TRANSFER LENGTH in logical blocks (0: not reported).
    public var optimalTransferBlocks: UInt32
    /// VPD 0xB0 MAXIMUM COMPARE AND WRITE LENGTH in logical blocks (1–255).
    public var maximumCompareAndWriteBlocks: UInt8
    /// LUN masking: the initiator names (lowercase) that see this LU; nil: every initiator.
    /// To any other initiator the LUN does not exist (REPORT LUNS, commands, task management).
    public var visibleTo: Set<String>? = nil
    /// VPD 0xB0 MAXIMUM WRITE SAME LENGTH in logical blocks (default: the maximum transfer length).
    public var maximumWriteSameBlocks: UInt64
    /// VPD 0xB0 MAXIMUM UNMAP LBA COUNT and MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    public var maximumUnmapBlocks: UInt32
    public var maximumUnmapDescriptors: UInt32
    /// READ CAPACITY(16) LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT (0: physical = logical).
    public var physicalBlockExponent: UInt8
    /// INQUIRY 3PC bit: third-party copy (EXTENDED COPY) support. Off until copy offload exists.
    public var thirdPartyCopy: Bool
    /// Removable medium: INQUIRY RMB = 1; PREVENT ALLOW MEDIUM REMOVAL and START STOP UNIT
    /// with LOEJ act on the medium (an ejected medium is "not present" until loaded).
    public var removable: Bool = false
    /// READ(32) and WRITE(32) are offered (without protection information).
    public var offersReadWrite32: Bool = false
    /// A SANITIZE operation lasts at least this long (emulates a drive whose sanitize takes time).
    public var sanitizeMinimumSeconds: Double = 0
    /// APTPL: persistent reservations survive a restart in this file (nil: not supported).
    public var reservationStatePath: String? = nil

    public init(number: UInt16, blockSize: Int = 512, blockCount: UInt64, serialNumber: String,
                naaIdentifier: [UInt8], vendor: String = "SWIFT", product: String = "ISCSI DISK",
                revision: String = "0001", writeCacheEnabled: Bool = true, readOnly: Bool = false,
                thinProvisioned: Bool = false, nonRotational: Bool = false,
                maximumTransferBlocks: UInt32? = nil, optimalTransferBlocks: UInt32? = nil,
                maximumCompareAndWriteBlocks: UInt8 = 255, maximumWriteSameBlocks: UInt64? = nil,
                maximumUnmapBlocks: UInt32? = nil, maximumUnmapDescriptors: UInt32 = 256,
                physicalBlockExponent: UInt8 = 0, thirdPartyCopy: Bool = false) {
        precondition(blockSize >= 512 && blockSize & (blockSize - 1) == 0, "block size must be a power of two ≥ 512")
        precondition(naaIdentifier.count == 16, "NAA identifier must be 16 bytes")
        self.number = number
        self.blockSize = blockSize
        self.blockCount = blockCount
        self.serialNumber = serialNumber
        self.naaIdentifier = naaIdentifier
        self.vendor = vendor
        self.product = product
        self.revision = revision
        self.writeCacheEnabled = writeCacheEnabled
        self.readOnly = readOnly
        self.thinProvisioned = thinProvisioned
        self.nonRotational = nonRotational
        let blocksPerMiB = UInt32((1 << 20) / blockSize)
        self.maximumTransferBlocks = maximumTransferBlocks ?? 8 * blocksPerMiB
        self.optimalTransferBlocks = optimalTransferBlocks ?? blocksPerMiB
        self.maximumCompareAndWriteBlocks = max(1, maximumCompareAndWriteBlocks)
        // Not above the transfer limit: libiscsi's WriteSame*.Unmap writes max_ws_len blocks
        // with one WRITE(16) before unmapping them.
        self.maximumWriteSameBlocks = maximumWriteSameBlocks ?? UInt64(self.maximumTransferBlocks)
        self.maximumUnmapBlocks = maximumUnmapBlocks ?? (1 << 20)
        self.maximumUnmapDescriptors = maximumUnmapDescriptors
        self.physicalBlockExponent = physicalBlockExponent
        self.thirdPartyCopy = thirdPartyCopy
    }

    /// A configuration whose serial number and NAA designator are derived from the target
    /// name and LUN number (see `derivedIdentity(targetName:lun:)`).
    public static func derived(targetName: String, number: UInt16, blockSize: Int = 512,
                               blockCount: UInt64) -> LogicalUnitConfiguration {
        let identity = derivedIdentity(targetName: targetName, lun: number)
        return LogicalUnitConfiguration(number: number, blockSize: blockSize, blockCount: blockCount,
                                        serialNumber: identity.serialNumber, naaIdentifier: identity.naa)
    }

    /// IEEE company ID used in derived NAA designators (a CID: second nibble is 0xA).
    public static let derivedNAACompanyID: UInt32 = 0x5A_4953

    /// Stable identifiers for (target name, LUN): the same inputs always give the same
    /// values, and two LUNs of one target can never collide because the LUN number is
    /// stored verbatim in both.
    ///
    /// NAA 6 layout (SPC-4 §7.8.6.6.5): NAA(4 bits) = 6, IEEE COMPANY_ID (24 bits),
    /// VENDOR SPECIFIC IDENTIFIER (36 bits) = 20 bits of FNV-1a(target name) then the
    /// 16-bit LUN, VENDOR SPECIFIC IDENTIFIER EXTENSION (64 bits) = FNV-1a(target name).
    /// Serial: 16 hex digits of FNV-1a(target name) then 4 hex digits of the LUN.
    public static func derivedIdentity(targetName: String, lun: UInt16) -> (naa: [UInt8], serialNumber: String) {
        let hash = fnv1a64(Array(targetName.utf8))
        var high: UInt64 = 0x6 << 60
        high |= UInt64(derivedNAACompanyID & 0xFF_FFFF) << 36
        high |= ((hash >> 44) & 0xF_FFFF) << 16
        high |= UInt64(lun)
        var naa: [UInt8] = []
        naa.appendBigEndian64(high)
        naa.appendBigEndian64(hash)
        let serial = hexString(hash, digits: 16) + hexString(UInt64(lun), digits: 4)
        return (naa, serial)
    }

    /// 64-bit FNV-1a.
    public static func fnv1a64(_ bytes: [UInt8]) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return hash
    }

    static func hexString(_ value: UInt64, digits: Int) -> String {
        let alphabet = Array("0123456789ABCDEF")
        var chars: [Character] = []
        for index in stride(from: digits - 1, through: 0, by: -1) {
            chars.append(alphabet[Int((value >> (UInt64(index) * 4)) & 0xF)])
        }
        return String(chars)
    }
}

/// The SCSI target device one iSCSI target exposes.
public struct TargetDeviceConfiguration: Sendable, Equatable {
    /// The iSCSI target name (iqn./eui./naa.), used in VPD 0x83 SCSI name strings.
    public var targetName: String
    /// The iSCSI target portal group tag; also the TARGET PORT GROUP designator and (by
    /// default) the relative target port.
    public var targetPortGroupTag: UInt16
    public var logicalUnits: [LogicalUnitConfiguration]

    public init(targetName: String, targetPortGroupTag: UInt16 = 1, logicalUnits: [LogicalUnitConfiguration]) {
        self.targetName = targetName
        self.targetPortGroupTag = targetPortGroupTag
        self.logicalUnits = logicalUnits
    }

    /// `TargetName + ",t,0x" + TPGT` (four hex digits), the SCSI target port name.
    public var targetPortName: String {
        self.targetName + ",t,0x" + LogicalUnitConfiguration.hexString(UInt64(self.targetPortGroupTag), digits: 4)
    }
}

extension LogicalUnitConfiguration {
    public func isVisible(to nexus: ITNexus) -> Bool {
        // Checked on every command: derive the initiator name (two allocations) only when the
        // LUN is masked at all.
        guard self.visibleTo != nil else { return true }
        return self.isVisible(initiatorName: nexus.initiatorName)
    }
}

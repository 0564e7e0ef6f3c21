import Testing
@testable import SCSI

@Suite struct SenseEncodingTests {
    @Test func fixedFormatWithFieldPointer() {
        let sense = SCSIError.invalidFieldInCDB(byte: 1, bit: 4).sense!
        #expect(sense.encodeFixed() == [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0x00, 0, 0xCC, 0x00, 0x01])
    }

    @Test func fixedFormatParameterListPointerHasCDClear() {
        let sense = SCSIError.invalidFieldInParameterList(byte: 0x112).sense!
        #expect(sense.encodeFixed() == [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x26, 0x00, 0, 0x80, 0x01, 0x12])
    }

    @Test func fixedFormatInformationSetsValid() {
        let sense = SCSIError.miscompare(atOffset: 0x1234).sense!
        #expect(sense.encodeFixed() == [0xF0, 0, 0x0E, 0, 0, 0x12, 0x34, 10, 0, 0, 0, 0, 0x1D, 0x00, 0, 0, 0, 0])
    }

    @Test func descriptorFormat() {
        let sense = SenseData(key: .illegalRequest, code: .invalidFieldInCDB,
                              senseKeySpecific: .fieldPointer(inCDB: true, byte: 2, bit: nil))
        #expect(sense.encodeDescriptor() == [0x72, 0x05, 0x24, 0x00, 0, 0, 0, 8,
                                             0x02, 0x06, 0, 0, 0xC0, 0x00, 0x02, 0])
    }

    @Test func blockStoreErrorsMapInOnePlace() {
        #expect(SCSIError(BlockStoreError.readFailed(errno: 5)).sense?.code == .unrecoveredReadError)
        #expect(SCSIError(BlockStoreError.writeFailed(errno: 5)).sense?.key == .mediumError)
        #expect(SCSIError(BlockStoreError.noSpace).sense == SenseData(key: .dataProtect,
                                                                      code: .spaceAllocationFailedWriteProtect))
    }

    @Test func derivedIdentityIsUniquePerLUN() {
        let a = LogicalUnitConfiguration.derivedIdentity(targetName: targetName, lun: 0)
        let b = LogicalUnitConfiguration.derivedIdentity(targetName: targetName, lun: 1)
        #expect(a.naa != b.naa)
        #expect(a.serialNumber != b.serialNumber)
        #expect(a.naa.count == 16 && a.naa[0] >> 4 == 6)
        #expect(a.naa == LogicalUnitConfiguration.derivedIdentity(targetName: targetName, lun: 0).naa)
        #expect(b.naa[7] == 1 && b.naa[6] == 0)
    }
}

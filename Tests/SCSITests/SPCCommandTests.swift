import Testing
@testable import SCSI

@Suite struct InquiryTests {
    let harness = Harness()

    @Test func standardInquiry() {
        let response = harness.run([0x12, 0, 0, 0, 96, 0])
        #expect(response.status == .good)
        let data = response.data
        #expect(data.count == 96)
        #expect(Array(data[0..<8]) == [0x00, 0x00, 0x06, 0x12, 91, 0x00, 0x00, 0x02])
        #expect(Array(data[8..<16]) == Array("SWIFT   ".utf8))
        #expect(Array(data[16..<32]) == Array("ISCSI DISK      ".utf8))
        #expect(Array(data[32..<36]) == Array("0001".utf8))
        #expect(Array(data[58..<66]) == [0x00, 0xA0, 0x09, 0x60, 0x04, 0x60, 0x04, 0xC0])
        #expect(data[66...].allSatisfy { $0 == 0 })
    }

    @Test func allocationLengthTruncates() {
        let response = harness.run([0x12, 0, 0, 0, 36, 0])
        #expect(response.data.count == 36)
        #expect(response.transferLength == 36)
    }

    @Test func missingLUNAnswersPeripheralQualifier3() {
        let response = harness.run([0x12, 0, 0, 0, 36, 0], lun: 5)
        #expect(response.status == .good)
        #expect(response.data[0] == 0x7F)
    }

    @Test func otherCommandsToMissingLUNFail() {
        #expect(harness.run([0x00, 0, 0, 0, 0, 0], lun: 5).isCheckCondition(0x05, 0x25, 0x00))
    }

    @Test func pageCodeWithoutEVPDIsInvalidField() {
        let response = harness.run([0x12, 0, 0x80, 0, 96, 0])
        #expect(response.sense == [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xCF, 0x00, 0x02])
    }

    @Test func supportedVPDPages() {
        let data = harness.run([0x12, 1, 0x00, 0, 255, 0]).data
        #expect(data == [0x00, 0x00, 0x00, 7, 0x00, 0x80, 0x83, 0x86, 0xB0, 0xB1, 0xB2])
    }

    @Test func unitSerialNumber() {
        let data = harness.run([0x12, 1, 0x80, 0, 255, 0]).data
        let serial = Array(harness.configuration.serialNumber.utf8)
        #expect(data == [0x00, 0x80, 0x00, UInt8(serial.count)] + serial)
    }

    @Test func deviceIdentification() {
        let data = harness.run([0x12, 1, 0x83, 0x01, 0x00, 0]).data
        #expect(Array(data[0..<2]) == [0x00, 0x83])
        #expect(Int(data[2]) << 8 | Int(data[3]) == data.count - 4)
        var designators: [[UInt8]] = []
        var offset = 4
        while offset < data.count {
            let length = Int(data[offset + 3])
            designators.append(Array(data[offset..<(offset + 4 + length)]))
            offset += 4 + length
        }
        #expect(designators.count == 6)
        #expect(Array(designators[0][0..<4]) == [0x01, 0x03, 0x00, 0x10])
        #expect(Array(designators[0][4...]) == harness.configuration.naaIdentifier)
        #expect(Array(designators[1][0..<2]) == [0x02, 0x01])
        #expect(designators[2] == [0x51, 0x94, 0x00, 0x04, 0, 0, 0, 1])
        #expect(designators[3] == [0x51, 0x95, 0x00, 0x04, 0, 0, 0, 1])
        let portName = Array((targetName + ",t,0x0001").utf8)
        let paddedPort = portName + [UInt8](repeating: 0, count: 4 - portName.count % 4)
        #expect(designators[4] == [0x53, 0x98, 0x00, UInt8(paddedPort.count)] + paddedPort)
        let deviceName = Array(targetName.utf8)
        let paddedDevice = deviceName + [UInt8](repeating: 0, count: 4 - deviceName.count % 4)
        #expect(designators[5] == [0x53, 0xA8, 0x00, UInt8(paddedDevice.count)] + paddedDevice)
    }

    @Test func extendedInquiry() {
        let data = harness.run([0x12, 1, 0x86, 0, 255, 0]).data
        #expect(data.count == 64)
        #expect(Array(data[0..<8]) == [0x00, 0x86, 0x00, 0x3C, 0x00, 0x07, 0x01, 0x01])
    }

    @Test func blockLimits() {
        let data = harness.run([0x12, 1, 0xB0, 0, 255, 0]).data
        #expect(data.count == 64)
        #expect(Array(data[0..<8]) == [0x00, 0xB0, 0x00, 0x3C, 0x01, 255, 0x00, 0x08])
        #expect(Array(data[8..<16]) == be32(16384) + be32(2048))
        #expect(Array(data[20..<28]) == [0, 0, 0, 0, 0, 0, 0, 0])  // not thin: no unmap limits
        #expect(Array(data[36..<44]) == be64(16384))
    }

    @Test func blockLimitsThin() {
        let data = Harness(thin: true).run([0x12, 1, 0xB0, 0, 255, 0]).data
        #expect(Array(data[20..<28]) == be32(1 << 20) + be32(256))
        #expect(Array(data[32..<36]) == [0x80, 0, 0, 0])
    }

    @Test func blockDeviceCharacteristics() {
        let data = harness.run([0x12, 1, 0xB1, 0, 255, 0]).data
        #expect(data.count == 64)
        #expect(Array(data[0..<8]) == [0x00, 0xB1, 0x00, 0x3C, 0x00, 0x01, 0x00, 0x00])
    }

    @Test func logicalBlockProvisioning() {
        #expect(harness.run([0x12, 1, 0xB2, 0, 255, 0]).data == [0x00, 0xB2, 0x00, 0x04, 0, 0, 0, 0])
        #expect(Harness(thin: true).run([0x12, 1, 0xB2, 0, 255, 0]).data
            == [0x00, 0xB2, 0x00, 0x04, 0, 0xE4, 0x02, 0])
    }

    @Test func unsupportedVPDPage() {
        #expect(harness.run([0x12, 1, 0x89, 0, 255, 0]).isCheckCondition(0x05, 0x24, 0x00))
    }
}

@Suite struct ReportLUNsTests {
    @Test func peripheralAndFlatAddressing() {
        let harness = Harness(extraLUNs: [1, 300])
        let data = harness.run([0xA0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]).data
        #expect(data == [0, 0, 0, 24, 0, 0, 0, 0,
                         0x00, 0x00, 0, 0, 0, 0, 0, 0,
                         0x00, 0x01, 0, 0, 0, 0, 0, 0,
                         0x41, 0x2C, 0, 0, 0, 0, 0, 0])
    }

    @Test func flatAddressedLUNIsReachable() {
        let harness = Harness(extraLUNs: [300])
        #expect(harness.run([0x00, 0, 0, 0, 0, 0], lun: 300).status == .good)
    }

    @Test func shortAllocationLengthIsInvalid() {
        let response = Harness().run([0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0])
        #expect(response.sense == [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xCF, 0x00, 0x06])
    }

    @Test func wellKnownOnlyIsEmpty() {
        let data = Harness().run([0xA0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0]).data
        #expect(data == [0, 0, 0, 0, 0, 0, 0, 0])
    }
}

@Suite struct ValidatorTests {
    let harness = Harness()

    @Test func reservedBitGivesExactFieldPointer() {
        // TEST UNIT READY with byte 2 bit 5 set.
        let response = harness.run([0x00, 0, 0x20, 0, 0, 0])
        #expect(response.status == .checkCondition)
        #expect(response.sense == [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0x00, 0, 0xCD, 0x00, 0x02])
    }

    @Test func rdprotectIsRejected() {
        let response = harness.run([0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0])
        #expect(response.sense == [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0x00, 0, 0xCD, 0x00, 0x01])
    }

    @Test func controlByteNACA() {
        let response = harness.run([0x00, 0, 0, 0, 0, 0x04])
        #expect(response.sense == [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0x00, 0, 0xCA, 0x00, 0x05])
    }

    @Test func unknownOpcode() {
        #expect(harness.run([0xC5, 0, 0, 0, 0, 0]).isCheckCondition(0x05, 0x20, 0x00))
    }

    @Test func unknownServiceAction() {
        let response = harness.run([0x9E, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0])
        #expect(response.sense == [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0x00, 0, 0xCC, 0x00, 0x01])
    }

    @Test func unmapNotOfferedWithoutThinProvisioning() {
        #expect(harness.run([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], dataOut: [UInt8](repeating: 0, count: 24))
            .isCheckCondition(0x05, 0x20, 0x00))
    }
}

@Suite struct ReportSupportedOperationCodesTests {
    let harness = Harness()

    @Test func oneCommandUsageDataComesFromTheMask() {
        let data = harness.run([0xA3, 0x0C, 0x01, 0x12, 0, 0, 0, 0, 1, 0, 0, 0]).data
        #expect(data == [0, 0x03, 0, 6, 0x12, 0x01, 0xFF, 0xFF, 0xFF, 0x00])
    }

    @Test func write10ShowsDPOAndFUA() {
        let data = harness.run([0xA3, 0x0C, 0x01, 0x2A, 0, 0, 0, 0, 1, 0, 0, 0]).data
        #expect(data[5] & 0x18 == 0x18)
    }

    @Test func serviceActionCommand() {
        let data = harness.run([0xA3, 0x0C, 0x02, 0x9E, 0, 0x10, 0, 0, 1, 0, 0, 0]).data
        #expect(Array(data[0..<6]) == [0, 0x03, 0, 16, 0x9E, 0x1F])
        // Reporting option 1 for an opcode with service actions is invalid.
        #expect(harness.run([0xA3, 0x0C, 0x01, 0x9E, 0, 0, 0, 0, 1, 0, 0, 0]).isCheckCondition(0x05, 0x24, 0x00))
        // Reporting option 2 for an opcode without service actions is invalid.
        #expect(harness.run([0xA3, 0x0C, 0x02, 0x12, 0, 0, 0, 0, 1, 0, 0, 0]).isCheckCondition(0x05, 0x24, 0x00))
    }

    @Test func unsupportedOpcodeIsReportedNotSupported() {
        #expect(harness.run([0xA3, 0x0C, 0x01, 0xC5, 0, 0, 0, 0, 1, 0, 0, 0]).data == [0, 0x01, 0, 0])
    }

    @Test func allCommandsWithTimeouts() {
        let data = harness.run([0xA3, 0x0C, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 0], edtl: 65536).data
        let length = Int(data[0]) << 24 | Int(data[1]) << 16 | Int(data[2]) << 8 | Int(data[3])
        #expect(length == data.count - 4)
        #expect(length % 20 == 0)
        var opcodes: [(UInt8, UInt16)] = []
        var offset = 4
        while offset < data.count {
            #expect(data[offset + 5] & 0x02 == 0x02)  // CTDP
            #expect(Array(data[(offset + 8)..<(offset + 10)]) == [0x00, 0x0A])
            opcodes.append((data[offset], UInt16(data[offset + 2]) << 8 | UInt16(data[offset + 3])))
            offset += 20
        }
        #expect(opcodes.contains { $0 == (0x9E, 0x10) })
        #expect(opcodes.contains { $0 == (0x28, 0) })
        #expect(!opcodes.contains { $0.0 == 0x42 })  // UNMAP not offered without thin provisioning
    }

    @Test func allCommandsWithoutTimeouts() {
        let data = harness.run([0xA3, 0x0C, 0x00, 0, 0, 0, 0, 1, 0, 0, 0, 0], edtl: 65536).data
        let length = Int(data[2]) << 8 | Int(data[3])
        #expect(length % 8 == 0 && length == data.count - 4)
    }
}

@Suite struct RequestSenseTests {
    @Test func noPendingSense() {
        let data = Harness().run([0x03, 0, 0, 0, 18, 0]).data
        #expect(data == [0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func descriptorFormat() {
        let data = Harness().run([0x03, 1, 0, 0, 252, 0]).data
        #expect(data == [0x72, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func missingLUN() {
        let response = Harness().run([0x03, 0, 0, 0, 18, 0], lun: 9)
        #expect(response.status == .good)
        #expect(response.data[2] == 0x05 && response.data[12] == 0x25)
    }
}

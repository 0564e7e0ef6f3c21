import Testing
@testable import SCSI

@Suite struct ModeSenseTests {
    let harness = Harness()

    static let cachingPage: [UInt8] = [0x08, 0x12, 0x04] + [UInt8](repeating: 0, count: 17)

    @Test func modeSense6CachingPage() {
        let data = harness.run([0x1A, 0, 0x08, 0, 255, 0]).data
        let header: [UInt8] = [UInt8(3 + 8 + 20), 0x00, 0x10, 0x08]
        let descriptor: [UInt8] = be32(2048) + [0, 0, 0x02, 0x00]
        #expect(data == header + descriptor + Self.cachingPage)
    }

    @Test func modeSense6CachingPageWithoutBlockDescriptor() {
        let data = harness.run([0x1A, 0x08, 0x08, 0, 255, 0]).data
        #expect(data == [23, 0x00, 0x10, 0x00] + Self.cachingPage)
    }

    @Test func headerOnlyAllocation() {
        let response = harness.run([0x1A, 0, 0x3F, 0, 4, 0])
        #expect(response.data.count == 4)
        #expect(response.data[2] == 0x10)
    }

    @Test func writeProtectBit() {
        #expect(Harness(readOnly: true).run([0x1A, 0, 0x3F, 0, 4, 0]).data[2] == 0x90)
    }

    @Test func allPages() {
        let data = harness.run([0x1A, 0x08, 0x3F, 0, 255, 0]).data
        #expect(Int(data[0]) == data.count - 1)
        var codes: [UInt8] = []
        var offset = 4
        while offset < data.count {
            codes.append(data[offset])
            offset += 2 + Int(data[offset + 1])
        }
        #expect(codes == [0x01, 0x08, 0x0A, 0x1C])
        #expect(offset == data.count)
    }

    @Test func controlPage() {
        let data = harness.run([0x1A, 0x08, 0x0A, 0, 255, 0]).data
        #expect(Array(data[4...]) == [0x0A, 0x0A, 0x02, 0x10, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0])
    }

    @Test func changeableValues() {
        let data = harness.run([0x1A, 0x08, 0x48, 0, 255, 0]).data
        #expect(Array(data[4..<7]) == [0x08, 0x12, 0x04])
        #expect(data[7...].allSatisfy { $0 == 0 })
    }

    @Test func savedValuesAreNotSupported() {
        #expect(harness.run([0x1A, 0x08, 0xC8, 0, 255, 0]).isCheckCondition(0x05, 0x39, 0x00))
    }

    @Test func unknownPageAndSubpage() {
        #expect(harness.run([0x1A, 0x08, 0x19, 0, 255, 0]).isCheckCondition(0x05, 0x24, 0x00))
        let response = harness.run([0x1A, 0x08, 0x0A, 0x05, 255, 0])
        #expect(response.sense[15...] == [0xCF, 0x00, 0x03])
    }

    @Test func modeSense10LongLBA() {
        let data = harness.run([0x5A, 0x10, 0x08, 0, 0, 0, 0, 0x01, 0x00, 0]).data
        #expect(Array(data[0..<8]) == [0x00, UInt8(6 + 16 + 20), 0x00, 0x10, 0x01, 0, 0x00, 16])
        #expect(Array(data[8..<24]) == be64(2048) + [0, 0, 0, 0] + be32(512))
        #expect(Array(data[24...]) == Self.cachingPage)
    }

    @Test func modeSense10AllPagesShortDescriptor() {
        let data = harness.run([0x5A, 0, 0x3F, 0, 0, 0, 0, 0x01, 0x00, 0]).data
        #expect(Int(data[0]) << 8 | Int(data[1]) == data.count - 2)
        #expect(data[4] == 0 && data[7] == 8)
    }
}

@Suite struct ModeSelectTests {
    static func cachingList(wce: Bool) -> [UInt8] {
        [0, 0, 0, 0] + [0x08, 0x12, wce ? 0x04 : 0x00] + [UInt8](repeating: 0, count: 17)
    }

    @Test func changingWCEIsSeenAndRaisesUnitAttentionForOtherNexusOnly() {
        let harness = Harness()
        let first = nexus(1)
        let second = nexus(2, initiator: "iqn.2026-11.org.example:other")
        harness.device.nexusDidOpen(first)
        harness.device.nexusDidOpen(second)
        let list = Self.cachingList(wce: false)
        let response = harness.run([0x15, 0x10, 0, 0, UInt8(list.count), 0], dataOut: list, nexus: first)
        #expect(response.status == .good)
        #expect(harness.run([0x1A, 0x08, 0x08, 0, 255, 0], nexus: first).data[6] == 0x00)
        // The originator sees no unit attention.
        #expect(harness.run([0x00, 0, 0, 0, 0, 0], nexus: first).status == .good)
        // The other nexus: INQUIRY does not report it, TUR does, once.
        #expect(harness.run([0x12, 0, 0, 0, 36, 0], nexus: second).status == .good)
        let ua = harness.run([0x00, 0, 0, 0, 0, 0], nexus: second)
        #expect(ua.isCheckCondition(0x06, 0x2A, 0x01))
        #expect(harness.run([0x00, 0, 0, 0, 0, 0], nexus: second).status == .good)
    }

    @Test func requestSenseReturnsAndClearsUnitAttention() {
        let harness = Harness()
        let first = nexus(1)
        let second = nexus(2, initiator: "iqn.2026-11.org.example:other")
        harness.device.nexusDidOpen(first)
        harness.device.nexusDidOpen(second)
        let list = Self.cachingList(wce: false)
        harness.run([0x15, 0x10, 0, 0, UInt8(list.count), 0], dataOut: list, nexus: first)
        let data = harness.run([0x03, 0, 0, 0, 18, 0], nexus: second).data
        #expect(data[2] == 0x06 && data[12] == 0x2A && data[13] == 0x01)
        #expect(harness.run([0x00, 0, 0, 0, 0, 0], nexus: second).status == .good)
    }

    @Test func changingANonChangeableBitIsRejected() {
        let harness = Harness()
        var list = Self.cachingList(wce: true)
        list[4 + 2] |= 0x01  // RCD
        let response = harness.run([0x15, 0x10, 0, 0, UInt8(list.count), 0], dataOut: list)
        #expect(response.sense == [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x26, 0x00, 0, 0x88, 0x00, 0x06])
    }

    @Test func wrongPageLengthIsRejected() {
        let harness = Harness()
        var list = Self.cachingList(wce: true)
        list[5] = 0x11
        list.removeLast()
        let response = harness.run([0x15, 0x10, 0, 0, UInt8(list.count), 0], dataOut: list)
        #expect(response.isCheckCondition(0x05, 0x26, 0x00))
        #expect(response.sense[15...] == [0x8F, 0x00, 0x05])
    }

    @Test func truncatedListIsParameterListLengthError() {
        let harness = Harness()
        let list = Array(Self.cachingList(wce: true).prefix(10))
        #expect(harness.run([0x15, 0x10, 0, 0, UInt8(list.count), 0], dataOut: list)
            .isCheckCondition(0x05, 0x1A, 0x00))
    }

    @Test func savePagesIsNotSupported() {
        let harness = Harness()
        let list = Self.cachingList(wce: true)
        #expect(harness.run([0x15, 0x11, 0, 0, UInt8(list.count), 0], dataOut: list)
            .isCheckCondition(0x05, 0x39, 0x00))
    }

    @Test func descriptorSenseSwitchesFormat() {
        let harness = Harness()
        let list: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0] + [0x0A, 0x0A, 0x06, 0x10, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0]
        #expect(harness.run([0x55, 0x10, 0, 0, 0, 0, 0, 0, UInt8(list.count), 0], dataOut: list).status == .good)
        let response = harness.run([0x28, 0, 0xFF, 0xFF, 0xFF, 0xF0, 0, 0, 1, 0])
        #expect(response.sense.first == 0x72)
        #expect(response.isCheckCondition(0x05, 0x21, 0x00))
    }

    @Test func logicalUnitResetRestoresDefaultsAndRaisesUnitAttention() {
        let harness = Harness()
        let first = nexus(1)
        let second = nexus(2, initiator: "iqn.2026-11.org.example:other")
        harness.device.nexusDidOpen(first)
        harness.device.nexusDidOpen(second)
        let list = Self.cachingList(wce: false)
        harness.run([0x15, 0x10, 0, 0, UInt8(list.count), 0], dataOut: list, nexus: first)
        #expect(harness.device.taskManagement(.logicalUnitReset, lunField: 0, nexus: first) == .functionComplete)
        // Every nexus, the issuer included, sees 29/00 (and only once).
        #expect(harness.run([0x00, 0, 0, 0, 0, 0], nexus: first).isCheckCondition(0x06, 0x29, 0x00))
        #expect(harness.run([0x00, 0, 0, 0, 0, 0], nexus: first).status == .good)
        #expect(harness.run([0x00, 0, 0, 0, 0, 0], nexus: second).isCheckCondition(0x06, 0x2A, 0x01))
        #expect(harness.run([0x00, 0, 0, 0, 0, 0], nexus: second).isCheckCondition(0x06, 0x29, 0x00))
        #expect(harness.run([0x00, 0, 0, 0, 0, 0], nexus: second).status == .good)
        // Mode parameters are back to their defaults (WCE = 1).
        #expect(harness.run([0x1A, 0x08, 0x08, 0, 255, 0], nexus: first).data[6] == 0x04)
        #expect(harness.device.taskManagement(.logicalUnitReset, lunField: lunField(7), nexus: first)
            == .lunDoesNotExist)
    }
}

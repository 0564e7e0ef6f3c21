import Testing

@testable import SCSI

/// LOG SENSE: PC, page code, subpage, parameter pointer, allocation length.
func logSense(page: UInt8, subpage: UInt8 = 0, pc: UInt8 = 1, pointer: UInt16 = 0, allocation: UInt16 = 0xFFFF,
              byte1: UInt8 = 0) -> [UInt8] {
    [0x4D, byte1, pc << 6 | page, subpage, 0, UInt8(pointer >> 8), UInt8(pointer & 0xFF),
     UInt8(allocation >> 8), UInt8(allocation & 0xFF), 0]
}

@Suite struct LogSenseTests {
    let harness = Harness()

    /// The field pointer bytes of fixed-format sense: SKSV, C/D, BPV, bit; byte.
    func fieldPointer(_ response: SCSIResponse) -> [UInt8] {
        response.sense.count >= 18 ? Array(response.sense[15...17]) : []
    }

    @Test func supportedLogPages() {
        let pages: [UInt8] = [0x00, 0x00, 0x00, 0x02, 0x00, 0x0D]
        #expect(harness.run(logSense(page: 0x00)).data == pages)
    }

    @Test func supportedLogPagesAndSubpages() {
        let all: [UInt8] = [0x40, 0xFF, 0x00, 0x08, 0x00, 0x00, 0x00, 0xFF, 0x0D, 0x00, 0x0D, 0xFF]
        let temperature: [UInt8] = [0x4D, 0xFF, 0x00, 0x04, 0x0D, 0x00, 0x0D, 0xFF]
        #expect(harness.run(logSense(page: 0x00, subpage: 0xFF)).data == all)
        #expect(harness.run(logSense(page: 0x0D, subpage: 0xFF)).data == temperature)
    }

    @Test func temperatureIsNotAvailable() {
        let page: [UInt8] = [0x8D, 0x00, 0x00, 0x0C, 0x00, 0x00, 0x03, 0x02, 0x00, 0xFF, 0x00, 0x01, 0x03, 0x02, 0x00, 0xFF]
        for pc: UInt8 in 0...3 {
            #expect(harness.run(logSense(page: 0x0D, pc: pc)).data == page)
        }
    }

    @Test func allocationLengthTruncatesButPageLengthIsWhole() {
        let header: [UInt8] = [0x8D, 0x00, 0x00, 0x0C]
        #expect(harness.run(logSense(page: 0x0D, allocation: 4)).data == header)
        #expect(harness.run(logSense(page: 0x0D, allocation: 0)).data == [])
    }

    @Test func parameterPointerSkipsLowerCodesAndMayNotPassTheLast() {
        let last: [UInt8] = [0x8D, 0x00, 0x00, 0x06, 0x00, 0x01, 0x03, 0x02, 0x00, 0xFF]
        #expect(harness.run(logSense(page: 0x0D, pointer: 1)).data == last)
        let beyond = harness.run(logSense(page: 0x0D, pointer: 2))
        #expect(beyond.isCheckCondition(0x05, 0x24, 0x00))
        #expect(fieldPointer(beyond) == [0xCF, 0x00, 0x05])
        #expect(fieldPointer(harness.run(logSense(page: 0x00, pointer: 1))) == [0xCF, 0x00, 0x05])
    }

    @Test func saveParametersAndPPCAreInvalid() {
        let save = harness.run(logSense(page: 0x0D, byte1: 0x01))
        #expect(save.isCheckCondition(0x05, 0x24, 0x00))
        #expect(fieldPointer(save) == [0xC8, 0x00, 0x01])
        #expect(fieldPointer(harness.run(logSense(page: 0x0D, byte1: 0x02))) == [0xC9, 0x00, 0x01])
    }

    @Test func unsupportedPageOrSubpage() {
        let page = harness.run(logSense(page: 0x30))
        #expect(page.isCheckCondition(0x05, 0x24, 0x00))
        #expect(fieldPointer(page) == [0xCD, 0x00, 0x02])
        #expect(fieldPointer(harness.run(logSense(page: 0x30, subpage: 0xFF))) == [0xCD, 0x00, 0x02])
        #expect(fieldPointer(harness.run(logSense(page: 0x0D, subpage: 0x05))) == [0xCF, 0x00, 0x03])
        #expect(fieldPointer(harness.run(logSense(page: 0x00, subpage: 0x05))) == [0xCF, 0x00, 0x03])
    }

    @Test func reportSupportedOperationCodesListsLogSenseAndLogSelect() {
        let sense: [UInt8] = [0, 0x03, 0, 10, 0x4D, 0x00, 0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x00]
        let select: [UInt8] = [0, 0x03, 0, 10, 0x4C, 0x02, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]
        #expect(harness.run([0xA3, 0x0C, 0x01, 0x4D, 0, 0, 0, 0, 1, 0, 0, 0]).data == sense)
        #expect(harness.run([0xA3, 0x0C, 0x01, 0x4C, 0, 0, 0, 0, 1, 0, 0, 0]).data == select)
    }
}

@Suite struct LogSelectTests {
    let harness = Harness()

    @Test func resetOfPagesWithoutCountersIsGood() {
        #expect(harness.run([0x4C, 0x02, 0x40, 0, 0, 0, 0, 0, 0, 0], edtl: 0).status == .good)
        #expect(harness.run([0x4C, 0x02, 0x4D, 0, 0, 0, 0, 0, 0, 0], edtl: 0).status == .good)
        #expect(harness.run([0x4C, 0x00, 0xC0, 0, 0, 0, 0, 0, 0, 0], edtl: 0).status == .good)
    }

    @Test func parameterListsSavingAndUnknownPagesAreInvalid() {
        let list = harness.run([0x4C, 0x00, 0x4D, 0, 0, 0, 0, 0, 0x10, 0], dataOut: [UInt8](repeating: 0, count: 16))
        #expect(list.isCheckCondition(0x05, 0x24, 0x00))
        #expect(Array(list.sense[15...17]) == [0xCC, 0x00, 0x08])
        #expect(Array(harness.run([0x4C, 0x03, 0x40, 0, 0, 0, 0, 0, 0, 0], edtl: 0).sense[15...17]) == [0xC8, 0x00, 0x01])
        #expect(Array(harness.run([0x4C, 0x02, 0x70, 0, 0, 0, 0, 0, 0, 0], edtl: 0).sense[15...17]) == [0xCD, 0x00, 0x02])
        #expect(Array(harness.run([0x4C, 0x02, 0x4D, 0x01, 0, 0, 0, 0, 0, 0], edtl: 0).sense[15...17]) == [0xCF, 0x00, 0x03])
    }
}

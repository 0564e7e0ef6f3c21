//
// The flash model behind a LU, as the streams extension feeds and reports it: every write of
// the medium (READ/WRITE-family commands through `didAccessMedium`, WRITE STREAM directly) goes
// into the LU's `FlashModel` with its stream identifier or GROUP NUMBER, and the vendor-specific
// log page 30h shows the counters (Docs/write-amplification.md).
//
import SCSI

/// One LU's flash model under a lock.
final class FlashUnit: Sendable {
    let model: LockedValue<FlashModel>

    init(_ model: FlashModel) { self.model = LockedValue(model) }

    func write(lba: UInt64, blocks: UInt64, stream: Int) {
        self.model.withLock { $0.write(lba: lba, blocks: blocks, stream: stream) }
    }

    func trim(lba: UInt64, blocks: UInt64) {
        self.model.withLock { $0.trim(lba: lba, blocks: blocks) }
    }
}

/// Vendor-specific log page 30h, "flash model": parameters 0000h HOST PAGE WRITES, 0001h FLASH
/// PAGE WRITES, 0002h BLOCK ERASES, 0003h WRITE AMPLIFICATION × 1000 (8 bytes each), 0004h the
/// geometry (PAGE BYTES 4, PAGES PER BLOCK 4, OVER-PROVISIONING in 0.1 % 2, PLACEMENT 1:
/// 0 mixed / 1 per stream, OPEN UNITS 1). Cumulative values (PC 01b) are the counters; the
/// other PC values report them zero. LOG SELECT zeroes the counters, not the mapping.
struct FlashLogPage: LogPageProvider {
    let unit: FlashUnit

    var pageCode: UInt8 { 0x30 }
    var subpageCode: UInt8 { 0x00 }

    func parameters(_ control: LogPageControl) -> [LogParameter] {
        var report = self.unit.model.withLock { $0.report }
        if control != .cumulative {
            report.hostPageWrites = 0
            report.flashPageWrites = 0
            report.blockErases = 0
        }
        func counter(_ code: UInt16, _ value: UInt64) -> LogParameter {
            var bytes: [UInt8] = []
            bytes.append64(value)
            return LogParameter(code: code, value: bytes)
        }
        var geometry: [UInt8] = []
        geometry.append64(UInt64(report.settings.pageBytes) << 32 | UInt64(report.settings.pagesPerBlock))
        let permille = UInt16(min((report.settings.overProvisioning * 1000).rounded(), 65535))
        geometry += [UInt8(permille >> 8), UInt8(permille & 0xFF), report.settings.placement == .perStream ? 1 : 0,
                     UInt8(report.settings.openUnits)]
        return [counter(0x0000, report.hostPageWrites), counter(0x0001, report.flashPageWrites),
                counter(0x0002, report.blockErases),
                counter(0x0003, UInt64((report.writeAmplification * 1000).rounded())),
                LogParameter(code: 0x0004, value: geometry)]
    }

    func resetCumulativeValues() -> Bool {
        self.unit.model.withLock { model in
            guard model.hostPageWrites != 0 || model.flashPageWrites != 0 else { return false }
            model.resetCounters()
            return true
        }
    }
}

extension StreamsExtension {
    /// The flash model counters of `lun` (nil: no model there).
    public func flashReport(lun: UInt16) -> FlashModelReport? {
        self.flashUnit(lun: lun)?.model.withLock { $0.report }
    }

    /// Every LU's flash model counters, by LUN.
    public var flashReports: [UInt16: FlashModelReport] {
        self.flash.mapValues { unit in unit.model.withLock { $0.report } }
    }
}

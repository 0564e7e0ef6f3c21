//
// The statistics of a streams LU as log pages (SPC-4 §7.3.13 and §7.3.12): General Statistics
// and Performance (19h/00h) and Group Statistics and Performance (n) (19h/01h–1Fh), so that
// `sg_logs -p 0x19,N` shows what arrived with GROUP NUMBER n.
//
// Cumulative values (PC 01b) are the counters; default cumulative values (11b) are zero, as
// after a reset; no parameter has a threshold, so PC 00b/10b report zeros. Processing
// intervals are not measured (0). LOG SELECT resets: a group page zeroes that group; the
// general page, which is the sum over every group number (0–63), zeroes them all.
//
import SCSI

extension StreamUnit {
    /// Zeroes the counters of `group` (nil: every group and every stream). True if any was set.
    func resetCounters(group: Int?) -> Bool {
        guard let group else {
            var any = false
            for g in 0..<64 where self.counters.reset(.group(g)) { any = true }
            for s in 0..<self.descriptorCount where self.counters.reset(.stream(s)) { any = true }
            return any
        }
        return self.counters.reset(.group(group))
    }

    func counters(group: Int?) -> TransferCounters {
        guard let group else {
            return (0..<64).reduce(into: TransferCounters()) { $0.merge(self.counters.load(.group($1))) }
        }
        return self.counters.load(.group(group))
    }
}

extension TransferCounters {
    mutating func merge(_ other: TransferCounters) {
        self.readCommands += other.readCommands
        self.writeCommands += other.writeCommands
        self.blocksRead += other.blocksRead
        self.blocksWritten += other.blocksWritten
        self.bytesRead += other.bytesRead
        self.bytesWritten += other.bytesWritten
    }
}

/// 19h/00h (general, `group` nil) or 19h/n (group n, 1–31).
struct StatisticsLogPage: LogPageProvider {
    let unit: StreamUnit
    let group: Int?

    var pageCode: UInt8 { 0x19 }
    var subpageCode: UInt8 { UInt8(self.group ?? 0) }

    func parameters(_ control: LogPageControl) -> [LogParameter] {
        let counters = control == .cumulative ? self.unit.counters(group: self.group) : TransferCounters()
        // READ COMMANDS, WRITE COMMANDS, LOGICAL BLOCKS RECEIVED, LOGICAL BLOCKS TRANSMITTED,
        // READ / WRITE COMMAND PROCESSING INTERVALS (8 bytes each).
        var statistics: [UInt8] = []
        for value in [counters.readCommands, counters.writeCommands, counters.blocksWritten, counters.blocksRead, 0, 0] {
            statistics.append64(value)
        }
        guard self.group == nil else { return [LogParameter(code: 0x0001, value: statistics)] }
        // General page: plus WEIGHTED NUMBER OF READ COMMANDS PLUS WRITE COMMANDS and WEIGHTED
        // READ COMMAND PROCESSING PLUS WRITE COMMAND PROCESSING (not measured: 0), the IDLE TIME
        // INTERVALS parameter (0002h) and the TIME INTERVAL descriptor (0003h: 10^-3 s).
        statistics += [UInt8](repeating: 0, count: 16)
        var interval: [UInt8] = []
        interval.append64(UInt64(3) << 32 | 1)  // EXPONENT 3, INTEGER 1
        return [LogParameter(code: 0x0001, value: statistics),
                LogParameter(code: 0x0002, value: [UInt8](repeating: 0, count: 8)),
                LogParameter(code: 0x0003, value: interval)]
    }

    func resetCumulativeValues() -> Bool {
        self.unit.resetCounters(group: self.group)
    }
}

extension Array where Element == UInt8 {
    mutating func append64(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { self.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }
}

//
// A page-mapped flash translation layer, as a value, fed with the real write stream of a LU to
// compute the write amplification a flash device would have (Docs/write-amplification.md).
//
// The logical capacity is cut into flash pages (`pageBytes`); physical space is erase blocks
// (reclaim units) of `pagesPerBlock` pages, `overProvisioning` more than the logical capacity.
// Each write programs whole pages (a partial page is a read-modify-write inside the device) at
// the write pointer of an open block: one open block per stream (`.perStream`, the placement
// key being the stream identifier or GROUP NUMBER) or a single open block for everything
// (`.mixed`, a device that ignores hints). When free blocks run low, greedy garbage collection
// takes the closed block with the fewest valid pages, copies them to the garbage-collection
// open block of the victim's placement key (data stays isolated by stream, as NVMe FDP's
// "persistently isolated" reclaim unit handles keep it) and erases it. Write amplification = pages programmed (host + GC copies) / pages the host wrote.
//
// Memory: two UInt32 per logical page (forward map) and per physical page (reverse map), plus
// a few bytes per block; a 1 GiB LU with 4 KiB pages needs about 4.3 MiB. Time: O(1) per page
// written or trimmed, plus O(blocks) to choose a victim per garbage-collected block.
//
// What feeds it (`StreamsExtension.didAccessMedium`): every write command with its stream
// identifier or GROUP NUMBER (WRITE, WRITE STREAM, WRITE SAME, COMPARE AND WRITE, ORWRITE,
// WRITE ATOMIC, SANITIZE OVERWRITE), the copy manager's writes (EXTENDED COPY, WRITE USING
// TOKEN; stream 0), and trims: UNMAP, WRITE SAME with UNMAP, SANITIZE erase and the zero ROD
// token on a thin LU invalidate the flash pages they cover whole, so garbage collection no
// longer copies them.
//

/// How a flash model places writes.
public enum FlashPlacement: String, Sendable, Equatable, CaseIterable {
    /// One open erase block per stream (or group number): data of different streams never
    /// share a block.
    case perStream = "per-stream"
    /// One open erase block for all writes, whatever their stream.
    case mixed
}

/// The geometry and policy of a flash model.
public struct FlashModelSettings: Sendable, Equatable {
    /// Mapping unit and flash page size in bytes.
    public var pageBytes: Int
    /// Pages per erase block (reclaim unit).
    public var pagesPerBlock: Int
    /// Physical capacity beyond the logical capacity, as a fraction of it (0.07 = 7 %).
    public var overProvisioning: Double
    public var placement: FlashPlacement
    /// Placement keys with `.perStream` (each has an open block for host data and one for
    /// garbage collection's copies); keys at or above fold onto key 0.
    public var openUnits: Int

    public init(pageBytes: Int = 4096, pagesPerBlock: Int = 256, overProvisioning: Double = 0.07,
                placement: FlashPlacement = .perStream, openUnits: Int = 8) {
        self.pageBytes = pageBytes
        self.pagesPerBlock = pagesPerBlock
        self.overProvisioning = overProvisioning
        self.placement = placement
        self.openUnits = openUnits
    }

    /// Blocks the device keeps free before it starts garbage collection.
    static let reserveBlocks = 2
}

/// What went wrong building a model; the configuration reports it.
public enum FlashModelError: Error, Equatable, CustomStringConvertible {
    case badGeometry(String)
    case tooLittleSpare(needed: Int, have: Int)

    public var description: String {
        switch self {
        case .badGeometry(let why): why
        case .tooLittleSpare(let needed, let have):
            "over-provisioning leaves \(have) spare erase blocks; at least \(needed) are needed (open blocks + GC + reserve)"
        }
    }
}

/// The counters a flash model reports.
public struct FlashModelReport: Sendable, Equatable {
    public var settings: FlashModelSettings
    public var logicalPages: Int
    public var physicalBlocks: Int
    /// Pages the host wrote (a write touching part of a page counts the page).
    public var hostPageWrites: UInt64
    /// Pages programmed: host pages plus pages garbage collection copied.
    public var flashPageWrites: UInt64
    public var blockErases: UInt64
    /// Logical pages that hold data now (written and not trimmed since).
    public var mappedPages: Int = 0

    /// Flash page writes per host page write (1 when nothing has been written).
    public var writeAmplification: Double {
        self.hostPageWrites == 0 ? 1 : Double(self.flashPageWrites) / Double(self.hostPageWrites)
    }
}

public struct FlashModel: Sendable {
    public let settings: FlashModelSettings
    public let logicalPages: Int
    public let physicalBlocks: Int

    static let none = UInt32.max
    /// Logical page → physical page (`none`: never written).
    private(set) var map: [UInt32]
    /// Physical page → logical page (`none`: free or stale).
    private var owner: [UInt32]
    /// Valid pages per block.
    private var valid: [UInt32]
    /// Whether a block is open (being filled); open and free blocks are never GC victims.
    private var isOpen: [Bool]
    private var isFree: [Bool]
    private var freeBlocks: [UInt32]
    /// Placement key of each block's data (host key; its GC copies keep it).
    private var blockKey: [UInt8]
    /// Open block and next page in it, per placement key: host keys 0 ..< keys, then the
    /// garbage-collection block of each key at keys + key.
    private var openBlock: [UInt32]
    private var writePointer: [Int]
    private let keys: Int

    public private(set) var hostPageWrites: UInt64 = 0
    public private(set) var flashPageWrites: UInt64 = 0
    public private(set) var blockErases: UInt64 = 0

    /// Logical block size of the LU the model sits behind.
    public let blockSize: Int

    /// Checks a geometry without building the model; returns (logical pages, physical blocks).
    @discardableResult
    public static func validate(settings: FlashModelSettings, blockCount: UInt64,
                                blockSize: Int) throws(FlashModelError) -> (pages: Int, blocks: Int) {
        guard settings.pageBytes >= 512, settings.pageBytes.nonzeroBitCount == 1 else {
            throw .badGeometry("flash page size must be a power of two of at least 512 bytes")
        }
        guard (2...65536).contains(settings.pagesPerBlock) else { throw .badGeometry("2–65536 pages per erase block") }
        guard (0.0...4.0).contains(settings.overProvisioning) else { throw .badGeometry("over-provisioning 0–400 %") }
        guard (1...64).contains(settings.openUnits) else { throw .badGeometry("1–64 open units") }
        let logicalBytes = blockCount * UInt64(blockSize)
        let pages = (logicalBytes + UInt64(settings.pageBytes) - 1) / UInt64(settings.pageBytes)
        guard pages > 0, pages < UInt64(UInt32.max) / 8 else { throw .badGeometry("too many flash pages; use larger pages") }
        let userBlocks = (Int(pages) + settings.pagesPerBlock - 1) / settings.pagesPerBlock
        let blocks = Int((Double(pages) * (1 + settings.overProvisioning) / Double(settings.pagesPerBlock)).rounded(.up))
        let keys = settings.placement == .perStream ? settings.openUnits : 1
        let needed = 2 * keys + FlashModelSettings.reserveBlocks + 1
        guard blocks - userBlocks >= needed else { throw .tooLittleSpare(needed: needed, have: blocks - userBlocks) }
        guard blocks * settings.pagesPerBlock < Int(UInt32.max) else { throw .badGeometry("too many flash pages; use larger pages") }
        return (Int(pages), blocks)
    }

    /// A model of a LU of `blockCount` blocks of `blockSize` bytes (rounded up to whole pages).
    public init(settings: FlashModelSettings, blockCount: UInt64, blockSize: Int) throws(FlashModelError) {
        let (pages, blocks) = try Self.validate(settings: settings, blockCount: blockCount, blockSize: blockSize)
        let keys = settings.placement == .perStream ? settings.openUnits : 1
        self.settings = settings
        self.blockSize = blockSize
        self.logicalPages = Int(pages)
        self.physicalBlocks = blocks
        self.map = [UInt32](repeating: Self.none, count: Int(pages))
        self.owner = [UInt32](repeating: Self.none, count: blocks * settings.pagesPerBlock)
        self.valid = [UInt32](repeating: 0, count: blocks)
        self.isOpen = [Bool](repeating: false, count: blocks)
        self.isFree = [Bool](repeating: true, count: blocks)
        self.freeBlocks = (0..<UInt32(blocks)).reversed()
        self.blockKey = [UInt8](repeating: 0, count: blocks)
        self.keys = keys
        self.openBlock = [UInt32](repeating: Self.none, count: 2 * keys)
        self.writePointer = [Int](repeating: 0, count: 2 * keys)
    }

    public var report: FlashModelReport {
        FlashModelReport(settings: self.settings, logicalPages: self.logicalPages, physicalBlocks: self.physicalBlocks,
                         hostPageWrites: self.hostPageWrites, flashPageWrites: self.flashPageWrites,
                         blockErases: self.blockErases, mappedPages: self.map.reduce(0) { $0 + ($1 == Self.none ? 0 : 1) })
    }

    /// Zeroes the counters; the mapping (what is valid where) stays.
    public mutating func resetCounters() {
        self.hostPageWrites = 0
        self.flashPageWrites = 0
        self.blockErases = 0
    }

    /// The host wrote `blocks` logical blocks at `lba`, tagged with `stream` (stream identifier
    /// or GROUP NUMBER; 0 for untagged writes). Blocks beyond the logical capacity are ignored.
    public mutating func write(lba: UInt64, blocks: UInt64, stream: Int) {
        guard blocks > 0 else { return }
        let byteOffset = lba * UInt64(self.blockSize), byteCount = blocks * UInt64(self.blockSize)
        let pageBytes = UInt64(self.settings.pageBytes)
        let first = byteOffset / pageBytes
        let last = min((byteOffset + byteCount - 1) / pageBytes, UInt64(self.logicalPages) - 1)
        guard first <= last else { return }
        let key = self.settings.placement == .mixed || stream < 0 || stream >= self.settings.openUnits ? 0 : stream
        for page in first...last {
            self.hostPageWrites += 1
            self.invalidate(Int(page))
            self.program(logical: UInt32(page), key: key)
        }
    }

    /// The host deallocated `blocks` logical blocks at `lba` (a trim): flash pages the range
    /// covers entirely hold no data any more. A partly covered page keeps its data, as on a
    /// device that maps whole pages. Counts nothing as written.
    public mutating func trim(lba: UInt64, blocks: UInt64) {
        guard blocks > 0 else { return }
        let pageBytes = UInt64(self.settings.pageBytes)
        let start = lba * UInt64(self.blockSize), end = start + blocks * UInt64(self.blockSize)
        let first = (start + pageBytes - 1) / pageBytes
        let last = min(end / pageBytes, UInt64(self.logicalPages))  // exclusive
        guard first < last else { return }
        for page in first..<last { self.invalidate(Int(page)) }
    }

    private mutating func invalidate(_ logical: Int) {
        let physical = self.map[logical]
        guard physical != Self.none else { return }
        self.owner[Int(physical)] = Self.none
        self.valid[Int(physical) / self.settings.pagesPerBlock] -= 1
        self.map[logical] = Self.none
    }

    /// Programs `logical` at the write pointer of open block `key` (a host key, or keys + key
    /// for garbage collection's copies).
    private mutating func program(logical: UInt32, key: Int) {
        if self.openBlock[key] == Self.none || self.writePointer[key] == self.settings.pagesPerBlock {
            if self.openBlock[key] != Self.none { self.isOpen[Int(self.openBlock[key])] = false }
            if key < self.keys { self.collectGarbage() }
            let block = self.freeBlocks.removeLast()
            self.isFree[Int(block)] = false
            self.isOpen[Int(block)] = true
            self.blockKey[Int(block)] = UInt8(key % self.keys)
            self.openBlock[key] = block
            self.writePointer[key] = 0
        }
        let block = Int(self.openBlock[key])
        let physical = block * self.settings.pagesPerBlock + self.writePointer[key]
        self.writePointer[key] += 1
        self.owner[physical] = logical
        self.map[Int(logical)] = UInt32(physical)
        self.valid[block] += 1
        self.flashPageWrites += 1
    }


    /// Whether the forward and reverse maps and the valid counts agree (for tests).
    func isConsistent() -> Bool {
        var counted = [UInt32](repeating: 0, count: self.physicalBlocks)
        for (logical, physical) in self.map.enumerated() where physical != Self.none {
            guard self.owner[Int(physical)] == UInt32(logical) else { return false }
            counted[Int(physical) / self.settings.pagesPerBlock] += 1
        }
        let owned = self.owner.filter { $0 != Self.none }.count
        return counted == self.valid && owned == self.map.filter { $0 != Self.none }.count
            && self.freeBlocks.allSatisfy { self.valid[Int($0)] == 0 }
    }

    /// Greedy garbage collection until more than the reserve of blocks is free.
    private mutating func collectGarbage() {
        while self.freeBlocks.count <= FlashModelSettings.reserveBlocks {
            var victim = -1
            var fewest = UInt32.max
            for block in 0..<self.physicalBlocks where !self.isOpen[block] && !self.isFree[block] && self.valid[block] < fewest {
                victim = block
                fewest = self.valid[block]
                if fewest == 0 { break }
            }
            guard victim >= 0, fewest < UInt32(self.settings.pagesPerBlock) else { return }  // nothing to gain
            let start = victim * self.settings.pagesPerBlock
            for physical in start..<(start + self.settings.pagesPerBlock) where self.owner[physical] != Self.none {
                let logical = self.owner[physical]
                self.invalidate(Int(logical))
                self.program(logical: logical, key: self.keys + Int(self.blockKey[victim]))
            }
            self.isFree[victim] = true
            self.freeBlocks.append(UInt32(victim))
            self.blockErases += 1
        }
    }
}

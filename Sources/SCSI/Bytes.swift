//
// Big-endian field access on CDBs and parameter lists, and a small growable writer for
// building parameter data. Kept tiny and explicit: every multi-byte SCSI field is
// big-endian, and every read here is bounds-checked (missing bytes read as zero, which
// is what a short CDB or truncated parameter list means to the callers).
//

internal extension Array where Element == UInt8 {
    func byte(_ index: Int) -> UInt8 {
        index >= 0 && index < count ? self[index] : 0
    }

    func bigEndian16(at index: Int) -> UInt16 {
        UInt16(byte(index)) << 8 | UInt16(byte(index + 1))
    }

    func bigEndian24(at index: Int) -> UInt32 {
        UInt32(byte(index)) << 16 | UInt32(byte(index + 1)) << 8 | UInt32(byte(index + 2))
    }

    func bigEndian32(at index: Int) -> UInt32 {
        UInt32(bigEndian16(at: index)) << 16 | UInt32(bigEndian16(at: index + 2))
    }

    func bigEndian64(at index: Int) -> UInt64 {
        UInt64(bigEndian32(at: index)) << 32 | UInt64(bigEndian32(at: index + 4))
    }

    mutating func setBigEndian16(_ value: UInt16, at index: Int) {
        self[index] = UInt8(truncatingIfNeeded: value >> 8)
        self[index + 1] = UInt8(truncatingIfNeeded: value)
    }

    mutating func setBigEndian24(_ value: UInt32, at index: Int) {
        self[index] = UInt8(truncatingIfNeeded: value >> 16)
        self[index + 1] = UInt8(truncatingIfNeeded: value >> 8)
        self[index + 2] = UInt8(truncatingIfNeeded: value)
    }

    mutating func setBigEndian32(_ value: UInt32, at index: Int) {
        setBigEndian16(UInt16(truncatingIfNeeded: value >> 16), at: index)
        setBigEndian16(UInt16(truncatingIfNeeded: value), at: index + 2)
    }

    mutating func setBigEndian64(_ value: UInt64, at index: Int) {
        setBigEndian32(UInt32(truncatingIfNeeded: value >> 32), at: index)
        setBigEndian32(UInt32(truncatingIfNeeded: value), at: index + 4)
    }

    mutating func appendBigEndian16(_ value: UInt16) {
        append(UInt8(truncatingIfNeeded: value >> 8))
        append(UInt8(truncatingIfNeeded: value))
    }

    mutating func appendBigEndian32(_ value: UInt32) {
        appendBigEndian16(UInt16(truncatingIfNeeded: value >> 16))
        appendBigEndian16(UInt16(truncatingIfNeeded: value))
    }

    mutating func appendBigEndian64(_ value: UInt64) {
        appendBigEndian32(UInt32(truncatingIfNeeded: value >> 32))
        appendBigEndian32(UInt32(truncatingIfNeeded: value))
    }

    /// Appends `text` as ASCII, space padded (or cut) to exactly `width` bytes, as
    /// INQUIRY's vendor, product and revision fields require (SPC-4 §4.4.1).
    mutating func appendPaddedASCII(_ text: String, width: Int) {
        var bytes = text.utf8.map { $0 >= 0x20 && $0 < 0x7F ? $0 : UInt8(ascii: "_") }
        if bytes.count > width { bytes.removeLast(bytes.count - width) }
        append(contentsOf: bytes)
        append(contentsOf: repeatElement(UInt8(ascii: " "), count: width - bytes.count))
    }
}

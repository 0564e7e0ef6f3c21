//
// A framed PDU: Basic Header Segment, Additional Header Segments and data segment,
// digests already checked and padding already removed (RFC 7143 §11.2).
//
import NIOCore

/// The 48-byte Basic Header Segment, with typed access to the fields common to all PDUs.
public struct BasicHeaderSegment: Sendable, Equatable {
    /// Exactly 48 readable bytes.
    public var bytes: ByteBuffer

    public init(bytes: ByteBuffer) {
        precondition(bytes.readableBytes == WireConstants.basicHeaderSegmentLength)
        self.bytes = bytes
    }

    /// A zeroed header with the opcode byte set. Its buffer has room for the header digest,
    /// so `PDUWriter` sends it as it is, without another buffer.
    public init(opcode: UInt8, immediate: Bool = false) {
        var b = ByteBufferAllocator().buffer(capacity: 48 + 4)
        b.writeRepeatingByte(0, count: 48)
        b.setInteger(opcode | (immediate ? 0x40 : 0), at: 0, as: UInt8.self)
        self.bytes = b
    }

    @inlinable public func byte(_ i: Int) -> UInt8 { bytes.getInteger(at: bytes.readerIndex + i, as: UInt8.self)! }
    @inlinable public func u16(_ i: Int) -> UInt16 { bytes.getInteger(at: bytes.readerIndex + i, as: UInt16.self)! }
    @inlinable public func u32(_ i: Int) -> UInt32 { bytes.getInteger(at: bytes.readerIndex + i, as: UInt32.self)! }
    @inlinable public func u64(_ i: Int) -> UInt64 { bytes.getInteger(at: bytes.readerIndex + i, as: UInt64.self)! }
    @inlinable public mutating func set(_ i: Int, _ v: UInt8) { bytes.setInteger(v, at: bytes.readerIndex + i) }
    @inlinable public mutating func set(_ i: Int, _ v: UInt16) { bytes.setInteger(v, at: bytes.readerIndex + i) }
    @inlinable public mutating func set(_ i: Int, _ v: UInt32) { bytes.setInteger(v, at: bytes.readerIndex + i) }
    @inlinable public mutating func set(_ i: Int, _ v: UInt64) { bytes.setInteger(v, at: bytes.readerIndex + i) }

    public var opcodeByte: UInt8 { byte(0) & 0x3F }
    public var isImmediate: Bool { byte(0) & 0x40 != 0 }
    public var isFinal: Bool { byte(1) & 0x80 != 0 }
    public var flags: UInt8 { byte(1) }
    public var totalAHSLength: Int { Int(byte(4)) * 4 }
    public var dataSegmentLength: Int {
        Int(byte(5)) << 16 | Int(byte(6)) << 8 | Int(byte(7))
    }
    public mutating func setDataSegmentLength(_ n: Int) {
        set(5, UInt8(truncatingIfNeeded: n >> 16))
        set(6, UInt8(truncatingIfNeeded: n >> 8))
        set(7, UInt8(truncatingIfNeeded: n))
    }
    public var lun: UInt64 { u64(8) }
    public var initiatorTaskTag: UInt32 { u32(16) }

    /// The 48 bytes as an array (for Reject data and tests).
    public var array: [UInt8] { bytes.getBytes(at: bytes.readerIndex, length: 48)! }
}

/// A whole PDU as framed off the wire.
public struct RawPDU: Sendable, Equatable {
    public var header: BasicHeaderSegment
    /// Additional header segments (possibly empty).
    public var additionalHeader: ByteBuffer
    /// The data segment without padding.
    public var data: ByteBuffer

    public init(header: BasicHeaderSegment, additionalHeader: ByteBuffer, data: ByteBuffer) {
        self.header = header
        self.additionalHeader = additionalHeader
        self.data = data
    }
}

/// Serial number arithmetic on 32-bit sequence numbers (RFC 1982, as RFC 7143 §4.2.2.1 uses it).
public enum SerialNumber {
    /// a < b in serial arithmetic.
    @inlinable public static func lessThan(_ a: UInt32, _ b: UInt32) -> Bool {
        a != b && ((a < b && b &- a < 0x8000_0000) || (a > b && a &- b > 0x8000_0000))
    }
    @inlinable public static func lessThanOrEqual(_ a: UInt32, _ b: UInt32) -> Bool {
        a == b || lessThan(a, b)
    }
}

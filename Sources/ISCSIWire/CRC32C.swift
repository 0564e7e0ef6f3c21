//
// CRC32C (Castagnoli), the iSCSI header and data digest (RFC 7143 §13.1, RFC 3385).
// Reflected polynomial 0x82F63B78, initial value 0xFFFFFFFF, final XOR 0xFFFFFFFF.
// On the wire the digest is sent least-significant byte first (i.e. little-endian).
//
import CCRC32C
import NIOCore

public enum CRC32C {
    /// Continue a running CRC (pass the previous return value; start with `initial`).
    public static let initial: UInt32 = 0xFFFF_FFFF

    /// With the CPU's crc32 instruction when it has one (SSE4.2), else a slicing-by-8 table
    /// (the C target `CCRC32C`).
    @inlinable
    public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress else { return crc }
        return ccrc32c_update(crc, base, bytes.count)
    }

    /// The table implementation alone, whatever the CPU (tests compare it with `update`).
    public static func updatePortable(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress else { return crc }
        return ccrc32c_update_portable(crc, base, bytes.count)
    }

    /// True when `update` uses the CPU instruction.
    public static var usesCPUInstruction: Bool { ccrc32c_uses_instruction() != 0 }

    /// The finished checksum of a byte sequence.
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        update(initial, bytes) ^ 0xFFFF_FFFF
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }

    /// The checksum of the readable bytes of `buffer`, followed by `padding` zero bytes.
    public static func checksum(_ buffer: ByteBuffer, padding: Int = 0) -> UInt32 {
        var c = buffer.withUnsafeReadableBytes { update(initial, $0) }
        if padding > 0 {
            let zeros: (UInt32) = 0
            withUnsafeBytes(of: zeros) { c = update(c, UnsafeRawBufferPointer(rebasing: $0[0..<padding])) }
        }
        return c ^ 0xFFFF_FFFF
    }
}

//
// CRC32C (Castagnoli), the iSCSI header and data digest (RFC 7143 §13.1, RFC 3385).
// Reflected polynomial 0x82F63B78, initial value 0xFFFFFFFF, final XOR 0xFFFFFFFF.
// On the wire the digest is sent least-significant byte first (i.e. little-endian).
//
import NIOCore

public enum CRC32C {
    /// Slicing-by-8 tables: table[0] is the classic byte table.
    static let tables: [[UInt32]] = {
        var t = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[0][i] = c
        }
        for i in 0..<256 {
            for k in 1..<8 {
                let prev = t[k - 1][i]
                t[k][i] = (prev >> 8) ^ t[0][Int(prev & 0xFF)]
            }
        }
        return t
    }()

    /// Continue a running CRC (pass the previous return value; start with `initial`).
    public static let initial: UInt32 = 0xFFFF_FFFF

    public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var c = crc
        var i = 0
        let n = bytes.count
        tables.withUnsafeBufferPointer { tp in
            let t0 = tp[0], t1 = tp[1], t2 = tp[2], t3 = tp[3], t4 = tp[4], t5 = tp[5], t6 = tp[6], t7 = tp[7]
            t0.withUnsafeBufferPointer { t0 in
            t1.withUnsafeBufferPointer { t1 in
            t2.withUnsafeBufferPointer { t2 in
            t3.withUnsafeBufferPointer { t3 in
            t4.withUnsafeBufferPointer { t4 in
            t5.withUnsafeBufferPointer { t5 in
            t6.withUnsafeBufferPointer { t6 in
            t7.withUnsafeBufferPointer { t7 in
                while n - i >= 8 {
                    let lo = UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16
                        | UInt32(bytes[i + 3]) << 24
                    let hi = UInt32(bytes[i + 4]) | UInt32(bytes[i + 5]) << 8 | UInt32(bytes[i + 6]) << 16
                        | UInt32(bytes[i + 7]) << 24
                    let x = c ^ lo
                    c = t7[Int(x & 0xFF)] ^ t6[Int((x >> 8) & 0xFF)] ^ t5[Int((x >> 16) & 0xFF)]
                        ^ t4[Int(x >> 24)] ^ t3[Int(hi & 0xFF)] ^ t2[Int((hi >> 8) & 0xFF)]
                        ^ t1[Int((hi >> 16) & 0xFF)] ^ t0[Int(hi >> 24)]
                    i += 8
                }
                while i < n {
                    c = (c >> 8) ^ t0[Int((c ^ UInt32(bytes[i])) & 0xFF)]
                    i += 1
                }
            }}}}}}}}
        }
        return c
    }

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

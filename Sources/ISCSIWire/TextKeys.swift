//
// Text key=value pairs (RFC 7143 §6.1): UTF-8 `key=value` strings each ended by a NUL.
//
import NIOCore

public struct TextKeyValue: Sendable, Equatable {
    public var key: String
    public var value: String
    public init(_ key: String, _ value: String) {
        self.key = key
        self.value = value
    }
}

public enum TextFormatError: Error, Sendable, Equatable {
    /// A pair without '=' (RFC 7143 §6.1 requires key=value).
    case missingSeparator(String)
    /// A key longer than 63 bytes or empty (RFC 7143 §6.1).
    case invalidKeyName(String)
    /// A value longer than the 255-byte limit for most keys (RFC 7143 §6.1 allows 8192 for some).
    case valueTooLong(String)
}

public enum TextKeys {
    /// RFC 7143 §6.1: key names are at most 63 bytes.
    public static let maximumKeyLength = 63
    /// RFC 7143 §6.1: values at most 8192 bytes (255 for most keys; checked per key).
    public static let maximumValueLength = 8192

    /// Parse a text data segment. A trailing fragment without NUL is an error unless
    /// `allowPartial` is set, in which case it is returned as `remainder` (for C-bit
    /// continuation across PDUs).
    public static func parse(_ bytes: [UInt8]) throws(TextFormatError) -> [TextKeyValue] {
        var result: [TextKeyValue] = []
        var start = 0
        for i in 0...bytes.count {
            if i == bytes.count || bytes[i] == 0 {
                if i > start {
                    let s = String(decoding: bytes[start..<i], as: UTF8.self)
                    guard let eq = s.firstIndex(of: "=") else { throw .missingSeparator(s) }
                    let key = String(s[..<eq])
                    let value = String(s[s.index(after: eq)...])
                    guard !key.isEmpty, key.utf8.count <= maximumKeyLength else { throw .invalidKeyName(key) }
                    guard value.utf8.count <= maximumValueLength else { throw .valueTooLong(key) }
                    result.append(TextKeyValue(key, value))
                }
                start = i + 1
            }
        }
        return result
    }

    public static func encode(_ pairs: [TextKeyValue], into buffer: inout ByteBuffer) {
        for p in pairs {
            buffer.writeString(p.key)
            buffer.writeInteger(UInt8(ascii: "="))
            buffer.writeString(p.value)
            buffer.writeInteger(UInt8(0))
        }
    }

    public static func encode(_ pairs: [TextKeyValue]) -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: pairs.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count + 2 })
        encode(pairs, into: &b)
        return b
    }
}

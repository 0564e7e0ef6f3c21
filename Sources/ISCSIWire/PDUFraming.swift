//
// Framing: cutting PDUs out of a TCP byte stream and writing them into one.
//
// Receive order (RFC 7143 §11.2): BHS (48) → AHS (TotalAHSLength×4) → HeaderDigest (4, if
// negotiated) → data segment padded to 4 → DataDigest (4, if negotiated and data present).
// The header and its digest are checked before the data segment is looked at, so a PDU
// with a lying length is refused before any of its payload is buffered beyond the limit.
//
import NIOCore

public struct DigestSettings: Sendable, Equatable {
    public var header: Bool
    public var data: Bool
    public init(header: Bool = false, data: Bool = false) {
        self.header = header
        self.data = data
    }
    public static let none = DigestSettings()
}

public enum FramingError: Error, Sendable, Equatable {
    /// The header digest did not match: the header cannot be trusted, not even its lengths.
    case headerDigestMismatch
    /// The data digest did not match; the PDU was consumed whole.
    case dataDigestMismatch(BasicHeaderSegment)
    /// The data segment is longer than what we declared we receive.
    case dataSegmentTooLong(BasicHeaderSegment, length: Int)
}

/// Cuts PDUs out of an accumulation buffer. A value type with no I/O.
public struct PDUFramer: Sendable {
    public var digests: DigestSettings
    /// Our MaxRecvDataSegmentLength (what the initiator may send in one PDU).
    public var maxDataSegmentLength: Int

    public init(digests: DigestSettings = .none, maxDataSegmentLength: Int = WireConstants.defaultMaxRecvDataSegmentLength) {
        self.digests = digests
        self.maxDataSegmentLength = maxDataSegmentLength
    }

    /// Take the next whole PDU from `buffer`, or return nil when more bytes are needed.
    public func next(from buffer: inout ByteBuffer) throws(FramingError) -> RawPDU? {
        let start = buffer.readerIndex
        guard buffer.readableBytes >= WireConstants.basicHeaderSegmentLength else { return nil }
        let ahsLength = Int(buffer.getInteger(at: start + 4, as: UInt8.self)!) * 4
        let headerDigestLength = digests.header ? 4 : 0
        let headerEnd = WireConstants.basicHeaderSegmentLength + ahsLength
        guard buffer.readableBytes >= headerEnd + headerDigestLength else { return nil }
        if digests.header {
            let expected = buffer.withUnsafeReadableBytes {
                CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<headerEnd]))
            }
            let got = buffer.getInteger(at: start + headerEnd, endianness: .little, as: UInt32.self)!
            guard expected == got else { throw .headerDigestMismatch }
        }
        let header = BasicHeaderSegment(bytes: buffer.getSlice(at: start, length: 48)!)
        let dataLength = header.dataSegmentLength
        if dataLength > maxDataSegmentLength {
            throw .dataSegmentTooLong(header, length: dataLength)
        }
        let padded = (dataLength + 3) & ~3
        let dataDigestLength = (digests.data && dataLength > 0) ? 4 : 0
        let total = headerEnd + headerDigestLength + padded + dataDigestLength
        guard buffer.readableBytes >= total else { return nil }
        let ahs = buffer.getSlice(at: start + 48, length: ahsLength)!
        let dataStart = start + headerEnd + headerDigestLength
        let data = buffer.getSlice(at: dataStart, length: dataLength)!
        if dataDigestLength > 0 {
            let expected = buffer.withUnsafeReadableBytes {
                CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(headerEnd + headerDigestLength)..<(headerEnd + headerDigestLength + padded)]))
            }
            let got = buffer.getInteger(at: dataStart + padded, endianness: .little, as: UInt32.self)!
            buffer.moveReaderIndex(forwardBy: total)
            guard expected == got else { throw .dataDigestMismatch(header) }
        } else {
            buffer.moveReaderIndex(forwardBy: total)
        }
        return RawPDU(header: header, additionalHeader: ahs, data: data)
    }
}

/// Writes target PDUs as wire bytes. The data segment is passed through as its own
/// buffer (no copy); the header digest, padding and data digest go in small buffers.
public struct PDUWriter: Sendable {
    public var digests: DigestSettings
    public init(digests: DigestSettings = .none) { self.digests = digests }

    static let zeros: [UInt8] = [0, 0, 0, 0]

    /// Returns the buffers to write in order: header (+digest), data (if any), trailer (if any).
    public func frame(_ pdu: TargetPDU, allocator: ByteBufferAllocator) -> (ByteBuffer, ByteBuffer?, ByteBuffer?) {
        let (header, data) = pdu.encoded(allocator: allocator)
        return frame(header: header, data: data, allocator: allocator)
    }

    public func frame(header: BasicHeaderSegment, data: ByteBuffer, allocator: ByteBufferAllocator)
        -> (ByteBuffer, ByteBuffer?, ByteBuffer?)
    {
        // The header's own buffer when it is exactly the 48 bytes (as `BasicHeaderSegment(opcode:)`
        // makes them); the digest then fits in its spare capacity.
        var head: ByteBuffer
        if header.bytes.readerIndex == 0 && header.bytes.writerIndex == 48 {
            head = header.bytes
        } else {
            head = allocator.buffer(capacity: 52)
            var h = header
            head.writeBuffer(&h.bytes)
        }
        if digests.header {
            let crc = head.withUnsafeReadableBytes { CRC32C.checksum($0) }
            head.writeInteger(crc, endianness: .little)
        }
        let length = data.readableBytes
        guard length > 0 else { return (head, nil, nil) }
        let pad = (4 - length % 4) % 4
        if pad == 0 && !digests.data { return (head, data, nil) }
        var trailer = allocator.buffer(capacity: 8)
        if pad > 0 { trailer.writeBytes(Self.zeros[0..<pad]) }
        if digests.data {
            trailer.writeInteger(CRC32C.checksum(data, padding: pad), endianness: .little)
        }
        return (head, data, trailer)
    }

    /// The whole PDU in one buffer (tests, small PDUs).
    public func bytes(_ pdu: TargetPDU) -> ByteBuffer {
        let (a, b, c) = frame(pdu, allocator: ByteBufferAllocator())
        var out = a
        if var b { out.writeBuffer(&b) }
        if var c { out.writeBuffer(&c) }
        return out
    }
}

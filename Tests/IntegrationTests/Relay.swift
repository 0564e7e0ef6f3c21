// A one-connection TCP relay between libiscsi and the target, on its own threads. It records
// what the target sends (to check negotiated keys in the Login Response) and can corrupt one byte
// of the next chunk the initiator sends (to check that a header digest error is caught).

import CLibiscsi
import Foundation

#if canImport(Glibc)
import Glibc
#endif

final class Relay: @unchecked Sendable {
    private let lock = NSLock()
    private var fromTarget: [UInt8] = []
    private var corruptOffset: Int? = nil
    private let listenFD: Int32
    private var fds: [Int32] = []
    private var opened: [Int32] = []
    let port: Int
    private let targetPort: Int

    init(targetPort: Int) throws {
        self.targetPort = targetPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 1) == 0 else {
            close(fd)
            throw ISCSIClientError(kind: .library, operation: "relay", message: "bind/listen failed: errno \(errno)")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        listenFD = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        opened = [fd]
        let thread = Thread { [self] in self.acceptOne() }
        thread.start()
    }

    deinit {
        stop()
        lock.lock(); let all = opened; lock.unlock()
        for fd in all { close(fd) }
    }

    var portal: String { "127.0.0.1:\(port)" }

    /// Everything the target has sent so far, as text with NULs turned into newlines.
    var targetText: String {
        lock.lock(); defer { lock.unlock() }
        return String(decoding: fromTarget.map { $0 == 0 ? 10 : $0 }, as: UTF8.self)
    }

    /// Flips the byte at `offset` of the next chunk read from the initiator.
    func corruptNextInitiatorChunk(at offset: Int) {
        lock.lock(); corruptOffset = offset; lock.unlock()
    }

    func stop() {
        lock.lock(); let all = fds + [listenFD]; fds = []; lock.unlock()
        for fd in all { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    private func acceptOne() {
        let client = accept(listenFD, nil, nil)
        guard client >= 0 else { return }
        let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(targetPort).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        lock.lock(); fds += [client, upstream]; opened += [client, upstream]; lock.unlock()
        guard connected == 0 else { shutdown(client, Int32(SHUT_RDWR)); return }
        Thread { [self] in self.pump(from: client, to: upstream, record: false) }.start()
        Thread { [self] in self.pump(from: upstream, to: client, record: true) }.start()
    }

    private func pump(from source: Int32, to destination: Int32, record: Bool) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            lock.lock()
            if record { fromTarget += buffer[0..<n] }
            if !record, let offset = corruptOffset, offset < n {
                buffer[offset] ^= 0xFF
                corruptOffset = nil
            }
            lock.unlock()
            var sent = 0
            while sent < n {
                let m = buffer.withUnsafeBytes { write(destination, $0.baseAddress! + sent, n - sent) }
                if m <= 0 { break }
                sent += m
            }
            if sent < n { break }
        }
        shutdown(destination, Int32(SHUT_WR))
        shutdown(source, Int32(SHUT_RD))
    }
}

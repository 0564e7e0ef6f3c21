//
// Fuzzing entry points for the code that parses what initiators send: the PDU framer and
// decoder with the session machine behind them, login/text keys (with CHAP), CDB decoding,
// and parameter lists (MODE SELECT, PERSISTENT RESERVE OUT, EXTENDED COPY, POPULATE TOKEN,
// WRITE USING TOKEN, UNMAP).
//
// Built normally, this is a replay tool: `iscsi-fuzz TARGET FILE...` runs each file through
// TARGET (scripts/test.sh replays the seed corpus this way). Built with
//   swift build --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING \
//       -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld --product iscsi-fuzz
// (scripts/fuzz.sh) it is a libFuzzer binary; ISCSI_FUZZ_TARGET selects the target (pdu, text,
// cdb, params).
//
import BlockStores
import CopyOffload
import ISCSIEngine
import ISCSIWire
import NIOCore
import SCSI

enum FuzzTarget: String, CaseIterable {
    case pdu, text, cdb, params

    func run(_ bytes: [UInt8]) {
        switch self {
        case .pdu: Self.pdu(bytes)
        case .text: Self.text(bytes)
        case .cdb: Self.cdb(bytes)
        case .params: Self.params(bytes)
        }
    }

    /// Accepts every command, so data-out handling is reached.
    struct AcceptingPort: CommandPort {
        func admit(_ c: SCSICommandRequest) -> CommandDisposition {
            .accept(token: c.initiatorTaskTag, dataOutLength: c.isWrite ? Int(min(c.expectedDataTransferLength, 1 << 20)) : 0)
        }
        func taskManagement(_ function: TaskManagementFunctionCode, lun: UInt64) -> TaskManagementResponseCode {
            .functionComplete
        }
    }

    /// Byte 0 chooses digests; the rest is a byte stream from the initiator.
    static func pdu(_ bytes: [UInt8]) {
        guard let flags = bytes.first else { return }
        let digests = DigestSettings(header: flags & 1 != 0, data: flags & 2 != 0)
        let framer = PDUFramer(digests: digests, maxDataSegmentLength: 65536)
        var parameters = OperationalParameters()
        parameters.initialR2T = flags & 4 != 0
        var configuration = SessionConfiguration(sessionType: .normal, parameters: parameters, targetName: "iqn.2026-11.org.fuzz:t")
        configuration.commandWindow = 16
        let now = NIODeadline.uptimeNanoseconds(1)
        var session = SessionStateMachine(configuration: configuration, port: AcceptingPort(), expCmdSN: 0, statSN: 0, now: now)
        var stream = ByteBuffer(bytes: bytes.dropFirst())
        while true {
            let raw: RawPDU?
            do { raw = try framer.next(from: &stream) } catch {
                _ = session.receiveFramingError(error)
                return
            }
            guard let raw else { return }
            let actions: [SessionAction]
            do {
                actions = session.receive(try InitiatorPDU(decoding: raw), header: raw.header, now: now)
            } catch {
                actions = session.receiveMalformed(raw.header, error: error, now: now)
            }
            for case .execute(let itt, _, _) in actions {
                _ = session.completed(initiatorTaskTag: itt, result: CommandResult(status: 0))
            }
            if session.isClosed { return }
        }
    }

    static let account = CHAPAccount(user: "fuzz", secret: CHAPSecret("fuzz-secret-123"),
                                     mutualUser: "target", mutualSecret: CHAPSecret("target-secret-456"))

    /// Byte 0: stage and flags of each Login Request; the rest: text split into requests at 0xFF.
    static func text(_ bytes: [UInt8]) {
        guard let flags = bytes.first else { return }
        _ = try? TextKeys.parse(Array(bytes.dropFirst()))
        for piece in bytes.split(separator: 0x2C) { _ = BinaryValue.decode(String(decoding: piece, as: UTF8.self)) }
        let directory = LoginDirectory(
            targets: [LoginDirectory.Target(name: "iqn.2026-11.org.fuzz:t", alias: "t", portalGroupTag: 1, chap: account,
                                            allowedInitiators: ["iqn.2026-11.org.fuzz:i"])],
            discoveryCHAP: account)
        var login = LoginStateMachine(directory: directory, random: { n in [UInt8](repeating: 0x5A, count: n) })
        var stage = flags & 0x03
        for chunk in bytes.dropFirst().split(separator: 0xFF, omittingEmptySubsequences: false) {
            // Through the decoder, as the connection would: a Login Request header with these flags.
            var header = BasicHeaderSegment(opcode: InitiatorOpcode.loginRequest.rawValue, immediate: true)
            header.set(1, (flags & 0x30) << 2 | stage << 2 | (flags >> 2) & 0x03)
            header.set(13, UInt8(1))
            header.setDataSegmentLength(chunk.count)
            guard case .login(let request)? = try? InitiatorPDU(decoding: RawPDU(header: header, additionalHeader: ByteBuffer(),
                                                                                 data: ByteBuffer(bytes: chunk)))
            else { return }
            switch login.receive(request) {
            case .respond(let r): if r.transit { stage = r.nextStage }
            case .fail: return
            case .establishSession: _ = login.sessionEstablished(tsih: 1, maxCmdSN: 1); return
            }
        }
    }

    static func device() -> SCSITargetDevice {
        let name = "iqn.2026-11.org.fuzz:t"
        let stores: [UInt16: any BlockStore] = [0: MemoryBlockStore(byteCount: 1 << 20), 1: MemoryBlockStore(byteCount: 1 << 20)]
        let units = [0, 1].map { LogicalUnitConfiguration.derived(targetName: name, number: UInt16($0), blockCount: 2048) }
        let copy = CopyOffloadExtension(targetName: name, registry: CopyUnitRegistry())
        let device = SCSITargetDevice(configuration: TargetDeviceConfiguration(targetName: name, logicalUnits: units),
                                      stores: stores, extensions: [copy])
        copy.register(device: device)
        return device
    }

    static let nexus = ITNexus(initiatorPortName: "iqn.2026-11.org.fuzz:i,i,0x1", targetPortName: "iqn.2026-11.org.fuzz:t,t,0x1", id: 1)

    static func execute(_ device: SCSITargetDevice, cdb: [UInt8], dataOut: [UInt8], lun: UInt64 = 0) {
        let command = SCSICommand(lunField: lun << 48, cdb: cdb, expectedDataTransferLength: dataOut.isEmpty ? 4096 : dataOut.count,
                                  direction: dataOut.isEmpty ? .toInitiator : .fromInitiator, attribute: .simple, nexus: nexus)
        if case .ready(let prepared) = device.prepare(command) {
            _ = device.execute(prepared, dataOut: prepared.dataOutLength > 0 ? ByteBuffer(bytes: dataOut.prefix(prepared.dataOutLength)) : nil)
        }
    }

    /// Byte 0: CDB length (6–32); then the CDB; the rest is the data-out buffer.
    static func cdb(_ bytes: [UInt8]) {
        guard let first = bytes.first else { return }
        let length = 6 + Int(first % 27)
        let cdb = Array(bytes.dropFirst().prefix(length))
        guard cdb.count == length else { return }
        execute(device(), cdb: cdb, dataOut: Array(bytes.dropFirst(1 + length)))
    }

    /// Byte 0 picks a command that takes a parameter list; the rest is the list.
    static func params(_ bytes: [UInt8]) {
        guard let first = bytes.first else { return }
        let list = Array(bytes.dropFirst())
        let n = UInt32(list.count)
        let b = [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)]
        let cdbs: [[UInt8]] = [
            [0x15, 0x10, 0, 0, UInt8(min(n, 255)), 0],                                    // MODE SELECT(6), PF
            [0x55, 0x10, 0, 0, 0, 0, 0, b[2], b[3], 0],                                    // MODE SELECT(10)
            [0x5F, first >> 4, 0x01, 0, 0] + b + [0],                                     // PERSISTENT RESERVE OUT
            [0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0] + b + [0, 0],                             // EXTENDED COPY (LID1)
            [0x83, 0x01, 0, 0, 0, 0, 0, 0, 0, 0] + b + [0, 0],                             // EXTENDED COPY (LID4)
            [0x83, 0x10, 0, 0, 0, 0, 0, 0, 0, 0] + b + [0, 0],                             // POPULATE TOKEN
            [0x83, 0x11, 0, 0, 0, 0, 0, 0, 0, 0] + b + [0, 0],                             // WRITE USING TOKEN
            [0x42, 0, 0, 0, 0, 0, 0, b[2], b[3], 0],                                       // UNMAP
        ]
        execute(device(), cdb: cdbs[Int(first) % cdbs.count], dataOut: list)
    }
}

import Foundation

#if FUZZING
/// libFuzzer's driver entry point (SwiftPM links an executable's own main, so libFuzzer's
/// `main` is not used; `LLVMFuzzerRunDriver` runs the same loop).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

private let selected: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["ISCSI_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        fatalError("set ISCSI_FUZZ_TARGET to one of \(FuzzTarget.allCases.map(\.rawValue))")
    }
    return target
}()

/// libFuzzer's callback (its library refers to this symbol).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selected.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}

@main
struct Fuzz {
    static func main() {
        _ = selected
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOneInput(data, size) })
    }
}
#else
@main
struct Replay {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name) else {
            print("usage: iscsi-fuzz \(FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")) FILE...")
            exit(2)
        }
        var count = 0
        for path in arguments.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else {
                print("cannot read \(path)")
                exit(1)
            }
            target.run([UInt8](data))
            count += 1
        }
        print("\(name): \(count) input(s) replayed")
    }
}
#endif

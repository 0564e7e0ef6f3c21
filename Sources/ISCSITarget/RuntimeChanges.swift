//
// Changes to a running server, asked for over the control socket (`iscsi-target lun add`,
// `lun remove`, `tokens`, `save`).
//
// Every change is made to the text of the running definition (`DefinitionEditor`), which is
// then parsed by the same parser as a definition file: a LUN added at run time is checked
// exactly as one in the file would be (keys, sizes, duplicate numbers and files). The server
// then applies the difference and keeps the new text, so that `save` writes back a file that
// would start the same server — with its comments and layout intact.
//
// What the initiators see (SPC-4, SAM-5):
// - LUN added or removed: REPORTED LUNS DATA HAS CHANGED (3Fh/0Eh) for every open I_T nexus on
//   every LU it can address; a removed LU answers LOGICAL UNIT NOT SUPPORTED (25h/00h), its
//   copies stop and its ROD tokens are revoked.
// - Token limits changed: when the Third-party Copy VPD page changes with them, INQUIRY DATA
//   HAS CHANGED (3Fh/03h) on every LU of the target. Live tokens keep their timeouts.
//
import BlockStores
import CopyOffload
import Foundation
import Logging
import SCSI
import SCSIStreams

/// A change the control socket asks for.
public enum RuntimeChange: Sendable, Equatable {
    /// Add a LU to `target` (nil: the only target): `keys` are the `[[target.lun]]` keys as
    /// TOML `key = value` pairs.
    case addLUN(target: String?, keys: [KeyValue])
    case removeLUN(target: String?, lun: UInt16)
    /// Set keys of `[target.tokens]`.
    case setTokenLimits(target: String?, keys: [KeyValue])

    public struct KeyValue: Sendable, Equatable, Codable {
        public var key: String
        /// TOML value syntax (`8`, `true`, `"write-through"`).
        public var value: String
        public init(_ key: String, _ value: String) {
            self.key = key
            self.value = value
        }
    }
}

public struct RuntimeChangeError: Error, CustomStringConvertible {
    public var description: String
}

extension TargetServer {
    /// Applies `change` and returns what was done, for the operator.
    public func apply(_ change: RuntimeChange) throws -> String {
        try self.changeLock.withLock {
            let (current, context, parts) = self.lock.withLock { (self.running, self.context, self.extensions) }
            guard let context, let text = current.definitionText else {
                throw RuntimeChangeError(description: "the server is not running")
            }
            let targetName = try Self.targetName(change.target, in: current)
            guard let device = context.devices[targetName], let part = parts[targetName] else {
                throw RuntimeChangeError(description: "no target \(targetName)")
            }
            var editor = DefinitionEditor(text: text)
            do throws(DefinitionEditError) {
                switch change {
                case .addLUN(_, let keys): try editor.addLUN(target: targetName, keys: keys.map { ($0.key, $0.value) })
                case .removeLUN(_, let lun): try editor.removeLUN(target: targetName, lun: lun)
                case .setTokenLimits(_, let keys): try editor.setTokenKeys(target: targetName, keys.map { ($0.key, $0.value) })
                }
            } catch {
                throw RuntimeChangeError(description: error.description)
            }
            let next: ServerConfiguration
            do {
                next = try ServerConfiguration.parse(toml: editor.text, stateDirectory: current.stateDirectory,
                                                     source: "the running definition",
                                                     baseDirectory: current.definitionBaseDirectory)
            } catch let error as ConfigurationError {
                throw RuntimeChangeError(description: error.issues.map { "\($0.keyPath): \($0.message)" }
                    .joined(separator: "; "))
            }
            guard let oldTarget = current.targets.first(where: { $0.name == targetName }),
                  let newTarget = next.targets.first(where: { $0.name == targetName })
            else { throw RuntimeChangeError(description: "no target \(targetName)") }
            let message: String
            switch change {
            case .addLUN:
                let known = Set(oldTarget.luns.map(\.number))
                guard let lun = newTarget.luns.first(where: { !known.contains($0.number) }) else {
                    throw RuntimeChangeError(description: "the new table adds no LUN")
                }
                try self.addUnit(lun, of: newTarget, device: device, part: part, context: context)
                message = "LUN \(lun.number) added to \(targetName): \(lun.path), \(lun.byteCount) bytes"
            case .removeLUN(_, let number):
                try self.removeUnit(number, of: targetName, device: device, part: part, context: context)
                message = "LUN \(number) removed from \(targetName)"
            case .setTokenLimits:
                let changed = part.copy.setTokenLimits(newTarget.tokenLimits, device: device)
                message = changed ? "token limits of \(targetName) changed" : "token limits of \(targetName) unchanged"
            }
            var updated = current
            updated.definitionText = editor.text
            updated.targets = current.targets.map { $0.name == targetName ? newTarget : $0 }
            self.lock.withLock { self.running = updated }
            self.logger.notice("runtime change", metadata: ["iscsi.target": "\(targetName)", "change": "\(message)"])
            return message
        }
    }

    static func targetName(_ name: String?, in configuration: ServerConfiguration) throws -> String {
        if let name {
            guard let target = configuration.targets.first(where: { $0.name.lowercased() == name.lowercased() }) else {
                throw RuntimeChangeError(description: "no target named \(name)")
            }
            return target.name
        }
        guard configuration.targets.count == 1 else {
            throw RuntimeChangeError(description: "the server has \(configuration.targets.count) targets: name one with --target")
        }
        return configuration.targets[0].name
    }

    private func addUnit(_ lun: LUNDefinition, of target: TargetDefinition, device: SCSITargetDevice,
                         part: (copy: CopyOffloadExtension, streams: StreamsExtension), context: TargetContext) throws {
        guard let tokens = self.tokenStore else { throw RuntimeChangeError(description: "the server is not running") }
        let (store, guarded, configuration) = try Self.openUnit(lun, of: target, tokens: tokens)
        let flash = try Self.flashModel(lun, of: target, unit: configuration)
        // Counters and stream state first, so the first command to the new LU finds them.
        part.streams.addUnit(lun: lun.number, settings: lun.streams, flash: flash)
        context.metrics.add(target: target.name, lun: lun.number)
        let unit: LogicalUnit
        do {
            unit = try device.addLogicalUnit(configuration, store: guarded)
        } catch {
            part.streams.removeUnit(lun: lun.number)
            context.metrics.remove(target: target.name, lun: lun.number)
            throw RuntimeChangeError(description: error.description)
        }
        part.copy.register(unit, of: device)
        self.lock.withLock { self.stores.append(store) }
    }

    private func removeUnit(_ number: UInt16, of targetName: String, device: SCSITargetDevice,
                            part: (copy: CopyOffloadExtension, streams: StreamsExtension), context: TargetContext) throws {
        let unit: LogicalUnit
        do {
            unit = try device.removeLogicalUnit(number)
        } catch {
            throw RuntimeChangeError(description: error.description)
        }
        part.copy.unregister(lun: number)
        part.streams.removeUnit(lun: number)
        context.metrics.remove(target: targetName, lun: number)
        let base = (unit.store as? GuardedBlockStore)?.base ?? unit.store
        self.lock.withLock { self.stores.removeAll { $0 === base } }
        do {
            try unit.store.detach()
        } catch {
            throw RuntimeChangeError(description: "LUN \(number) removed, but flushing its file failed: \(error)")
        }
    }

    /// Writes the running definition to `path` (nil: the file the server was started with).
    /// Refuses to overwrite a file that changed on disk since the server read or last saved
    /// it, unless `force`: those edits would be lost.
    public func save(to path: String?, force: Bool) throws -> String {
        try self.changeLock.withLock {
            let current = self.lock.withLock { self.running }
            guard let text = current.definitionText else { throw RuntimeChangeError(description: "the server is not running") }
            guard let destination = path ?? current.definitionPath else {
                throw RuntimeChangeError(description: "the server was not started from a file: give --output")
            }
            let target = URL(fileURLWithPath: destination).standardizedFileURL.path
            if !force, target == current.definitionPath || path == nil,
               let onDisk = try? String(contentsOfFile: target, encoding: .utf8),
               let known = self.lock.withLock({ self.savedText }), onDisk != known, onDisk != text {
                throw RuntimeChangeError(description: "\(target) changed since the server read it; "
                                         + "save --force overwrites it, save --output writes elsewhere")
            }
            try Self.writeAtomically(text, to: target)
            if target == current.definitionPath { self.lock.withLock { self.savedText = text } }
            self.logger.notice("definition saved", metadata: ["iscsi.definition": "\(target)"])
            return "saved the running definition to \(target)"
        }
    }

    /// Write to a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder.
    static func writeAtomically(_ text: String, to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = (directory.isEmpty ? "." : directory) + "/.\((path as NSString).lastPathComponent).\(getpid()).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw RuntimeChangeError(description: "cannot write \(temporary): \(String(cString: strerror(errno)))") }
        var ok = Array(text.utf8).withUnsafeBytes { bytes in
            var done = 0
            while done < bytes.count {
                let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                done += n
            }
            return true
        }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok, rename(temporary, path) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(temporary)
            throw RuntimeChangeError(description: "cannot write \(path): \(why)")
        }
        let folder = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if folder >= 0 {
            fsync(folder)
            close(folder)
        }
    }
}

extension RuntimeChange {
    var target: String? {
        switch self {
        case .addLUN(let target, _), .removeLUN(let target, _), .setTokenLimits(let target, _): target
        }
    }
}

/// A request on the control socket other than the plain line "status": one JSON object.
public struct ControlRequest: Codable, Sendable, Equatable {
    /// "lun-add", "lun-remove", "tokens" or "save".
    public var op: String
    public var target: String?
    public var lun: UInt16?
    public var keys: [RuntimeChange.KeyValue]?
    /// save: where to write (nil: the definition file).
    public var output: String?
    /// save: overwrite a definition file that changed on disk.
    public var force: Bool?

    public init(op: String, target: String? = nil, lun: UInt16? = nil, keys: [RuntimeChange.KeyValue]? = nil,
                output: String? = nil, force: Bool? = nil) {
        self.op = op
        self.target = target
        self.lun = lun
        self.keys = keys
        self.output = output
        self.force = force
    }
}

/// The answer to a `ControlRequest`.
public struct ControlReply: Codable, Sendable, Equatable {
    public var ok: Bool
    public var message: String
}

extension TargetServer {
    /// The control socket's answer to one request line.
    func controlReply(to line: String) -> Data {
        if line == "status" || line.isEmpty { return self.statusJSON() }
        let reply: ControlReply
        if let request = try? JSONDecoder().decode(ControlRequest.self, from: Data(line.utf8)) {
            do {
                reply = ControlReply(ok: true, message: try self.perform(request))
            } catch {
                reply = ControlReply(ok: false, message: "\(error)")
            }
        } else {
            reply = ControlReply(ok: false, message: "unknown request")
        }
        return (try? JSONEncoder().encode(reply)) ?? Data("{}".utf8)
    }

    /// Carries out one control request.
    public func perform(_ request: ControlRequest) throws -> String {
        switch request.op {
        case "lun-add":
            return try self.apply(.addLUN(target: request.target, keys: request.keys ?? []))
        case "lun-remove":
            guard let lun = request.lun else { throw RuntimeChangeError(description: "lun-remove needs a LUN") }
            return try self.apply(.removeLUN(target: request.target, lun: lun))
        case "tokens":
            return try self.apply(.setTokenLimits(target: request.target, keys: request.keys ?? []))
        case "save":
            return try self.save(to: request.output, force: request.force ?? false)
        default:
            throw RuntimeChangeError(description: "unknown operation \(request.op)")
        }
    }
}

//
// `iscsi-target lun add|remove`, `iscsi-target tokens` and `iscsi-target save`: changes to the
// running server over its control socket (Docs/operability.md). The server checks each change
// as it checks a definition file, applies it with the unit attentions the standard asks for,
// and keeps the definition text that `save` writes back.
//
import ArgumentParser
import Foundation
import ISCSITarget

/// How to reach the running server (shared by every subcommand that talks to it).
struct ControlOptions: ParsableArguments {
    @Option(help: "The target definition the server was started with (to find its state folder).")
    var config: String = "Targets/default.toml"

    @Option(help: "The server's state folder (as given to serve --state-dir).")
    var stateDir: String?

    @Option(help: "The control socket (default: <state folder>/control.sock).")
    var socket: String?

    func socketPath() throws -> String {
        if let socket { return socket }
        if let stateDir { return (stateDir as NSString).appendingPathComponent("control.sock") }
        do {
            let configuration = try ServerConfiguration.load(path: config)
            guard let path = configuration.controlSocketPath else { throw ValidationError("no control socket configured") }
            return path
        } catch {
            throw ValidationError("cannot find the control socket: \(error); give --socket or --state-dir")
        }
    }

    /// Sends `request`, prints the server's message; exits 1 when it refused.
    func send(_ request: ControlRequest, command: String) throws {
        let path = try self.socketPath()
        let line = String(decoding: try JSONEncoder().encode(request), as: UTF8.self)
        guard let data = ControlSocket.request(line, path: path) else {
            FileHandle.standardError.write(Data("iscsi-target \(command): no server answers on \(path)\n".utf8))
            throw ExitCode(1)
        }
        guard let reply = try? JSONDecoder().decode(ControlReply.self, from: data) else {
            FileHandle.standardError.write(Data("iscsi-target \(command): unreadable reply\n".utf8))
            throw ExitCode(1)
        }
        guard reply.ok else {
            FileHandle.standardError.write(Data("iscsi-target \(command): \(reply.message)\n".utf8))
            throw ExitCode(1)
        }
        print(reply.message)
    }
}

/// Which target of the running server a change is for.
struct TargetOption: ParsableArguments {
    @Option(help: "The target (default: the server's only target).")
    var target: String?
}

/// `key=value` as a TOML pair: a value that is not already TOML (a number, true/false, a
/// quoted string, an array) is taken as a string.
func tomlPair(_ text: String) throws -> RuntimeChange.KeyValue {
    guard let equals = text.firstIndex(of: "=") else { throw ValidationError("expected key=value, got \(text)") }
    let key = text[..<equals].trimmingCharacters(in: .whitespaces)
    let raw = text[text.index(after: equals)...].trimmingCharacters(in: .whitespaces)
    guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
        throw ValidationError("not a key: \(key)")
    }
    return RuntimeChange.KeyValue(key, tomlValue(raw))
}

func tomlValue(_ raw: String) -> String {
    if raw == "true" || raw == "false" || Int(raw) != nil || raw.hasPrefix("\"") || raw.hasPrefix("[") { return raw }
    return "\"" + raw.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
}

struct LUN: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lun", abstract: "Add or remove a LUN of the running server.",
        subcommands: [Add.self, Remove.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a LUN (its file is created when missing); initiators get REPORTED LUNS DATA HAS CHANGED.",
            discussion: """
                Any [[target.lun]] key of Docs/configuration.md can be given with --set, e.g.
                  iscsi-target lun add --number 2 --file extra.img --size 256MiB --set thin=true --set max_streams=8
                `iscsi-target save` writes the change into the definition file.
                """)

        @OptionGroup var control: ControlOptions
        @OptionGroup var which: TargetOption

        @Option(help: "The LUN number (0-16383).")
        var number: UInt16

        @Option(help: "The backing file (relative to the state folder), created when missing.")
        var file: String

        @Option(help: "The size, e.g. 1GiB or a number of bytes.")
        var size: String

        @Option(help: "Logical block size: 512, 1024, 2048 or 4096.")
        var blockSize: Int?

        @Option(name: .customLong("set"), help: "Another [[target.lun]] key as key=value (repeatable).")
        var settings: [String] = []

        func run() throws {
            var keys = [RuntimeChange.KeyValue("number", "\(number)"), RuntimeChange.KeyValue("file", tomlValue(file)),
                        RuntimeChange.KeyValue("size", Int(size) != nil ? size : tomlValue(size))]
            if let blockSize { keys.append(RuntimeChange.KeyValue("block_size", "\(blockSize)")) }
            keys += try settings.map(tomlPair)
            try control.send(ControlRequest(op: "lun-add", target: which.target, keys: keys), command: "lun add")
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a LUN (its file is flushed and kept); initiators get REPORTED LUNS DATA HAS CHANGED.")

        @OptionGroup var control: ControlOptions
        @OptionGroup var which: TargetOption

        @Option(help: "The LUN number.")
        var number: UInt16

        func run() throws {
            try control.send(ControlRequest(op: "lun-remove", target: which.target, lun: number), command: "lun remove")
        }
    }
}

struct Tokens: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change the ROD token limits of a running target ([target.tokens] keys).",
        discussion: """
            e.g. iscsi-target tokens --set max_tokens=64 --set max_inactivity_timeout=120
            Live tokens keep their timeouts. When the Third-party Copy VPD page changes, initiators get
            INQUIRY DATA HAS CHANGED.
            """)

    @OptionGroup var control: ControlOptions
    @OptionGroup var which: TargetOption

    @Option(name: .customLong("set"), help: "A [target.tokens] key as key=value (repeatable).")
    var settings: [String] = []

    func validate() throws {
        if settings.isEmpty { throw ValidationError("give at least one --set key=value") }
    }

    func run() throws {
        try control.send(ControlRequest(op: "tokens", target: which.target, keys: try settings.map(tomlPair)), command: "tokens")
    }
}

struct Save: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the running definition (with runtime changes) back to the definition file.")

    @OptionGroup var control: ControlOptions

    @Option(help: "Write here instead of the file the server was started with.")
    var output: String?

    @Flag(help: "Overwrite the definition file even if it changed on disk since the server read it.")
    var force = false

    func run() throws {
        let output = self.output.map { $0.hasPrefix("/") ? $0 : FileManager.default.currentDirectoryPath + "/" + $0 }
        try control.send(ControlRequest(op: "save", output: output, force: force), command: "save")
    }
}

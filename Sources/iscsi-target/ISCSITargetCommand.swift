//
// The command-line tool: `iscsi-target serve` (the default), `iscsi-target check-config`,
// `iscsi-target status`, and the runtime changes `lun add|remove`, `tokens` and `save`.
//
import ArgumentParser
import Foundation
import ISCSITarget
import Logging

@main
struct ISCSITargetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iscsi-target",
        abstract: "An iSCSI target emulator with file-backed LUNs.",
        subcommands: [Serve.self, CheckConfig.self, Status.self, LUN.self, Tokens.self, Save.self],
        defaultSubcommand: Serve.self)
}

enum LogLevelOption: String, ExpressibleByArgument, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
    var level: Logger.Level { Logger.Level(rawValue: rawValue)! }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the targets of a target definition (default: Targets/default.toml).")

    @Option(help: "The target definition (TOML).")
    var config: String = "Targets/default.toml"

    @Option(help: "Listen on HOST:PORT (overrides the definition; default 127.0.0.1:3260).")
    var listen: String?

    @Option(help: "Folder for LUN files (overrides the definition; created when missing).")
    var stateDir: String?

    @Option(help: "TargetAddress HOST:PORT returned by SendTargets (default: the address the connection came in on).")
    var advertise: String?

    @Option(help: "Serve Prometheus metrics on HOST:PORT at /metrics (overrides the definition's [server] metrics).")
    var metrics: String?

    @Option(help: "Log level.")
    var logLevel: LogLevelOption = .info

    func validate() throws {
        if let listen, ServerConfiguration.parseHostPort(listen) == nil {
            throw ValidationError("--listen expects HOST:PORT, got \"\(listen)\"")
        }
        if let advertise, ServerConfiguration.parseHostPort(advertise) == nil {
            throw ValidationError("--advertise expects HOST:PORT, got \"\(advertise)\"")
        }
        if let metrics, ServerConfiguration.parseHostPort(metrics) == nil {
            throw ValidationError("--metrics expects HOST:PORT, got \"\(metrics)\"")
        }
    }

    func run() async throws {
        let level = logLevel.level
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "iscsi-target")
        var configuration: ServerConfiguration
        do {
            configuration = try ServerConfiguration.load(path: config, stateDirectory: stateDir, listen: listen,
                                                         advertise: advertise)
        } catch {
            FileHandle.standardError.write(Data("iscsi-target: \(error)\n".utf8))
            throw ExitCode(2)
        }
        if let metrics { configuration.metricsListen = metrics }
        if let fault = ProcessInfo.processInfo.environment["ISCSI_TARGET_FAULT"] {
            switch fault {
            case "drop-last-data-in":
                configuration.faultDropLastDataIn = true
                logger.warning("fault injection active: dropping the last Data-In of reads over 64 KiB")
            default:
                FileHandle.standardError.write(Data("iscsi-target: unknown ISCSI_TARGET_FAULT \"\(fault)\"\n".utf8))
                throw ExitCode(2)
            }
        }
        let server = TargetServer(configuration: configuration, logger: logger)
        do {
            try await server.start()
        } catch {
            FileHandle.standardError.write(Data("iscsi-target: \(error)\n".utf8))
            try? await server.stop()
            throw ExitCode(1)
        }
        let signals = SignalWaiter()
        await signals.wait()
        logger.info("shutting down")
        try await server.stop()
    }
}

/// Waits for SIGINT or SIGTERM.
final class SignalWaiter: @unchecked Sendable {
    private var sources: [any DispatchSourceSignal] = []

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let once = OnceFlag()
            for sig in [SIGINT, SIGTERM] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler {
                    if once.take() { continuation.resume() }
                }
                source.resume()
                sources.append(source)
            }
        }
    }
}

final class OnceFlag: @unchecked Sendable {
    private var taken = false
    private let lock = NSLock()
    func take() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if taken { return false }
        taken = true
        return true
    }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a target definition and print every problem with its line or key.")

    @Argument(help: "The target definition (TOML).")
    var path: String

    func run() throws {
        do {
            let configuration = try ServerConfiguration.load(path: path)
            let luns = configuration.targets.reduce(0) { $0 + $1.luns.count }
            print("\(path): OK (\(configuration.targets.count) target(s), \(luns) LUN(s))")
        } catch let error as ConfigurationError {
            for issue in error.issues { print("\(path): \(issue)") }
            throw ExitCode(1)
        }
    }
}

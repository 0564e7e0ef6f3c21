//
// `iscsi-target status`: what the running server reports on its control socket.
//
import ArgumentParser
import Foundation
import ISCSITarget

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the running server: sessions, LUNs, copies in flight, ROD tokens, streams.")

    @OptionGroup var control: ControlOptions

    @Flag(help: "Print JSON (one document per refresh) instead of tables.")
    var json = false

    @Option(help: "Refresh every N seconds until interrupted.")
    var watch: Double?

    func run() throws {
        let path = try control.socketPath()
        repeat {
            guard let reply = ControlSocket.request("status", path: path) else {
                FileHandle.standardError.write(Data("iscsi-target status: no server answers on \(path)\n".utf8))
                throw ExitCode(1)
            }
            if json {
                FileHandle.standardOutput.write(reply)
            } else {
                let decoder = JSONDecoder()
                decoder.dateDecodingStrategy = .iso8601
                guard let status = try? decoder.decode(ServerStatus.self, from: reply) else {
                    FileHandle.standardError.write(Data("iscsi-target status: unreadable reply\n".utf8))
                    throw ExitCode(1)
                }
                if watch != nil { print("\u{1B}[H\u{1B}[2J", terminator: "") }
                print(StatusReport.render(status))
            }
            if let watch { Thread.sleep(forTimeInterval: max(0.1, watch)) }
        } while watch != nil
    }
}

enum StatusReport {
    static func bytes(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(n) B" : String(format: "%.1f %@", value, units[unit])
    }

    static func render(_ s: ServerStatus) -> String {
        var out: [String] = []
        let uptime = Int(Date().timeIntervalSince(s.started))
        out.append("portal \(s.portal), up \(uptime / 3600)h\(uptime / 60 % 60)m\(uptime % 60)s")
        for target in s.targets {
            out.append("")
            out.append("target \(target.name)\(target.alias.map { " (\($0))" } ?? "") tpgt \(target.portalGroup)")
            if let limits = target.tokenLimits {
                out.append("  ROD tokens: at most \(limits.maxTokens), inactivity timeout \(limits.defaultInactivityTimeout) s "
                           + "(at most \(limits.maxInactivityTimeout) s), default type \(limits.defaultRODType)")
            }
            for lun in target.luns {
                var line = "  lun \(lun.number): \(lun.file)  \(bytes(lun.bytes)), \(lun.blockSize)-byte blocks, \(lun.cache)"
                if lun.thin { line += ", thin" }
                if lun.readOnly { line += ", read-only" }
                if let allocated = lun.allocatedBytes { line += ", \(bytes(allocated)) allocated" }
                out.append(line)
                if let flash = lun.flash {
                    out.append(String(format: "    flash model: write amplification %.3f (%llu host pages, %llu flash pages, %llu erases)",
                                      flash.writeAmplification, flash.hostPageWrites, flash.flashPageWrites, flash.blockErases))
                }
                if let copy = lun.copy, copy.operations + copy.bytesRead + copy.bytesWritten > 0 {
                    out.append("    copies: \(copy.operations) commands (\(copy.failedOperations) failed), "
                               + "\(bytes(copy.bytesRead)) read, \(bytes(copy.bytesWritten)) written")
                }
                if let streams = lun.streams {
                    let used = streams.streams.enumerated().filter { $0.element.writeCommands + $0.element.readCommands > 0 }
                    if !used.isEmpty {
                        out.append("    streams: " + used.map { "\($0.offset): \($0.element.writeCommands) writes \(bytes($0.element.bytesWritten))" }
                            .joined(separator: "; "))
                    }
                    let groups = streams.groups.sorted { (Int($0.key) ?? 0) < (Int($1.key) ?? 0) }
                    if !groups.isEmpty {
                        out.append("    groups: " + groups.map { "\($0.key): \($0.value.writeCommands) writes \($0.value.readCommands) reads" }
                            .joined(separator: "; "))
                    }
                }
            }
        }
        out.append("")
        out.append("sessions: \(s.sessions.count)")
        for session in s.sessions {
            let digests = (session.headerDigest ? "H" : "-") + (session.dataDigest ? "D" : "-")
            out.append("  tsih \(session.tsih) \(session.initiator) isid \(session.isid) -> \(session.target ?? "(discovery)") from \(session.peer)")
            out.append("    digests \(digests), MaxRecvDSL \(session.maxRecvDataSegmentLength), MaxXmitDSL \(session.maxXmitDataSegmentLength), "
                       + "MaxBurst \(session.maxBurstLength), FirstBurst \(session.firstBurstLength), "
                       + "InitialR2T \(session.initialR2T ? "Yes" : "No"), ImmediateData \(session.immediateData ? "Yes" : "No"), "
                       + "MaxOutstandingR2T \(session.maxOutstandingR2T)")
        }
        out.append("")
        out.append("copies running: \(s.copiesRunning)")
        for copy in s.copies {
            out.append("  \(copy.command) list \(copy.listID) on \(copy.target)/\(copy.lun) from \(copy.initiator)"
                       + "\(copy.background ? " (background)" : ""): \(bytes(copy.bytesTransferred))")
        }
        out.append("")
        out.append("ROD tokens: \(s.tokens.count)")
        for token in s.tokens {
            let left = token.secondsLeft.map { String(format: ", %.1f s left", $0) } ?? ""
            var line = "  #\(token.id) \(token.type) \(token.state)\(left): \(token.source) [\(token.ranges.joined(separator: ","))] \(bytes(token.bytes))"
            if token.bytesPreserved > 0 { line += ", \(bytes(token.bytesPreserved)) preserved" }
            out.append(line)
            out.append("    owner \(token.owner)")
        }
        return out.joined(separator: "\n")
    }
}

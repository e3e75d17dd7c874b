import ALBReconciler
import ArgumentParser
import Foundation

struct ReconcileCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconcile",
        abstract: "Serve the manifests: bring the in-process data plane to their state and keep it there.",
        discussion: """
            Writes one status file per resource under the status directory and appends every action to \
            STATUS/events.log. With --watch, changes under the manifest directory are applied within a second. \
            SIGHUP forces a full reconcile; SIGTERM or SIGINT stops accepting, drains in-flight requests \
            (up to --drain-timeout seconds) and exits 0.
            """)

    @Argument(help: "Manifest directory.")
    var directory = "manifests"

    @Flag(help: "Watch the manifest directory and reconcile every change.")
    var watch = false

    @OptionGroup var status: StatusDirectoryOptions

    @Option(name: .customLong("access-log"), help: "Write one JSON object per request to this file.")
    var accessLog: String?

    @Option(name: .customLong("log-format"), help: "text or json.")
    var logFormat = "text"

    @Option(name: .customLong("log-level"), help: "debug, info, warning or error.")
    var logLevel = "info"

    @Option(name: .customLong("drain-timeout"), help: "Seconds to let in-flight requests finish on SIGTERM.")
    var drainTimeout = 30

    func validate() throws {
        guard Log.Format(rawValue: logFormat) != nil else { throw ValidationError("--log-format must be text or json") }
        guard Log.Level(name: logLevel) != nil else {
            throw ValidationError("--log-level must be debug, info, warning or error")
        }
        guard drainTimeout >= 0 else { throw ValidationError("--drain-timeout must not be negative") }
        try status.checkForWriting(manifestDirectory: directory)
        if !watch {
            // Only --watch waits for the directory to appear; serving nothing forever helps no one.
            try requireManifestDirectory(ManifestDirectory(root: directory))
        }
    }

    func run() async throws {
        let log = Log(level: Log.Level(name: logLevel) ?? .info, format: Log.Format(rawValue: logFormat) ?? .text)
        var options = ReconcileService.Options(manifestDirectory: directory, statusDirectory: status.statusDirectory,
                                               watch: watch, accessLogPath: accessLog)
        options.drainTimeout = .seconds(drainTimeout)
        do {
            try await ReconcileService(options: options, log: log).run()
        } catch {
            log.error("reconciler failed", ["error": String(describing: error)])
            throw ExitCode(1)
        }
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

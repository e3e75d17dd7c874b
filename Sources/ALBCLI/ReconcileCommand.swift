import ALBReconciler
import ArgumentParser
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

struct ReconcileCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconcile",
        abstract: "Serve the manifests: bring the in-process data plane to their state and keep it there.",
        discussion: """
            Writes one status file per resource under the status directory and appends every action to \
            STATUS/events.log. With --watch, changes under the manifest directory are applied within a second. \
            SIGHUP forces a full reconcile; SIGUSR1 reopens the access log (after logrotate moved it); \
            SIGTERM or SIGINT stops accepting, drains in-flight requests (up to --drain-timeout seconds) \
            and exits 0.

            Binary upgrade without dropping a connection: run every reconciler with --takeover PATH. A new \
            `alb reconcile --takeover PATH` started while one listens at PATH receives its listening sockets \
            and its status directory (same --status-dir) over PATH, serves them without binding anything \
            twice, and then listens at PATH itself; the old one stops accepting, lets in-flight requests \
            and keep-alive connections finish (each gets one last request) and exits 0. If the new one fails or does not say it serves within --takeover-timeout seconds, the \
            old one keeps serving and the new one exits 1. With nothing listening at PATH, start-up is the \
            usual one (docs/takeover.md).
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

    @Option(name: .customLong("event-loops"), help: ArgumentHelp(
        "Data-plane threads (event loops).",
        discussion: "Default: one per CPU this process may run on (its CPU affinity, e.g. under taskset or a "
            + "cpuset, within cgroup CPU limits). Each loop serves its share of the connections with its own "
            + "backend connection pools."))
    var eventLoops: Int?

    @Option(name: .customLong("park-idle-after"), help: ArgumentHelp(
        "Seconds an idle keep-alive connection of a plain HTTP listener keeps its buffers; 0 keeps them always.",
        discussion: "After that the connection's socket waits on its own (about 0.1 KB instead of about 4.7 KB) "
            + "until the client sends again, which costs the next request the setting up of a new connection "
            + "inside alb (no new TCP connection). HTTPS and HTTP/2 connections keep theirs (docs/operations.md).",
        valueName: "seconds"))
    var parkIdleAfter = 5

    @Option(name: .customLong("admin"), help: ArgumentHelp(
        "Serve the admin endpoint on HOST:PORT: /metrics, /healthz, /readyz and /status (off by default).",
        discussion: "/metrics is the Prometheus text format (docs/operations.md lists every metric); /healthz is 200 "
            + "while the process runs; /readyz is 200 once the first pass is done and every listener serves as its "
            + "manifest asks, 503 with the reasons otherwise (and while draining); /status is the JSON of `alb status "
            + "-o json`. Loopback addresses only, unless --admin-allow-remote. No listener may use this address.",
        valueName: "host:port"))
    var admin: String?

    @Flag(name: .customLong("admin-allow-remote"), help: "Let --admin listen on an address other than loopback.")
    var adminAllowRemote = false

    @Option(name: .customLong("takeover"),
            help: ArgumentHelp("Unix socket for binary upgrades: take over from the reconciler listening there, if any, then listen there.",
                               valueName: "path"))
    var takeoverPath: String?

    @Option(name: .customLong("takeover-timeout"),
            help: "Seconds a running reconciler waits for its successor to say it serves before it gives up.")
    var takeoverTimeout = 30

    func validate() throws {
        guard LogFormat(rawValue: logFormat) != nil else { throw ValidationError("--log-format must be text or json") }
        guard Logger.Level(name: logLevel) != nil else {
            throw ValidationError("--log-level must be debug, info, warning or error")
        }
        guard drainTimeout >= 0 else { throw ValidationError("--drain-timeout must not be negative") }
        guard parkIdleAfter >= 0 else { throw ValidationError("--park-idle-after must not be negative") }
        if let eventLoops, !(1...1024).contains(eventLoops) {
            throw ValidationError("--event-loops must be between 1 and 1024")
        }
        if let admin {
            switch AdminAddress.parse(admin) {
            case .failure(let error):
                throw ValidationError("--admin \(admin): \(error)")
            case .success(let address) where !address.isLoopback && !adminAllowRemote:
                throw ValidationError("--admin \(admin): not a loopback address (127.0.0.0/8, ::1, localhost); "
                                      + "add --admin-allow-remote to serve it there")
            case .success:
                break
            }
        }
        guard takeoverTimeout > 0 else { throw ValidationError("--takeover-timeout must be positive") }
        if let takeoverPath {
            guard !takeoverPath.isEmpty else { throw ValidationError("--takeover needs a path") }
            var info = stat()
            if lstat(takeoverPath, &info) == 0 && (info.st_mode & S_IFMT) != S_IFSOCK {
                throw ValidationError("--takeover \(takeoverPath) exists and is not a socket")
            }
        }
        try status.checkForWriting(manifestDirectory: directory)
        if !watch {
            // Only --watch waits for the directory to appear; serving nothing forever helps no one.
            try requireManifestDirectory(ManifestDirectory(root: directory))
        }
    }

    func run() async throws {
        let log = Logger.alb(level: Logger.Level(name: logLevel) ?? .info, format: LogFormat(rawValue: logFormat) ?? .text)
        var options = ReconcileService.Options(manifestDirectory: directory, statusDirectory: status.statusDirectory,
                                               watch: watch, accessLogPath: accessLog)
        options.drainTimeout = .seconds(drainTimeout)
        options.eventLoops = eventLoops
        options.parkIdleConnectionsAfter = parkIdleAfter > 0 ? .seconds(parkIdleAfter) : nil
        if let admin, case .success(let address) = AdminAddress.parse(admin) {
            options.admin = (address.host, address.port)
        }
        options.takeoverPath = takeoverPath
        options.takeoverTimeout = .seconds(takeoverTimeout)
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

import ALBDataPlane
import Dispatch
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// Runs `alb reconcile`: the data plane, the watcher, signals, periodic rescans, and the serial loop of
/// passes. Returns when SIGTERM or SIGINT has drained the data plane, or when a successor took over
/// (`--takeover`, docs/takeover.md) and this process has drained.
///
/// Signals go through swift-service-lifecycle: the loop runs as the one service of a `ServiceGroup` whose
/// graceful-shutdown signals are SIGTERM and SIGINT (the shutdown becomes a trigger of the loop, so it is
/// handled between passes, as any trigger); SIGHUP is a `UnixSignalsSequence` that triggers a full pass.
public struct ReconcileService: Sendable, Service {
    public struct Options: Sendable {
        public var manifestDirectory: String
        public var statusDirectory: String
        public var watch: Bool
        public var accessLogPath: String?
        public var drainTimeout: Duration = .seconds(30)
        /// A rescan even without a noticed change, so nothing is missed for long.
        public var rescanInterval: Duration = .seconds(5)
        /// The takeover socket: take over from the process listening there, if any, then listen there for
        /// the next one. Nil: no takeover, start-up as always.
        public var takeoverPath: String?
        /// How long this process, when a successor connects, waits for it to say it serves.
        public var takeoverTimeout: Duration = .seconds(30)
        /// After a takeover, how long an idle keep-alive connection of this process may take to send one
        /// last request (answered with `Connection: close`) before it is closed (``DataPlane/drainAfterHandOff(lastRequestWindow:)``).
        public var lastRequestWindow: Duration = .seconds(2)
        /// `--admin`: where the admin endpoint listens (``AdminServer``); nil when off.
        public var admin: (host: String, port: Int)?
        /// `--event-loops`: the data plane's threads; nil for one per CPU the process may run on.
        public var eventLoops: Int?
        /// `--park-idle-after`: how long an idle keep-alive connection of a plain HTTP listener keeps its
        /// channel before its socket is parked (``DataPlane``); nil: never.
        public var parkIdleConnectionsAfter: Duration? = .seconds(5)

        public init(manifestDirectory: String, statusDirectory: String, watch: Bool, accessLogPath: String?) {
            self.manifestDirectory = manifestDirectory
            self.statusDirectory = statusDirectory
            self.watch = watch
            self.accessLogPath = accessLogPath
        }
    }

    enum Trigger: Sendable {
        case start, changed, hangup, retry, rescan, refreshStats, terminate(String)
        /// A successor connected to the takeover socket.
        case takeover(DescriptorChannel)
    }

    public let options: Options
    public let log: Logger

    public init(options: Options, log: Logger) {
        self.options = options
        self.log = log
    }

    public func run() async throws {
        // SIGHUP, SIGUSR1 and SIGUSR2 must not end the process before their sources are up (their default
        // action). SIGTERM and SIGINT keep theirs until the ServiceGroup's sources take them: set to SIG_IGN here,
        // libdispatch on Linux never delivered them to those sources (measured: the process ignored SIGTERM).
        signal(SIGHUP, SIG_IGN)
        signal(SIGUSR1, SIG_IGN)
        signal(SIGUSR2, SIG_IGN)
        if ServiceGroupContext.isRunningInGroup {
            try await self.serve()
            return
        }
        // A name of its own: without one the group describes the service by reflection (`"\(service)"`,
        // every field of the options and the logger), about 1.5 ms of a cold start.
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [.init(service: self, successTerminationBehavior: .gracefullyShutdownGroup,
                             serviceName: "ReconcileService")],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: log))
        try await ServiceGroupContext.$isRunningInGroup.withValue(true) {
            try await group.run()
        }
    }

    /// Whether ``run()`` is being called by the `ServiceGroup` it set up.
    private enum ServiceGroupContext {
        @TaskLocal static var isRunningInGroup = false
    }

    private func serve() async throws {
        // The admin endpoint's address is not a listener's: a manifest that claims it is a start-up error
        // (later passes refuse such a listener with BindFailed and say why).
        let reserved = options.admin.map { ReservedAddress(host: $0.host, port: $0.port) }
        if let reserved {
            let claims = Reconciler.listenersClaiming(reserved, in: ManifestDirectory(root: options.manifestDirectory))
            if !claims.isEmpty {
                throw ReconcileServiceError("--admin \(reserved) is also a listener's address: "
                                            + claims.joined(separator: "; ") + "; choose another --admin port or change the listener")
            }
        }
        // With --takeover and a process listening there, its lock and sockets come from it; otherwise the
        // lock is taken here (and refused while another reconciler holds it), as always.
        var predecessor: (client: TakeoverClient, pid: Int32)?
        var lock: StatusDirectoryLock
        var inherited: [TransferableSocket] = []
        if let path = options.takeoverPath, let client = try TakeoverClient.connect(path: path) {
            log.info("taking over from the running reconciler", ["socket": path])
            let offer = try await client.receiveOffer(statusDirectory: options.statusDirectory)
            log.info("received the listening sockets and the status directory",
                     ["previous_pid": String(offer.previousPID), "sockets": String(offer.sockets.count)])
            lock = offer.lock
            inherited = offer.sockets
            predecessor = (client, offer.previousPID)
        } else {
            lock = try StatusDirectoryLock(directory: options.statusDirectory)
        }
        // Until a takeover is confirmed the lock is still the predecessor's too: leave it to it.
        var ownsLock = predecessor == nil
        defer { ownsLock ? lock.release() : lock.abandon() }
        raiseOpenFileLimit()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.eventLoops ?? EventLoopCount.available)
        let accessLog = try options.accessLogPath.map { try AccessLog(path: $0) }
        let dataPlane = try DataPlane(group: group, accessLog: accessLog,
                                      drainTimeout: .seconds(Int64(options.drainTimeout.components.seconds)),
                                      detailedMetrics: options.admin != nil,
                                      parkIdleConnectionsAfter: options.parkIdleConnectionsAfter.map(TimeAmount.init))
        if predecessor != nil {
            // The predecessor accepts until it has heard `ready`; this process from `done` on.
            dataPlane.holdAccepting()
            dataPlane.inherit(inherited)
        }
        let directory = ManifestDirectory(root: options.manifestDirectory)
        let reconciler = Reconciler(directory: directory, store: StatusStore(directory: options.statusDirectory),
                                    dataPlane: dataPlane, log: log, reservedAddress: reserved)
        // The admin endpoint: at once, or after a takeover is confirmed (the predecessor's holds the port
        // until it hands over).
        var admin: AdminServer?
        defer { if let admin { Task { await admin.stop() } } }
        if predecessor == nil {
            admin = try await startAdmin(group: group, reconciler: reconciler, dataPlane: dataPlane, retryFor: .zero)
        }
        let (triggers, continuation) = AsyncStream.makeStream(of: Trigger.self)

        // SIGHUP forces a full pass. The same sequence hears SIGTERM and SIGINT (which reach the loop as the
        // ServiceGroup's graceful shutdown) only to say which signal it was in the log and the status files.
        let signalName = NIOLockedValueBox<String?>(nil)
        // SIGUSR1 reopens the access log after `logrotate` moved it (nginx's convention); USR2 is ignored. By
        // default both end the process, in-flight requests and all.
        let signals = await UnixSignalsSequence(trapping: .sighup, .sigterm, .sigint, .sigusr1, .sigusr2)
        var background: [Task<Void, Never>] = []
        background.append(Task { [log] in
            for await received in signals {
                if received == .sighup {
                    continuation.yield(.hangup)
                } else if received == .sigusr1 {
                    do {
                        try accessLog?.reopen()
                        log.info("SIGUSR1: access log reopened", ["path": options.accessLogPath ?? ""])
                    } catch {
                        log.error("SIGUSR1: cannot reopen the access log; lines go on to the old file",
                                  ["path": options.accessLogPath ?? "", "error": "\(error)"])
                    }
                } else if received == .sigusr2 {
                    log.info("SIGUSR2 ignored")
                } else if let first = signalName.withLockedValue({ name -> String? in
                    defer { name = name ?? received.description }
                    return name
                }) {
                    // A second SIGTERM or SIGINT (Ctrl-C twice, an impatient supervisor): the operator does not
                    // want to wait for the drain. Exit 1 now: what is in flight is cut, as by SIGKILL, but the lines
                    // the access log's writer holds are written first.
                    log.warning("second termination signal: exiting now, without waiting for the drain",
                                ["first": first, "signal": received.description])
                    accessLog?.flush()
                    exit(1)
                }
            }
        })
        if options.watch {
            let watcher = DirectoryWatcher(directory: directory)
            background.append(Task {
                for await _ in watcher.changes() { continuation.yield(.changed) }
            })
        }
        let rescanInterval = options.rescanInterval, watch = options.watch
        background.append(Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: rescanInterval)
                continuation.yield(watch ? .rescan : .refreshStats)
            }
        })
        defer { background.forEach { $0.cancel() } }

        // A successor finds this process at the takeover socket. A process that takes over listens there
        // only once the takeover is confirmed: until then the socket file is its predecessor's.
        var takeoverListener: TakeoverListener?
        defer { takeoverListener?.stop() }
        if predecessor == nil {
            takeoverListener = try listenForTakeover(continuation)
        }

        log.info("reconciler starting", ["version": AlbatrossVersion.current, "manifests": options.manifestDirectory,
                                         "status": options.statusDirectory, "watch": String(options.watch)])
        if let problem = directory.rootState().problem {
            // Said once: the watcher notices the directory when it appears and the first pass serves it.
            log.warning("waiting for the manifest directory to appear",
                        ["directory": options.manifestDirectory, "problem": problem])
        }
        continuation.yield(.start)
        var retryTask: Task<Void, Never>?
        try await withGracefulShutdownHandler {
        for await trigger in triggers {
            let reason: String
            // A pass an edit triggered writes the status files of what it changed; counters alone wait for
            // the periodic refresh (the rescan with --watch, `refreshStats` without), so that the next edit
            // does not wait for 100 files the traffic since the last pass moved.
            var counters = StatusStore.Counters.refresh
            switch trigger {
            case .terminate:
                let signalName = await Self.name(of: signalName)
                log.info("draining before exit", ["signal": signalName,
                                                  "timeout": "\(options.drainTimeout.components.seconds)s"])
                reconciler.adminState.startDraining()
                retryTask?.cancel()
                // No successor can take over a process that is stopping: one that tries finds no socket.
                takeoverListener?.stop()
                await reconciler.shutdown(drainTimeout: options.drainTimeout, reason: signalName)
                await admin?.stop()
                admin = nil
                try? await group.shutdownGracefully()
                log.info("stopped")
                return
            case .takeover(let channel):
                let outcome = await Takeover.handOver(
                    over: channel, dataPlane: dataPlane, lock: lock, statusDirectory: options.statusDirectory,
                    readyTimeout: options.takeoverTimeout, log: log)
                switch outcome {
                case .handedOver(let pid):
                    // The successor owns the status directory now: nothing here writes to it again.
                    ownsLock = false
                    retryTask?.cancel()
                    background.forEach { $0.cancel() }
                    takeoverListener?.stop(removingPath: false)
                    takeoverListener = nil
                    reconciler.adminState.startDraining()
                    await admin?.stop()
                    admin = nil
                    log.info("handed over; stopped accepting, draining before exit",
                             ["new_pid": String(pid), "timeout": "\(options.drainTimeout.components.seconds)s"])
                    await dataPlane.drainAfterHandOff(lastRequestWindow: Self.timeAmount(options.lastRequestWindow))
                    try? await group.shutdownGracefully()
                    log.info("stopped after the takeover", ["new_pid": String(pid)])
                    return
                case .failed(let problem):
                    log.warning("takeover failed; still serving", ["error": problem])
                    // The successor may have written status files meanwhile: put back what serves here.
                    lock.writeOwnerPID()
                    await reconciler.reassertStatusOwnership()
                    reason = "takeover failed"
                }
            case .refreshStats:
                await reclaimStatusDirectoryIfRemoved(&lock, owned: &ownsLock, reconciler: reconciler)
                await reconciler.refreshStats()
                continue
            case .start: reason = "start"
            case .changed: reason = "manifests changed"; counters = .keepWritten
            case .hangup: reason = "SIGHUP"; counters = .keepWritten; log.info("SIGHUP: full reconcile")
            case .retry: reason = "retry"
            case .rescan: reason = "periodic rescan"
            }
            await reclaimStatusDirectoryIfRemoved(&lock, owned: &ownsLock, reconciler: reconciler)
            let result = await reconciler.pass(reason: reason, counters: counters)
            retryTask?.cancel()
            retryTask = nil
            if let next = result.nextPass {
                let delay = max(0, next.timeIntervalSinceNow)
                retryTask = Task {
                    try? await Task.sleep(for: .milliseconds(Int(delay * 1000) + 1))
                    if !Task.isCancelled { continuation.yield(.retry) }
                }
            }
            if let (client, previousPID) = predecessor {
                // The first pass is done: this process serves what its manifests want, on the inherited
                // sockets where it could. Sockets nobody wants close; then the predecessor stops accepting.
                predecessor = nil
                for socket in dataPlane.releaseUnclaimedInheritedSockets() {
                    log.info("closed an inherited socket no listener wants",
                             ["address": socket.boundAddress, "previous_listener": socket.listener])
                }
                switch await client.confirm(previousPID: previousPID) {
                case .confirmed:
                    log.info("took over: the previous reconciler stopped accepting and drains",
                             ["previous_pid": String(previousPID)])
                case .previousExited:
                    log.warning("the previous reconciler exited during the takeover; serving on its sockets",
                                ["previous_pid": String(previousPID)])
                case .refused(let problem):
                    log.error("the previous reconciler kept serving; stepping back",
                              ["previous_pid": String(previousPID), "error": problem])
                    retryTask?.cancel()
                    await dataPlane.drainAfterHandOff(lastRequestWindow: Self.timeAmount(options.lastRequestWindow))
                    try? await group.shutdownGracefully()
                    throw ReconcileServiceError("takeover failed: \(problem)")
                }
                await dataPlane.startAccepting()
                if dataPlane.hasDatagramSocketsOfPredecessor {
                    Self.readDatagramSockets(of: dataPlane, afterExitOf: previousPID, log: log)
                }
                ownsLock = true
                lock.writeOwnerPID()
                if options.admin != nil {
                    do {
                        admin = try await startAdmin(group: group, reconciler: reconciler, dataPlane: dataPlane,
                                                     retryFor: .seconds(5))
                    } catch {
                        log.error("cannot start the admin endpoint", ["error": String(describing: error)])
                    }
                }
                do {
                    takeoverListener = try listenForTakeover(continuation)
                } catch {
                    log.error("cannot listen for the next takeover", ["error": String(describing: error)])
                }
            }
        }
        } onGracefulShutdown: {
            continuation.yield(.terminate(""))
        }
    }

    /// The signal that started a graceful shutdown. Its own source may report it a moment after the
    /// ServiceGroup's: wait up to 100 ms, then say what is known.
    private static func name(of signal: NIOLockedValueBox<String?>) async -> String {
        for _ in 0..<100 {
            if let name = signal.withLockedValue({ $0 }) { return name }
            try? await Task.sleep(for: .milliseconds(1))
        }
        return "graceful shutdown"
    }

    /// Starts the admin endpoint when `--admin` asks for one. `retryFor`: how long a taken port is tried
    /// again (after a takeover, until the predecessor has closed its endpoint).
    private func startAdmin(group: any EventLoopGroup, reconciler: Reconciler, dataPlane: DataPlane,
                            retryFor: Duration) async throws -> AdminServer? {
        guard let (host, port) = options.admin else { return nil }
        let deadline = ContinuousClock.now + retryFor
        let metrics = reconciler.metrics
        while true {
            do {
                let server = try await AdminServer.start(host: host, port: port, group: group, state: reconciler.adminState,
                                                         metrics: { await metrics.exposition(dataPlane: dataPlane) })
                log.info("admin endpoint listening", ["address": server.address])
                return server
            } catch {
                guard ContinuousClock.now < deadline else {
                    throw ReconcileServiceError("admin endpoint \(host):\(port): \(error)")
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// Takes the status directory back when it was removed under this process (checked before each pass
    /// and refresh: one `stat`), and writes every status file again.
    private func reclaimStatusDirectoryIfRemoved(_ lock: inout StatusDirectoryLock, owned: inout Bool,
                                                 reconciler: Reconciler) async {
        guard owned else { return }
        do {
            guard let fresh = try lock.reacquiredIfRemoved(directory: options.statusDirectory) else { return }
            lock = fresh
            log.warning("the status directory was removed; writing it again", ["status": options.statusDirectory])
            await reconciler.statusDirectoryRemoved()
        } catch {
            // Said once: the directory is another reconciler's now (at exit this process leaves its lock alone).
            owned = false
            log.error("the status directory was removed and another `alb reconcile` took it; status files here "
                      + "are no longer kept up to date", ["status": options.statusDirectory,
                                                          "error": String(describing: error)])
        }
    }

    /// Listens at the takeover socket (if one was given) and turns each connection into a trigger.
    private func listenForTakeover(_ continuation: AsyncStream<Trigger>.Continuation) throws -> TakeoverListener? {
        guard let path = options.takeoverPath else { return nil }
        let listener = try TakeoverListener.start(path: path) { channel in
            continuation.yield(.takeover(channel))
        }
        log.info("listening for a takeover", ["socket": path])
        return listener
    }

    /// The QUIC sockets a predecessor passed on are read from the moment it has exited: until then it reads
    /// its copy, so that its HTTP/3 connections drain (docs/takeover.md). Checked every 100 ms; said once in
    /// the log when it takes longer than a minute (its drain timeout bounds it).
    private static func readDatagramSockets(of dataPlane: DataPlane, afterExitOf previousPID: Int32, log: Logger) {
        Task {
            let started = ContinuousClock.now
            var warned = false
            while !Takeover.hasExited(previousPID) {
                if !warned, ContinuousClock.now - started > .seconds(60) {
                    warned = true
                    log.warning("the previous reconciler still drains; its QUIC sockets are read once it exits",
                                ["previous_pid": String(previousPID)])
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
            await dataPlane.readInheritedDatagramSockets()
            log.info("the previous reconciler exited; reading its QUIC sockets", ["previous_pid": String(previousPID)])
        }
    }

    static func timeAmount(_ duration: Duration) -> TimeAmount {
        .nanoseconds(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
    }
}

extension ReconcileService {
    /// Every connection costs a descriptor (two when proxied): raise the soft limit to the hard one, as
    /// nginx's `worker_rlimit_nofile` does, and say so when the per-listener cap cannot be reached.
    func raiseOpenFileLimit() {
        #if canImport(Glibc)
        var limit = rlimit()
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        guard getrlimit(resource, &limit) == 0 else { return }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(resource, &limit)
        }
        if limit.rlim_cur < 2 * 20_000 + 1024 {
            log.info("open file limit is below what 20,000 proxied connections need",
                     ["nofile": String(limit.rlim_cur)])
        }
        #endif
    }
}

/// One reconciler per status directory: a second one would fight the first over every file.
///
/// The lock is a `flock` on `STATUS/.lock`. Such a lock belongs to the open file, not to the process: a
/// copy of the descriptor passed to a successor (a takeover, docs/takeover.md) holds the same lock, so the
/// lock changes hands without ever being free. That is also why ``abandon()`` exists: the predecessor
/// closes its copy without unlocking, which would unlock the successor's too.
public struct StatusDirectoryLock: Sendable {
    let descriptor: OwnedDescriptor

    init(directory: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            // Foundation's message is an NSCocoaErrorDomain code; say what the path is instead.
            let state = ManifestDirectory(root: directory).rootState()
            throw ReconcileServiceError("cannot create the status directory \(directory): "
                                            + (state.problem ?? "\(error.localizedDescription)"))
        }
        let path = FilePaths.child(".lock", of: directory)
        let raw = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard raw >= 0 else {
            throw ReconcileServiceError("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        descriptor = OwnedDescriptor(adopting: raw)
        guard flock(raw, LOCK_EX | LOCK_NB) == 0 else {
            descriptor.close()
            throw ReconcileServiceError("the status directory \(directory) is in use by another `alb reconcile`")
        }
        writeOwnerPID()
    }

    /// The lock a predecessor passed on. It must be `directory`'s lock file (the same file, compared by
    /// device and inode): a process started with another status directory cannot take this one over.
    init(inherited: OwnedDescriptor, directory: String) throws {
        let path = FilePaths.child(".lock", of: directory)
        guard let identity = inherited.identity, FileIdentity(path: path) == identity else {
            throw ReconcileServiceError("the running `alb reconcile` keeps its status files elsewhere, not in \(directory)")
        }
        descriptor = inherited
    }

    /// The owner's pid, so `alb status` can tell whether the files are being kept up to date.
    func writeOwnerPID() {
        let pid = Array("\(getpid())\n".utf8)
        descriptor.withRawValue { raw in
            _ = ftruncate(raw, 0)
            _ = pid.withUnsafeBytes { pwrite(raw, $0.baseAddress, $0.count, 0) }
        }
    }

    /// When `directory`'s lock file is no longer this lock's (the status directory was deleted, or emptied,
    /// under this process), the lock on a new one; nil while it is. Throws when another `alb reconcile`
    /// took the directory meanwhile. A second reconciler could otherwise start on the directory, and
    /// `alb status` would take it for no reconciler's.
    func reacquiredIfRemoved(directory: String) throws -> StatusDirectoryLock? {
        // A lock whose own file cannot be asked about is left as it is: a new one would refuse against it.
        guard let identity = descriptor.identity else { return nil }
        if FileIdentity(path: FilePaths.child(".lock", of: directory)) == identity { return nil }
        let fresh = try StatusDirectoryLock(directory: directory)
        // The old file is unlinked: its lock guards nothing any more.
        descriptor.close()
        return fresh
    }

    /// A copy for a successor: it holds the same lock.
    func duplicate() throws -> OwnedDescriptor {
        try descriptor.duplicate()
    }

    func release() {
        descriptor.withRawValue { raw in
            _ = ftruncate(raw, 0)
            _ = flock(raw, LOCK_UN)
        }
        descriptor.close()
    }

    /// Closes this copy and leaves the lock (and the pid in the file) to the successor holding another.
    func abandon() {
        descriptor.close()
    }

    /// Whether a live `alb reconcile` owns `directory` (its pid is in the lock file and still runs).
    /// Reading the pid instead of trying the lock keeps `alb status` from ever blocking a starting reconciler.
    public static func isOwned(directory: String) -> Bool {
        guard let text = try? String(contentsOfFile: FilePaths.child(".lock", of: directory), encoding: .utf8),
              let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0 else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }
}

public struct ReconcileServiceError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

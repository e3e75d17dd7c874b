import ALBDataPlane
import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOPosix

/// Runs `alb reconcile`: the data plane, the watcher, signals, periodic rescans, and the serial loop of
/// passes. Returns when SIGTERM or SIGINT has drained the data plane.
public struct ReconcileService: Sendable {
    public struct Options: Sendable {
        public var manifestDirectory: String
        public var statusDirectory: String
        public var watch: Bool
        public var accessLogPath: String?
        public var drainTimeout: Duration = .seconds(30)
        /// A rescan even without a noticed change, so nothing is missed for long.
        public var rescanInterval: Duration = .seconds(5)

        public init(manifestDirectory: String, statusDirectory: String, watch: Bool, accessLogPath: String?) {
            self.manifestDirectory = manifestDirectory
            self.statusDirectory = statusDirectory
            self.watch = watch
            self.accessLogPath = accessLogPath
        }
    }

    enum Trigger: Sendable { case start, changed, hangup, retry, rescan, refreshStats, terminate(String) }

    public let options: Options
    public let log: Log

    public init(options: Options, log: Log) {
        self.options = options
        self.log = log
    }

    public func run() async throws {
        let lock = try StatusDirectoryLock(directory: options.statusDirectory)
        defer { lock.release() }
        raiseOpenFileLimit()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: NIOCore.System.coreCount)
        let accessLog = try options.accessLogPath.map { try AccessLog(path: $0) }
        let dataPlane = DataPlane(group: group, accessLog: accessLog,
                                  drainTimeout: .seconds(Int64(options.drainTimeout.components.seconds)))
        let directory = ManifestDirectory(root: options.manifestDirectory)
        let reconciler = Reconciler(directory: directory, store: StatusStore(directory: options.statusDirectory),
                                    dataPlane: dataPlane, log: log)
        let (triggers, continuation) = AsyncStream.makeStream(of: Trigger.self)

        var signalSources: [DispatchSourceSignal] = []
        for (number, trigger) in [(SIGTERM, Trigger.terminate("SIGTERM")), (SIGINT, .terminate("SIGINT")),
                                  (SIGHUP, .hangup)] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(trigger) }
            source.resume()
            signalSources.append(source)
        }
        defer { signalSources.forEach { $0.cancel() } }

        var background: [Task<Void, Never>] = []
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

        log.info("reconciler starting", ["manifests": options.manifestDirectory, "status": options.statusDirectory,
                                         "watch": String(options.watch)])
        if let problem = directory.rootState().problem {
            // Said once: the watcher notices the directory when it appears and the first pass serves it.
            log.warning("waiting for the manifest directory to appear",
                        ["directory": options.manifestDirectory, "problem": problem])
        }
        continuation.yield(.start)
        var retryTask: Task<Void, Never>?
        for await trigger in triggers {
            let reason: String
            switch trigger {
            case .terminate(let signalName):
                log.info("draining before exit", ["signal": signalName,
                                                  "timeout": "\(options.drainTimeout.components.seconds)s"])
                retryTask?.cancel()
                await reconciler.shutdown(drainTimeout: options.drainTimeout, reason: signalName)
                try? await group.shutdownGracefully()
                log.info("stopped")
                return
            case .refreshStats:
                await reconciler.refreshStats()
                continue
            case .start: reason = "start"
            case .changed: reason = "manifests changed"
            case .hangup: reason = "SIGHUP"; log.info("SIGHUP: full reconcile")
            case .retry: reason = "retry"
            case .rescan: reason = "periodic rescan"
            }
            let result = await reconciler.pass(reason: reason)
            retryTask?.cancel()
            retryTask = nil
            if let next = result.nextPass {
                let delay = max(0, next.timeIntervalSinceNow)
                retryTask = Task {
                    try? await Task.sleep(for: .milliseconds(Int(delay * 1000) + 1))
                    if !Task.isCancelled { continuation.yield(.retry) }
                }
            }
        }
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
public struct StatusDirectoryLock {
    let descriptor: Int32

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
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw ReconcileServiceError("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(descriptor)
            throw ReconcileServiceError("the status directory \(directory) is in use by another `alb reconcile`")
        }
        // The owner's pid, so `alb status` can tell whether the files are being kept up to date.
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = pid.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
    }

    func release() {
        _ = ftruncate(descriptor, 0)
        flock(descriptor, LOCK_UN)
        close(descriptor)
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

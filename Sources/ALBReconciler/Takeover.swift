import ALBDataPlane
import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers
#if canImport(Glibc)
import Glibc
#endif

/// Both sides of a takeover (docs/takeover.md): a new `alb reconcile --takeover PATH` connects to the
/// running one listening at PATH, receives its listening sockets and its status-directory lock, serves,
/// says `ready`; the old one stops accepting, says `done`, drains and exits 0. Every step before `done`
/// can fail, and then the old process keeps serving as if nothing had happened.
///
/// The messages are ``TakeoverMessage``s over a ``DescriptorChannel``. Its calls block, so they run on a
/// thread of their own (``Takeover/blocking(_:)``), never on the cooperative pool the data plane and the
/// reconciler share.
public enum Takeover {
    /// How long the old process waits for `hello` after a connection, and the new one for `offer` (the
    /// old one answers between two passes) and for `done`.
    static let stepTimeout: Duration = .seconds(10)

    private static let queue = DispatchQueue(label: "alb.takeover", attributes: .concurrent)

    /// Runs blocking work on a thread outside the cooperative pool.
    static func blocking<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Swift.Result { try body() })
            }
        }
    }

    static func send(_ message: TakeoverMessage, over channel: DescriptorChannel,
                     descriptors: [OwnedDescriptor] = []) throws {
        try channel.send(message.encoded(), descriptors: descriptors)
    }

    /// One message and the descriptors that came with it.
    static func receive(from channel: DescriptorChannel, timeout: Duration) throws -> (TakeoverMessage, [OwnedDescriptor]) {
        let received = try channel.receive(timeout: timeout)
        return (try TakeoverMessage(decoding: received.bytes), received.descriptors)
    }

    /// Whether process `pid` has exited (gone, or a zombie nobody has reaped yet).
    static func hasExited(_ pid: Int32) -> Bool {
        if kill(pid, 0) != 0 { return errno == ESRCH }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }
}

// MARK: - The old process

/// The running process's end: listens at PATH and passes every connection to the reconcile loop, which
/// hands over between two passes (``handOver(over:dataPlane:lock:statusDirectory:readyTimeout:log:)``).
public final class TakeoverListener: Sendable {
    private let listener: DescriptorChannelListener
    private let stopped = StopSignal()

    private init(listener: DescriptorChannelListener) {
        self.listener = listener
    }

    /// Listens at `path` (replacing a socket file left there, in one rename) and calls `connected` on a
    /// thread of its own for each process that connects, until ``stop()``.
    public static func start(path: String, connected: @escaping @Sendable (DescriptorChannel) -> Void) throws -> TakeoverListener {
        let takeover = TakeoverListener(listener: try DescriptorChannelListener.listen(path: path))
        let thread = Thread {
            while !takeover.stopped.isSet {
                if let channel = try? takeover.listener.accept(timeout: .milliseconds(200)) {
                    connected(channel)
                }
            }
            takeover.listener.close(removingPath: !takeover.stopped.keepPath)
            takeover.stopped.finished()
        }
        thread.name = "alb-takeover"
        thread.start()
        return takeover
    }

    public var path: String { self.listener.path }

    /// Stops listening and waits (at most a second) for the listening thread to close the socket. The
    /// socket file is removed while it is still this process's, unless `removingPath` is false: after a
    /// takeover the successor renames its own over it, and checking first would race that rename.
    public func stop(removingPath: Bool = true) {
        guard !self.stopped.isSet else { return }
        self.stopped.set(keepingPath: !removingPath)
        self.stopped.waitFinished(timeout: 1)
    }
}

extension Takeover {
    public enum HandOverOutcome: Sendable, Equatable {
        /// The new process serves; this one stopped accepting and must drain and exit.
        case handedOver(pid: Int32)
        /// Nothing changed for this process: it keeps serving and owning the status directory.
        case failed(String)
    }

    /// The old process's side of one takeover, run by the reconcile loop between passes (no pass and no
    /// status write happens meanwhile): `hello` in, `offer` (with a copy of the status lock) and `sockets`
    /// (with copies of every listening socket) out, then up to `readyTimeout` for `ready`. On `ready` it
    /// stops accepting and answers `done`. The connection is closed when this returns.
    public static func handOver(over channel: DescriptorChannel, dataPlane: DataPlane, lock: StatusDirectoryLock,
                                statusDirectory: String, readyTimeout: Duration, log: Logger) async -> HandOverOutcome {
        defer { channel.close() }
        var newPID: Int32 = 0
        do {
            let (hello, _) = try await blocking { try receive(from: channel, timeout: stepTimeout) }
            guard case .hello(let version, let pid, let datagrams) = hello else {
                throw TakeoverProtocolError.unexpected(expected: "hello", got: hello.type)
            }
            newPID = pid
            guard version == TakeoverMessage.version else {
                try? send(.abort(reason: TakeoverProtocolError.version(version).description), over: channel)
                throw TakeoverProtocolError.version(version)
            }
            if let peer = channel.peer, peer.userID != geteuid(), peer.userID != 0 {
                try? send(.abort(reason: "not the same user"), over: channel)
                return .failed("pid \(pid) runs as user \(peer.userID), not as this process's user")
            }
            let sockets = await dataPlane.exportListeningSockets(includingDatagrams: datagrams)
            let lockCopy = try lock.duplicate()
            let directory = FilePaths.realPath(statusDirectory) ?? statusDirectory
            log.info("takeover: passing the listening sockets and the status directory",
                     ["new_pid": String(pid), "sockets": String(sockets.count)])
            try await blocking {
                try send(.offer(version: TakeoverMessage.version, pid: getpid(), statusDirectory: directory,
                                sockets: sockets.count), over: channel, descriptors: [lockCopy])
                var start = 0
                while start < sockets.count {
                    let batch = sockets[start..<min(start + DescriptorChannel.maximumDescriptors, sockets.count)]
                    try send(.sockets(batch.map { TakeoverMessage.Socket(listener: $0.listener, address: $0.address,
                                                                         boundAddress: $0.boundAddress,
                                                                         datagram: $0.datagram) }),
                             over: channel, descriptors: batch.map(\.descriptor))
                    start += batch.count
                }
            }
            // The copies are the new process's now; this process keeps its own.
            lockCopy.close()
            sockets.forEach { $0.descriptor.close() }
            let (reply, _) = try await blocking { try receive(from: channel, timeout: readyTimeout) }
            switch reply {
            case .ready:
                await dataPlane.stopAccepting()
                do {
                    try await blocking { try send(.done, over: channel) }
                } catch {
                    // Gone between `ready` and `done` (it waits for `done` before it accepts anything).
                    await dataPlane.startAccepting()
                    return .failed("pid \(pid) went away before it heard done")
                }
                return .handedOver(pid: pid)
            case .abort(let reason):
                return .failed("pid \(pid) gave up: \(reason)")
            default:
                throw TakeoverProtocolError.unexpected(expected: "ready", got: reply.type)
            }
        } catch DescriptorChannelError.timedOut {
            try? send(.abort(reason: "no answer in time"), over: channel)
            return .failed("the new process\(newPID > 0 ? " (pid \(newPID))" : "") did not answer in time")
        } catch DescriptorChannelError.closed {
            return .failed("the new process\(newPID > 0 ? " (pid \(newPID))" : "") closed the connection (it exited?)")
        } catch {
            try? send(.abort(reason: String(describing: error)), over: channel)
            return .failed(String(describing: error))
        }
    }
}

// MARK: - The new process

/// The new process's end, from connecting to `done`.
public final class TakeoverClient: Sendable {
    /// What the old process passed on: its pid, its status-directory lock (checked to be this status
    /// directory's) and copies of its listening sockets.
    public struct Offer: Sendable {
        public var previousPID: Int32
        public var lock: StatusDirectoryLock
        public var sockets: [TransferableSocket]
    }

    public enum Confirmation: Sendable, Equatable {
        /// The old process stopped accepting and drains: this one owns everything.
        case confirmed
        /// The old process exited before saying `done` (it cannot come back): this one owns everything.
        case previousExited
        /// The old process is alive and gave up on this takeover (a timeout, say): it keeps serving, and
        /// this one must step back.
        case refused(String)
    }

    private let channel: DescriptorChannel
    public let path: String

    private init(channel: DescriptorChannel, path: String) {
        self.channel = channel
        self.path = path
    }

    /// Connects to the process listening at `path`; nil when none does (no socket file, or one left by a
    /// process that is gone): then start-up is an ordinary one.
    public static func connect(path: String) throws -> TakeoverClient? {
        try DescriptorChannel.connect(path: path).map { TakeoverClient(channel: $0, path: path) }
    }

    /// `hello` out, `offer` and `sockets` in.
    /// - Throws: when the old process refuses, does not answer, or keeps another status directory (then
    ///   it is told so, and keeps serving).
    public func receiveOffer(statusDirectory: String) async throws -> Offer {
        let channel = self.channel
        let received = try await Takeover.blocking {
            try Takeover.send(.hello(version: TakeoverMessage.version, pid: getpid(), datagrams: true), over: channel)
            let (offer, lockDescriptors) = try Takeover.receive(from: channel, timeout: Takeover.stepTimeout)
            if case .abort(let reason) = offer { throw TakeoverProtocolError.aborted(reason) }
            guard case .offer(let version, _, _, let count) = offer else {
                throw TakeoverProtocolError.unexpected(expected: "offer", got: offer.type)
            }
            guard version == TakeoverMessage.version else { throw TakeoverProtocolError.version(version) }
            var sockets: [TransferableSocket] = []
            while sockets.count < count {
                let (message, descriptors) = try Takeover.receive(from: channel, timeout: Takeover.stepTimeout)
                guard case .sockets(let entries) = message else {
                    throw TakeoverProtocolError.unexpected(expected: "sockets", got: message.type)
                }
                guard entries.count == descriptors.count, !entries.isEmpty else {
                    throw TakeoverProtocolError.malformed("\(entries.count) sockets with \(descriptors.count) descriptors")
                }
                for (entry, descriptor) in zip(entries, descriptors) {
                    let datagram = entry.datagram ?? false
                    guard datagram ? descriptor.isDatagramSocket : descriptor.isListeningSocket else {
                        throw TakeoverProtocolError.malformed("the descriptor for \(entry.address) is no "
                                                                  + (datagram ? "UDP socket" : "listening socket"))
                    }
                    sockets.append(TransferableSocket(listener: entry.listener, address: entry.address,
                                                      boundAddress: entry.boundAddress, datagram: datagram,
                                                      descriptor: descriptor))
                }
            }
            return (offer: offer, lock: lockDescriptors, sockets: sockets)
        }
        guard case .offer(_, let pid, let directory, _) = received.offer, received.lock.count == 1,
              let lockDescriptor = received.lock.first else {
            throw TakeoverProtocolError.malformed("offer without the status directory's lock")
        }
        do {
            let lock = try StatusDirectoryLock(inherited: lockDescriptor, directory: statusDirectory)
            return Offer(previousPID: pid, lock: lock, sockets: received.sockets)
        } catch {
            try? Takeover.send(.abort(reason: "the new process was started with another status directory"), over: channel)
            throw ReconcileServiceError("the running `alb reconcile` (pid \(pid)) keeps its status files in \(directory), "
                                            + "not in \(statusDirectory); start this one with --status-dir \(directory)")
        }
    }

    /// `ready` out, `done` in. Anything else (the connection closed, an `abort`, no answer) is a refusal
    /// while the old process lives: it decided to keep serving.
    public func confirm(previousPID: Int32) async -> Confirmation {
        let channel = self.channel
        let outcome: Result<TakeoverMessage, Error> = await Result(catching: {
            try await Takeover.blocking {
                try Takeover.send(.ready, over: channel)
                return try Takeover.receive(from: channel, timeout: Takeover.stepTimeout).0
            }
        })
        channel.close()
        let problem: String
        switch outcome {
        case .success(.done):
            return .confirmed
        case .success(.abort(let reason)):
            problem = reason
        case .success(let message):
            problem = "expected done, got \(message.type)"
        case .failure(let error):
            problem = String(describing: error)
        }
        if Takeover.hasExited(previousPID) { return .previousExited }
        return .refused(problem)
    }

    /// Tells the old process the takeover is off (it keeps serving) and closes the connection.
    public func abort(reason: String) {
        try? Takeover.send(.abort(reason: reason), over: self.channel)
        self.channel.close()
    }
}

extension Result where Failure == Error {
    init(catching body: () async throws -> Success) async {
        do {
            self = .success(try await body())
        } catch {
            self = .failure(error)
        }
    }
}

/// A stop flag (and whether to keep the socket file) set from one thread and read by the listening one,
/// and a way to wait for that thread to finish.
private final class StopSignal: Sendable {
    private let state = NIOLockedValueBox((stopped: false, keepPath: false))
    private let done = DispatchSemaphore(value: 0)

    var isSet: Bool { state.withLockedValue { $0.stopped } }
    var keepPath: Bool { state.withLockedValue { $0.keepPath } }
    func set(keepingPath: Bool) {
        state.withLockedValue { $0 = (stopped: true, keepPath: keepingPath) }
    }
    func finished() { done.signal() }
    func waitFinished(timeout seconds: Double) { _ = done.wait(timeout: .now() + seconds) }
}

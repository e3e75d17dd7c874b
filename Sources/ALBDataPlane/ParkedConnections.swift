import CLinuxEvents
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// The sockets of idle keep-alive connections, off their channels (``IdleConnectionParking``): an epoll set of
/// its own watched by one thread, and per socket its listener, its event loop and its idle deadline (about
/// 100 bytes where a connection on its channel holds about 4.7 KB; docs/decisions.md, "Parked idle
/// connections").
///
/// - The client sends: the socket goes back to its event loop as a new channel with the listener's pipeline
///   (``ListenerRuntime/resumeParked(_:on:)``), which reads the request as from a connection just accepted.
/// - The client closes, or the idle deadline passes: the socket is closed, as the channel's idle timeout
///   would have closed it.
/// - The listener drains or stops: its parked sockets are closed at once (an idle connection closes at once
///   on a drain), or, when a successor process takes over, go back to channels for their last request.
///
/// A parked connection still counts as one of its listener's open connections (its connection cap, its
/// drain, the status files' `activeConnections`).
///
/// NIO gives no channel's descriptor away: parking reads it from the channel's description, checks that it
/// is this connection's socket (both addresses), and keeps a duplicate, so the channel's close leaves the
/// socket open. A NIO whose description says no descriptor parks nothing.
///
/// Parking frees a connection's memory to the allocator, which keeps it for the process; after a batch of
/// parked connections (``trimAfter``), at most once a second, this thread returns it to the system
/// (`malloc_trim`, as HAProxy's pool trimming does), so the process's resident memory follows.
final class ParkedConnections: Sendable {
    /// What the thread knows of a parked socket.
    private struct Parked {
        let runtime: ListenerRuntime
        let loop: Int
        let deadline: NIODeadline
    }

    private struct State {
        var parked: [Int32: Parked] = [:]
        /// No deadline of a parked socket is earlier: the thread's epoll wait ends here at the latest.
        var earliestDeadline = NIODeadline.distantFuture
        /// Parked since the last trim.
        var parkedSinceTrim = 0
        var lastTrim = NIODeadline.uptimeNanoseconds(0)
        var stopped = false
    }

    let parkingDelay: TimeAmount
    /// The data plane's event loops: a socket resumes on the loop it was parked from.
    private let loops: [EventLoop]
    private let state = NIOLockedValueBox(State())
    private let poll: Int32
    /// Written to end the thread's wait early: a new earliest deadline, or ``stop()``.
    private let wake: Int32
    private let thread = NIOThreadPool(numberOfThreads: 1)
    /// How many parked connections make a trim worthwhile (about 4.7 KB each).
    static let trimAfter = 64
    /// Trims at most this often: `malloc_trim` holds each allocator arena's lock while it walks it.
    static let trimInterval = TimeAmount.seconds(1)
    /// How late an idle deadline may be acted on: deadlines are swept at most this often, so that many
    /// parked sockets expiring one after another cost one pass over the table, not one each.
    static let sweepInterval = TimeAmount.milliseconds(100)

    init(parkingDelay: TimeAmount, group: EventLoopGroup) throws {
        self.parkingDelay = parkingDelay
        self.loops = Array(group.makeIterator())
        let poll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard poll >= 0 else { throw IOError(errnoCode: errno, reason: "epoll_create1") }
        let wake = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard wake >= 0 else {
            let code = errno
            Glibc.close(poll)
            throw IOError(errnoCode: code, reason: "eventfd")
        }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.fd = wake
        guard epoll_ctl(poll, EPOLL_CTL_ADD, wake, &event) == 0 else {
            let code = errno
            Glibc.close(poll)
            Glibc.close(wake)
            throw IOError(errnoCode: code, reason: "epoll_ctl")
        }
        self.poll = poll
        self.wake = wake
        self.thread.start()
        self.thread.submit { [self] _ in self.run() }
    }

    /// Parked sockets now (tests and diagnostics).
    var count: Int { self.state.withLockedValue { $0.parked.count } }

    /// Takes the socket of `channel`, a connection of `runtime`, and closes the channel (see
    /// ``IdleConnectionParking/park(_:until:)``).
    func park(_ channel: Channel, of runtime: ListenerRuntime, until deadline: NIODeadline) -> Bool {
        guard (try? channel.syncOptions?.getOption(.bufferedWritableBytes)) == 0,
              let loop = self.loops.firstIndex(where: { $0 === channel.eventLoop }),
              let descriptor = Self.descriptor(of: channel) else { return false }
        let copy = fcntl(descriptor, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { return false }
        let (parked, wakeThread) = self.state.withLockedValue { state -> (Bool, Bool) in
            // Under the lock: a drain marks its listener before it closes the listener's parked sockets
            // (under the lock too), so a socket parked after that cannot be missed.
            guard !state.stopped, runtime.acceptsParking, self.watch(copy) else { return (false, false) }
            // Counted before the channel's close uncounts it, and before the thread can see the socket.
            runtime.countParked()
            state.parked[copy] = Parked(runtime: runtime, loop: loop, deadline: deadline)
            state.parkedSinceTrim += 1
            // The thread waits for the earliest deadline, and for a trim once enough were parked.
            let trimNowDue = state.parkedSinceTrim == Self.trimAfter
            guard deadline < state.earliestDeadline else { return (true, trimNowDue) }
            state.earliestDeadline = deadline
            return (true, true)
        }
        guard parked else {
            Glibc.close(copy)
            return false
        }
        if wakeThread { self.wakeThread() }
        channel.close(promise: nil)
        return true
    }

    /// Closes the sockets `runtime` parked (its drain or stop; `runtime` accepts no more parking by then).
    func closeParked(of runtime: ListenerRuntime) {
        for (descriptor, _) in self.take(of: runtime) {
            Glibc.close(descriptor)
            runtime.uncountParked()
        }
    }

    /// Gives the sockets `runtime` parked back to channels (a successor process took over: each connection
    /// gets its last request, as the others do). Returns once the channels are set up.
    func resumeParked(of runtime: ListenerRuntime) async {
        let resumed = self.take(of: runtime).map { descriptor, loop in
            runtime.resumeParked(descriptor, on: self.loops[loop])
        }
        for channel in resumed {
            _ = try? await channel.get()
        }
    }

    /// Stops the thread and closes every parked socket (the data plane's shutdown, after its drain).
    func stop() async {
        guard let remaining = self.state.withLockedValue({ state -> [Int32: Parked]? in
            guard !state.stopped else { return nil }
            state.stopped = true
            defer { state.parked = [:] }
            return state.parked
        }) else { return }
        for (descriptor, parked) in remaining {
            Glibc.close(descriptor)
            parked.runtime.uncountParked()
        }
        self.wakeThread()
        try? await self.thread.shutdownGracefully()
        Glibc.close(self.poll)
        Glibc.close(self.wake)
    }

    /// Takes `runtime`'s sockets out of the table and the epoll set: with each, the loop it was parked from.
    private func take(of runtime: ListenerRuntime) -> [(Int32, Int)] {
        self.state.withLockedValue { state in
            let taken = state.parked.filter { $0.value.runtime === runtime }
            for descriptor in taken.keys {
                state.parked[descriptor] = nil
                _ = epoll_ctl(self.poll, EPOLL_CTL_DEL, descriptor, nil)
            }
            return taken.map { ($0.key, $0.value.loop) }
        }
    }

    /// Adds `descriptor` to the epoll set: readable (a request) or the peer's close. Under the state's lock.
    private func watch(_ descriptor: Int32) -> Bool {
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | EPOLLRDHUP.rawValue
        event.data.fd = descriptor
        return epoll_ctl(self.poll, EPOLL_CTL_ADD, descriptor, &event) == 0
    }

    private func wakeThread() {
        var one: UInt64 = 1
        _ = Glibc.write(self.wake, &one, MemoryLayout<UInt64>.size)
    }

    // MARK: The thread

    private func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        var nextSweep = NIODeadline.now()
        while true {
            let timeout = self.state.withLockedValue { state -> Int32? in
                guard !state.stopped else { return nil }
                var until = max(state.earliestDeadline, nextSweep)
                if state.parkedSinceTrim >= Self.trimAfter {
                    until = min(until, state.lastTrim + Self.trimInterval)
                }
                guard until != .distantFuture else { return -1 }
                let wait = until - NIODeadline.now()
                return Int32(clamping: max(0, (wait.nanoseconds + 999_999) / 1_000_000))
            }
            guard let timeout else { return }
            let ready = events.withUnsafeMutableBufferPointer { buffer in
                epoll_wait(self.poll, buffer.baseAddress, Int32(buffer.count), timeout)
            }
            for index in 0..<Int(max(ready, 0)) {
                let descriptor = events[index].data.fd
                if descriptor == self.wake {
                    var value: UInt64 = 0
                    _ = Glibc.read(self.wake, &value, MemoryLayout<UInt64>.size)
                } else {
                    self.socketReady(descriptor)
                }
            }
            let now = NIODeadline.now()
            if now >= nextSweep, self.state.withLockedValue({ $0.earliestDeadline <= now }) {
                self.closeExpired(now: now)
                nextSweep = now + Self.sweepInterval
            }
            self.trimIfDue(now: now)
        }
    }

    /// The client sent something or closed.
    private func socketReady(_ descriptor: Int32) {
        // Nil: a drain or stop took it since the wait returned (whoever takes a socket from the table owns it).
        guard let parked = self.state.withLockedValue({ state -> Parked? in
            guard let parked = state.parked.removeValue(forKey: descriptor) else { return nil }
            _ = epoll_ctl(self.poll, EPOLL_CTL_DEL, descriptor, nil)
            return parked
        }) else { return }
        var byte: UInt8 = 0
        let peeked = recv(descriptor, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        if peeked > 0 {
            _ = parked.runtime.resumeParked(descriptor, on: self.loops[parked.loop])
        } else if peeked < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            // Nothing after all (the table's descriptor was reused by a newer socket since the event): park again.
            let again = self.state.withLockedValue { state -> Bool in
                guard !state.stopped, self.watch(descriptor) else { return false }
                state.parked[descriptor] = parked
                return true
            }
            if !again {
                Glibc.close(descriptor)
                parked.runtime.uncountParked()
            }
        } else {
            // The client closed (or reset) while idle.
            Glibc.close(descriptor)
            parked.runtime.uncountParked()
        }
    }

    private func closeExpired(now: NIODeadline) {
        let expired = self.state.withLockedValue { state -> [(Int32, ListenerRuntime)] in
            var expired: [(Int32, ListenerRuntime)] = []
            var earliest = NIODeadline.distantFuture
            for (descriptor, parked) in state.parked {
                if parked.deadline <= now {
                    expired.append((descriptor, parked.runtime))
                } else {
                    earliest = min(earliest, parked.deadline)
                }
            }
            for (descriptor, _) in expired {
                state.parked[descriptor] = nil
            }
            state.earliestDeadline = earliest
            return expired
        }
        for (descriptor, runtime) in expired {
            // Closing the only descriptor of the socket also takes it out of the epoll set.
            Glibc.close(descriptor)
            runtime.uncountParked()
        }
    }

    private func trimIfDue(now: NIODeadline) {
        let due = self.state.withLockedValue { state -> Bool in
            guard state.parkedSinceTrim >= Self.trimAfter, now - state.lastTrim >= Self.trimInterval else { return false }
            state.parkedSinceTrim = 0
            state.lastTrim = now
            return true
        }
        if due { _ = malloc_trim(0) }
    }

    // MARK: The descriptor of a channel

    /// The socket of `channel`, read from its description (NIO's `SocketChannel` says `fd=N`) and checked:
    /// the descriptor's local and peer addresses must be the channel's. Nil when either is not so.
    static func descriptor(of channel: Channel) -> Int32? {
        var value: Int32 = 0
        var digits = 0
        // "SocketChannel { BaseSocket { fd=12 }, ...": the digits after the first "fd=" (a plain scan: the
        // generic substring search cost about as much as building the description).
        let marker: (UInt8, UInt8, UInt8) = (UInt8(ascii: "f"), UInt8(ascii: "d"), UInt8(ascii: "="))
        var matched = 0
        for byte in String(describing: channel).utf8 {
            if matched < 3 {
                let expected = matched == 0 ? marker.0 : matched == 1 ? marker.1 : marker.2
                matched = byte == expected ? matched + 1 : (byte == marker.0 ? 1 : 0)
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9"), digits < 9 else { break }
            value = value * 10 + Int32(byte - UInt8(ascii: "0"))
            digits += 1
        }
        guard digits > 0, let local = channel.localAddress, let remote = channel.remoteAddress,
              Self.address(of: value, peer: false, is: local), Self.address(of: value, peer: true, is: remote) else {
            return nil
        }
        return value
    }

    private static func address(of descriptor: Int32, peer: Bool, is expected: SocketAddress) -> Bool {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                peer ? getpeername(descriptor, address, &length) : getsockname(descriptor, address, &length)
            }
        }
        guard result == 0 else { return false }
        switch expected {
        case .v4(let expected):
            guard Int32(storage.ss_family) == AF_INET else { return false }
            let actual = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in.self) }
            return actual.sin_port == expected.address.sin_port
                && actual.sin_addr.s_addr == expected.address.sin_addr.s_addr
        case .v6(let expected):
            guard Int32(storage.ss_family) == AF_INET6 else { return false }
            let actual = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in6.self) }
            var expectedAddress = expected.address
            return actual.sin6_port == expectedAddress.sin6_port
                && withUnsafeBytes(of: actual.sin6_addr) { a in
                    withUnsafeBytes(of: &expectedAddress.sin6_addr) { b in a.elementsEqual(b) }
                }
        case .unixDomainSocket:
            return false
        }
    }
}

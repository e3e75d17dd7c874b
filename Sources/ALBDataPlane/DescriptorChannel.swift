import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A connected Unix-domain `SOCK_SEQPACKET` socket that carries small messages, each with up to
/// ``maximumDescriptors`` file descriptors attached (`SCM_RIGHTS`), as HAProxy's `-x` and Envoy's hot
/// restart pass listening sockets to a new process.
///
/// SEQPACKET keeps message boundaries: a message and its descriptors arrive together or not at all, and
/// never merge with the next message. The calls block, with timeouts: the takeover runs on a thread of
/// its own, never on an event loop. What it does not do: interpret the messages (``TakeoverMessage`` in
/// the reconciler does), or keep descriptors it sends (the peer gets copies; the sender's stay open).
public final class DescriptorChannel: Sendable {
    /// The largest message either side sends or accepts.
    public static let maximumMessageBytes = 64 * 1024
    /// Descriptors per message (the kernel allows 253); longer lists go in several messages.
    public static let maximumDescriptors = 64

    private let socket: OwnedDescriptor

    init(socket: OwnedDescriptor) {
        self.socket = socket
    }

    /// Two connected ends (`socketpair`), for tests.
    public static func pair() throws -> (DescriptorChannel, DescriptorChannel) {
        var ends: [Int32] = [-1, -1]
        let type = Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        guard socketpair(AF_UNIX, type, 0, &ends) == 0 else { throw DescriptorChannelError.system("socketpair", errno) }
        return (DescriptorChannel(socket: OwnedDescriptor(adopting: ends[0])),
                DescriptorChannel(socket: OwnedDescriptor(adopting: ends[1])))
    }

    /// Connects to the listener at `path`. Nil when nothing listens there: no such file, or a socket file
    /// left by a process that is gone (`ECONNREFUSED`).
    public static func connect(path: String) throws -> DescriptorChannel? {
        let address = try Self.unixAddress(path)
        let raw = Glibc.socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard raw >= 0 else { throw DescriptorChannelError.system("socket", errno) }
        let socket = OwnedDescriptor(adopting: raw)
        while true {
            let result = address.withSockAddr { pointer, size in Glibc.connect(raw, pointer, socklen_t(size)) }
            if result == 0 { return DescriptorChannel(socket: socket) }
            switch errno {
            case EINTR: continue
            case ENOENT, ECONNREFUSED: return nil
            case let code: throw DescriptorChannelError.system("connect(\(path))", code)
            }
        }
    }

    /// Sends one message with `descriptors` attached (the peer receives new descriptors for the same open
    /// files; these stay open here).
    /// - Throws: ``DescriptorChannelError/closed`` when the peer is gone.
    public func send(_ bytes: [UInt8], descriptors: [OwnedDescriptor] = []) throws {
        guard !bytes.isEmpty, bytes.count <= Self.maximumMessageBytes else { throw DescriptorChannelError.messageSize(bytes.count) }
        guard descriptors.count <= Self.maximumDescriptors else { throw DescriptorChannelError.tooManyDescriptors(descriptors.count) }
        let raws = descriptors.compactMap { $0.withRawValue { $0 } }
        guard raws.count == descriptors.count else { throw DescriptorChannelError.system("sendmsg", EBADF) }
        let controlLength = raws.isEmpty ? 0 : Self.controlSpace(raws.count)
        let control = UnsafeMutableRawPointer.allocate(byteCount: max(controlLength, 1), alignment: MemoryLayout<cmsghdr>.alignment)
        defer { control.deallocate() }
        if controlLength > 0 {
            control.initializeMemory(as: UInt8.self, repeating: 0, count: controlLength)
            var header = cmsghdr()
            header.cmsg_len = Self.controlLength(raws.count)
            header.cmsg_level = SOL_SOCKET
            header.cmsg_type = Int32(SCM_RIGHTS)
            control.storeBytes(of: header, as: cmsghdr.self)
            for (index, raw) in raws.enumerated() {
                control.storeBytes(of: raw, toByteOffset: Self.headerSpace + index * MemoryLayout<Int32>.size, as: Int32.self)
            }
        }
        let sent: Int = try withExtendedLifetime(descriptors) {
            try bytes.withUnsafeBytes { buffer in
                var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: buffer.baseAddress), iov_len: buffer.count)
                return try withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlLength > 0 ? control : nil
                    message.msg_controllen = controlLength
                    return try self.retrying("sendmsg") { raw in sendmsg(raw, &message, Int32(MSG_NOSIGNAL)) }
                }
            }
        }
        guard sent == bytes.count else { throw DescriptorChannelError.system("sendmsg (short)", EMSGSIZE) }
    }

    /// Waits up to `timeout` for one message.
    /// - Throws: ``DescriptorChannelError/timedOut``; ``DescriptorChannelError/closed`` when the peer closed
    ///   or died; ``DescriptorChannelError/truncated`` when the message or its descriptors did not fit
    ///   (any descriptors that did arrive are closed).
    public func receive(timeout: Duration) throws -> ReceivedMessage {
        try self.waitReadable(timeout: timeout)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.maximumMessageBytes, alignment: 1)
        defer { buffer.deallocate() }
        let controlCapacity = Self.controlSpace(Self.maximumDescriptors)
        let control = UnsafeMutableRawPointer.allocate(byteCount: controlCapacity, alignment: MemoryLayout<cmsghdr>.alignment)
        defer { control.deallocate() }
        control.initializeMemory(as: UInt8.self, repeating: 0, count: controlCapacity)
        var vector = iovec(iov_base: buffer, iov_len: Self.maximumMessageBytes)
        var message = msghdr()
        let count: Int = try withUnsafeMutablePointer(to: &vector) { vectorPointer in
            message.msg_iov = vectorPointer
            message.msg_iovlen = 1
            message.msg_control = control
            message.msg_controllen = controlCapacity
            return try self.retrying("recvmsg") { raw in recvmsg(raw, &message, Int32(MSG_CMSG_CLOEXEC)) }
        }
        // Adopt whatever descriptors arrived first, so an error below closes them.
        var descriptors: [OwnedDescriptor] = []
        var offset = 0
        while offset + MemoryLayout<cmsghdr>.size <= message.msg_controllen {
            let header = control.load(fromByteOffset: offset, as: cmsghdr.self)
            guard header.cmsg_len >= MemoryLayout<cmsghdr>.size else { break }
            if header.cmsg_level == SOL_SOCKET && header.cmsg_type == Int32(SCM_RIGHTS) {
                let carried = (header.cmsg_len - Self.headerSpace) / MemoryLayout<Int32>.size
                for index in 0..<carried {
                    let raw = control.load(fromByteOffset: offset + Self.headerSpace + index * MemoryLayout<Int32>.size,
                                           as: Int32.self)
                    descriptors.append(OwnedDescriptor(adopting: raw))
                }
            }
            offset += Self.align(header.cmsg_len)
        }
        if count == 0 && descriptors.isEmpty { throw DescriptorChannelError.closed }
        if message.msg_flags & (Int32(MSG_TRUNC) | Int32(MSG_CTRUNC)) != 0 { throw DescriptorChannelError.truncated }
        return ReceivedMessage(bytes: Array(UnsafeRawBufferPointer(start: buffer, count: count)), descriptors: descriptors)
    }

    /// The process id and user id of the peer (`SO_PEERCRED`), as of when it connected.
    public var peer: (processID: Int32, userID: UInt32)? {
        self.socket.withRawValue { raw -> (Int32, UInt32)? in
            // struct ucred { pid_t pid; uid_t uid; gid_t gid; }, which Swift does not import.
            var credentials: [UInt32] = [0, 0, 0]
            var length = socklen_t(MemoryLayout<UInt32>.size * 3)
            let result = credentials.withUnsafeMutableBytes { getsockopt(raw, SOL_SOCKET, SO_PEERCRED, $0.baseAddress, &length) }
            guard result == 0 else { return nil }
            return (Int32(bitPattern: credentials[0]), credentials[1])
        } ?? nil
    }

    public func close() {
        self.socket.close()
    }

    private func waitReadable(timeout: Duration) throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            let remaining = ContinuousClock.now.duration(to: deadline)
            guard remaining > .zero else { throw DescriptorChannelError.timedOut }
            // In slices, so the descriptor's lock is never held for long.
            let milliseconds = min(200, Int32(clamping: remaining.components.seconds * 1000
                + remaining.components.attoseconds / 1_000_000_000_000_000 + 1))
            let ready: Int32? = self.socket.withRawValue { raw in
                var entry = pollfd(fd: raw, events: Int16(POLLIN), revents: 0)
                return poll(&entry, 1, milliseconds)
            }
            guard let ready else { throw DescriptorChannelError.closed }
            if ready > 0 { return }
            if ready < 0 && errno != EINTR { throw DescriptorChannelError.system("poll", errno) }
        }
    }

    private func retrying(_ call: String, _ body: (Int32) -> Int) throws -> Int {
        while true {
            guard let result = self.socket.withRawValue(body) else { throw DescriptorChannelError.closed }
            if result >= 0 { return result }
            switch errno {
            case EINTR: continue
            case EPIPE, ECONNRESET: throw DescriptorChannelError.closed
            case let code: throw DescriptorChannelError.system(call, code)
            }
        }
    }

    static func unixAddress(_ path: String) throws -> SocketAddress {
        do {
            return try SocketAddress(unixDomainSocketPath: path)
        } catch {
            throw DescriptorChannelError.invalidPath(path, "\(error)")
        }
    }

    // The CMSG_* macros do not import into Swift; these are their Linux definitions.
    static func align(_ length: Int) -> Int {
        let word = MemoryLayout<Int>.size
        return (length + word - 1) & ~(word - 1)
    }

    static var headerSpace: Int { align(MemoryLayout<cmsghdr>.size) }
    static func controlLength(_ descriptors: Int) -> Int { headerSpace + descriptors * MemoryLayout<Int32>.size }
    static func controlSpace(_ descriptors: Int) -> Int { headerSpace + align(descriptors * MemoryLayout<Int32>.size) }
}

/// One message and the descriptors that came with it (owned by the receiver now).
public struct ReceivedMessage: Sendable {
    public var bytes: [UInt8]
    public var descriptors: [OwnedDescriptor]
}

public enum DescriptorChannelError: Error, CustomStringConvertible, Equatable {
    case system(String, Int32)
    case closed
    case timedOut
    case truncated
    case messageSize(Int)
    case tooManyDescriptors(Int)
    case invalidPath(String, String)

    public var description: String {
        switch self {
        case .system(let call, let code): "\(call): \(String(cString: strerror(code))) (errno: \(code))"
        case .closed: "the other side closed the connection"
        case .timedOut: "timed out"
        case .truncated: "a message or its descriptors did not fit"
        case .messageSize(let size): "a message of \(size) bytes (1 to \(DescriptorChannel.maximumMessageBytes))"
        case .tooManyDescriptors(let count): "\(count) descriptors in one message (at most \(DescriptorChannel.maximumDescriptors))"
        case .invalidPath(let path, let reason): "\(path): \(reason)"
        }
    }
}

/// The listening end of ``DescriptorChannel``: a `SOCK_SEQPACKET` socket file, mode 0600.
///
/// ``listen(path:)`` binds beside `path` and renames over it, so a client always finds either the previous
/// listener or this one, never nothing; ``close()`` removes the file only while it is still this
/// listener's (a successor may have renamed its own over it).
public final class DescriptorChannelListener: Sendable {
    public let path: String
    private let socket: OwnedDescriptor
    private let identity: FileIdentity?

    private init(path: String, socket: OwnedDescriptor, identity: FileIdentity?) {
        self.path = path
        self.socket = socket
        self.identity = identity
    }

    /// - Throws: when `path` exists and is not a socket, or cannot be bound.
    public static func listen(path: String) throws -> DescriptorChannelListener {
        var info = stat()
        if lstat(path, &info) == 0 && (info.st_mode & S_IFMT) != S_IFSOCK {
            throw DescriptorChannelError.invalidPath(path, "exists and is not a socket")
        }
        let temporary = "\(path).\(getpid()).new"
        let address = try DescriptorChannel.unixAddress(temporary)
        let raw = Glibc.socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard raw >= 0 else { throw DescriptorChannelError.system("socket", errno) }
        let socket = OwnedDescriptor(adopting: raw)
        _ = unlink(temporary)
        let bound = address.withSockAddr { pointer, size in Glibc.bind(raw, pointer, socklen_t(size)) }
        guard bound == 0 else { throw DescriptorChannelError.system("bind(\(temporary))", errno) }
        guard chmod(temporary, 0o600) == 0, Glibc.listen(raw, 8) == 0 else {
            let code = errno
            _ = unlink(temporary)
            throw DescriptorChannelError.system("listen(\(temporary))", code)
        }
        guard rename(temporary, path) == 0 else {
            let code = errno
            _ = unlink(temporary)
            throw DescriptorChannelError.system("rename(\(temporary), \(path))", code)
        }
        return DescriptorChannelListener(path: path, socket: socket, identity: FileIdentity(path: path))
    }

    /// Waits up to `timeout` (keep it short: the descriptor's lock is held meanwhile) for a client; nil
    /// when none came.
    public func accept(timeout: Duration) throws -> DescriptorChannel? {
        let milliseconds = Int32(clamping: timeout.components.seconds * 1000
            + timeout.components.attoseconds / 1_000_000_000_000_000)
        let accepted: Int32? = try self.socket.withRawValue { raw -> Int32? in
            var entry = pollfd(fd: raw, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, milliseconds)
            if ready < 0 && errno != EINTR { throw DescriptorChannelError.system("poll", errno) }
            guard ready > 0 else { return nil }
            // accept4 is not imported (it needs _GNU_SOURCE); nothing here forks or execs meanwhile.
            let client = Glibc.accept(raw, nil, nil)
            if client < 0 {
                if errno == EINTR || errno == EAGAIN || errno == ECONNABORTED { return nil }
                throw DescriptorChannelError.system("accept", errno)
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            return client
        } ?? nil
        return accepted.map { DescriptorChannel(socket: OwnedDescriptor(adopting: $0)) }
    }

    /// Whether `path` still names this listener's socket file.
    public var holdsPath: Bool {
        self.identity != nil && FileIdentity(path: self.path) == self.identity
    }

    /// Stops listening; with `removingPath`, removes the socket file if it is still this listener's.
    public func close(removingPath: Bool = true) {
        if removingPath && self.holdsPath { _ = unlink(self.path) }
        self.socket.close()
    }
}

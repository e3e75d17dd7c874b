import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A file descriptor this process owns: it is closed exactly once, by ``close()`` or when the owner is
/// released, unless it was handed to a new owner (SwiftNIO, for a listening socket it adopts).
///
/// Descriptors that cross processes (``DescriptorChannel``) and listening sockets that the data plane
/// creates and gives to NIO pass through this type, so the raw number never outlives its owner. It does
/// not know what the descriptor is; the factory functions below say.
public final class OwnedDescriptor: Sendable, CustomStringConvertible {
    private let box: NIOLockedValueBox<Int32?>

    /// Takes ownership of `descriptor` (it must be open and owned by no one else).
    public init(adopting descriptor: Int32) {
        self.box = NIOLockedValueBox(descriptor)
    }

    /// A new descriptor for the same open file (`dup`, close-on-exec): closing either leaves the other
    /// working, and both share the file's state (a socket's accept queue, a `flock` lock).
    public convenience init(duplicating descriptor: Int32) throws {
        let copy = fcntl(descriptor, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { throw IOError(errnoCode: errno, reason: "fcntl(F_DUPFD_CLOEXEC)") }
        self.init(adopting: copy)
    }

    deinit {
        if let descriptor = self.box.withLockedValue({ $0 }) {
            _ = Glibc.close(descriptor)
        }
    }

    public var isOpen: Bool { self.box.withLockedValue { $0 != nil } }

    public var description: String {
        self.box.withLockedValue { $0.map { "descriptor \($0)" } ?? "closed descriptor" }
    }

    /// Runs `body` with the raw number while the descriptor is open (under a lock: do not block in it).
    /// Nil once it was closed or taken.
    public func withRawValue<Result>(_ body: (Int32) throws -> Result) rethrows -> Result? {
        try self.box.withLockedValue { descriptor in try descriptor.map(body) }
    }

    /// Hands the raw number to a new owner; this object no longer closes it.
    func take() -> Int32? {
        self.box.withLockedValue { descriptor in
            defer { descriptor = nil }
            return descriptor
        }
    }

    public func duplicate() throws -> OwnedDescriptor {
        guard let copy = try self.withRawValue({ try OwnedDescriptor(duplicating: $0) }) else {
            throw IOError(errnoCode: EBADF, reason: "dup of a closed descriptor")
        }
        return copy
    }

    public func close() {
        if let descriptor = self.take() {
            _ = Glibc.close(descriptor)
        }
    }

    /// The device and inode of the open file: two descriptors with the same identity refer to one file
    /// or socket (for a socket, its socket inode).
    public var identity: FileIdentity? {
        self.withRawValue { descriptor -> FileIdentity? in
            var info = stat()
            guard fstat(descriptor, &info) == 0 else { return nil }
            return FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        } ?? nil
    }

    /// The local address of a bound socket (IPv4 or IPv6), from `getsockname`.
    public var localAddress: SocketAddress? {
        self.withRawValue { descriptor -> SocketAddress? in
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let result = withUnsafeMutablePointer(to: &storage) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
            }
            guard result == 0 else { return nil }
            switch Int32(storage.ss_family) {
            case AF_INET:
                return withUnsafePointer(to: &storage) {
                    $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { SocketAddress($0.pointee) }
                }
            case AF_INET6:
                return withUnsafePointer(to: &storage) {
                    $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { SocketAddress($0.pointee) }
                }
            default:
                return nil
            }
        } ?? nil
    }

    /// Whether the descriptor is a datagram socket (`SO_TYPE`): a QUIC listener's, passed on in a takeover.
    public var isDatagramSocket: Bool {
        self.withRawValue { descriptor -> Bool in
            var value: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(descriptor, SOL_SOCKET, SO_TYPE, &value, &length) == 0 else { return false }
            return value == Int32(SOCK_DGRAM.rawValue)
        } ?? false
    }

    /// Whether the descriptor is a socket in the listening state (`SO_ACCEPTCONN`).
    public var isListeningSocket: Bool {
        self.withRawValue { descriptor -> Bool in
            var value: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(descriptor, SOL_SOCKET, SO_ACCEPTCONN, &value, &length) == 0 else { return false }
            return value != 0
        } ?? false
    }
}

/// Device and inode of an open file or a path.
public struct FileIdentity: Equatable, Hashable, Sendable {
    public var device: UInt64
    public var inode: UInt64

    public init(device: UInt64, inode: UInt64) {
        self.device = device
        self.inode = inode
    }

    /// The identity of what `path` names now (following symbolic links); nil when it does not exist.
    public init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        self.init(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }
}

extension OwnedDescriptor {
    /// A non-blocking TCP socket bound to `address` and listening with `backlog`, with `SO_REUSEADDR` as
    /// NIO's bootstrap sets it, and `TCP_NODELAY`, which Linux copies to every socket it accepts (so no
    /// connection needs a `setsockopt` of its own). Errors are NIO's `IOError` with the errno, like a
    /// bootstrap bind's.
    static func listeningTCP(on address: SocketAddress, backlog: Int32) throws -> OwnedDescriptor {
        let (descriptor, raw) = try reusableSocket(SOCK_STREAM, for: address)
        var one: Int32 = 1
        guard setsockopt(raw, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw IOError(errnoCode: errno, reason: "setsockopt(TCP_NODELAY)")
        }
        try bind(raw, to: address)
        guard Glibc.listen(raw, backlog) == 0 else { throw IOError(errnoCode: errno, reason: "listen") }
        return descriptor
    }

    /// A UDP socket bound to `address` (non-blocking, close-on-exec, `SO_REUSEADDR`), made here rather than by
    /// NIO's bootstrap for the same reason as ``listeningTCP(on:backlog:)``: a takeover passes a copy of it.
    static func boundUDP(on address: SocketAddress) throws -> OwnedDescriptor {
        let (descriptor, raw) = try reusableSocket(SOCK_DGRAM, for: address)
        try bind(raw, to: address)
        return descriptor
    }

    /// A non-blocking, close-on-exec socket of `type` for `address`'s family, with `SO_REUSEADDR`.
    private static func reusableSocket(_ type: __socket_type, for address: SocketAddress) throws -> (OwnedDescriptor, Int32) {
        let family: Int32
        switch address {
        case .v4: family = AF_INET
        case .v6: family = AF_INET6
        case .unixDomainSocket: throw IOError(errnoCode: EAFNOSUPPORT, reason: "socket")
        }
        let raw = socket(family, Int32(type.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard raw >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        let descriptor = OwnedDescriptor(adopting: raw)
        var one: Int32 = 1
        guard setsockopt(raw, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw IOError(errnoCode: errno, reason: "setsockopt(SO_REUSEADDR)")
        }
        return (descriptor, raw)
    }

    private static func bind(_ raw: Int32, to address: SocketAddress) throws {
        let bound = address.withSockAddr { pointer, size in Glibc.bind(raw, pointer, socklen_t(size)) }
        guard bound == 0 else { throw IOError(errnoCode: errno, reason: "bind") }
    }

    /// Sets the accept backlog of a listening socket again. NIO's `withBoundSocket` calls `listen` with its
    /// own default (128); this puts the listener's back.
    static func setBacklog(_ backlog: Int32, ofListening raw: Int32) {
        _ = Glibc.listen(raw, backlog)
    }
}

import CNgtcp2
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The network path of a datagram: the listener's address it arrived at and the client's address it came
/// from. ngtcp2 validates a new client path itself (migration, NAT rebinding), so every datagram carries its
/// own path and every written packet the path ngtcp2 chose for it.
///
/// Only IPv4 and IPv6 addresses are paths (``QUICConnectionError/unsupportedAddress`` otherwise): ngtcp2
/// copies an address into a `sockaddr_in6`-sized union, which a Unix socket address would overflow.
public struct QUICPath: Hashable, Sendable {
    public var local: SocketAddress
    public var remote: SocketAddress

    public init(local: SocketAddress, remote: SocketAddress) {
        self.local = local
        self.remote = remote
    }
}

/// One UDP datagram a QUIC connection or the listener's triage wants sent.
public struct QUICOutgoingDatagram: Equatable, Sendable {
    public var bytes: ByteBuffer
    /// Where to send it; `path.local` is the address to send it from (when the socket is bound to a
    /// wildcard address).
    public var path: QUICPath
    /// The ECN codepoint ngtcp2 asks for (`ngtcp2_pkt_info.ecn`); 0 (Not-ECT) unless ECN is validated.
    public var ecn: UInt8

    public init(bytes: ByteBuffer, path: QUICPath, ecn: UInt8 = 0) {
        self.bytes = bytes
        self.path = path
        self.ecn = ecn
    }
}

extension QUICPath {
    /// Calls `body` with an `ngtcp2_path` pointing at copies of both addresses, valid only during the call
    /// (ngtcp2 copies what it keeps). `nil` when either address is not IPv4 or IPv6.
    func withNgtcp2Path<Result>(_ body: (inout ngtcp2_path) -> Result) -> Result? {
        guard var localStorage = QUICSocketAddressStorage(local),
              var remoteStorage = QUICSocketAddressStorage(remote)
        else { return nil }
        let localLength = ngtcp2_socklen(localStorage.length)
        let remoteLength = ngtcp2_socklen(remoteStorage.length)
        return withUnsafeMutableBytes(of: &localStorage.storage) { localBytes in
            withUnsafeMutableBytes(of: &remoteStorage.storage) { remoteBytes in
                let local = localBytes.baseAddress?.assumingMemoryBound(to: ngtcp2_sockaddr.self)
                let remote = remoteBytes.baseAddress?.assumingMemoryBound(to: ngtcp2_sockaddr.self)
                var path = ngtcp2_path(local: ngtcp2_addr(addr: local, addrlen: localLength),
                                       remote: ngtcp2_addr(addr: remote, addrlen: remoteLength), user_data: nil)
                return body(&path)
            }
        }
    }

    /// The path ngtcp2 wrote into an `ngtcp2_path_storage`; `nil` for an address family other than IPv4/IPv6.
    init?(_ path: ngtcp2_path) {
        guard let local = SocketAddress(path.local), let remote = SocketAddress(path.remote) else { return nil }
        self.init(local: local, remote: remote)
    }
}

/// An IPv4 or IPv6 socket address copied into a `sockaddr_storage`.
struct QUICSocketAddressStorage {
    var storage = sockaddr_storage()
    var length: Int

    init?(_ address: SocketAddress) {
        switch address {
        case .v4, .v6: break
        case .unixDomainSocket: return nil
        }
        var storage = sockaddr_storage()
        let length = address.withSockAddr { pointer, length -> Int in
            guard length <= MemoryLayout<sockaddr_storage>.size else { return 0 }
            withUnsafeMutableBytes(of: &storage) { destination in
                destination.baseAddress?.copyMemory(from: pointer, byteCount: length)
            }
            return length
        }
        guard length > 0 else { return nil }
        self.storage = storage
        self.length = length
    }
}

extension SocketAddress {
    /// The NIO address of an `ngtcp2_addr` holding a `sockaddr_in` or `sockaddr_in6`.
    init?(_ address: ngtcp2_addr) {
        guard let pointer = address.addr else { return nil }
        let raw = UnsafeRawPointer(pointer)
        switch Int32(pointer.pointee.sa_family) {
        case AF_INET where Int(address.addrlen) >= MemoryLayout<sockaddr_in>.size:
            self.init(raw.loadUnaligned(as: sockaddr_in.self))
        case AF_INET6 where Int(address.addrlen) >= MemoryLayout<sockaddr_in6>.size:
            self.init(raw.loadUnaligned(as: sockaddr_in6.self))
        default:
            return nil
        }
    }
}

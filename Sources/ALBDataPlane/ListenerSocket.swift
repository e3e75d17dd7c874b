import Atomics
import NIOConcurrencyHelpers
import NIOCore

/// A listening socket and the listener instance that serves what it accepts.
///
/// The socket outlives any one instance: when a listener is replaced on the same address (a protocol
/// change, a rename, two listeners swapping ports), the socket is handed to the new instance instead of
/// being closed and bound again, so the port never refuses a connection. The instance it leaves keeps
/// its established connections and drains them.
final class ListenerSocket: Sendable {
    /// "host:port" as configured (port 0 stays 0: the real port is on the channel).
    let address: String
    /// A QUIC listener's UDP socket: it has no accept queue, and "accepting" is reading datagrams.
    let datagram: Bool
    private let owner: ManagedAtomic<ListenerRuntime>
    /// The channel, and the descriptor NIO owns for it (for copies that go to a successor process).
    private let channelBox = NIOLockedValueBox<(channel: Channel, descriptor: Int32)?>(nil)
    /// A QUIC socket's open connections (they belong to the socket's endpoint, not to an instance): the
    /// instance holding the socket, or draining it, counts them as active (``ListenerRuntime/activeConnections``).
    let quicConnections = ManagedAtomic<Int>(0)

    init(address: String, owner: ListenerRuntime, datagram: Bool = false) {
        self.address = address
        self.datagram = datagram
        self.owner = ManagedAtomic(owner)
    }

    var channel: Channel? { self.channelBox.withLockedValue { $0?.channel } }

    /// The instance serving this socket now (one atomic load): a QUIC listener's router asks per request,
    /// since a UDP socket has no accepted connections to hand to the next instance.
    var currentOwner: ListenerRuntime { self.owner.load(ordering: .acquiring) }

    func setChannel(_ channel: Channel, descriptor: Int32) {
        self.channelBox.withLockedValue { $0 = (channel, descriptor) }
    }

    /// The child channel initializer. An instance that has begun to stop refuses the connection; by
    /// then a hand-over has already pointed the socket at the next instance, so the connection is
    /// offered there (at most a few times: the owner only changes when the reconciler acts).
    func accept(_ channel: Channel) -> EventLoopFuture<Void> {
        var runtime = self.owner.load(ordering: .sequentiallyConsistent)
        for _ in 0..<4 {
            if let initialized = runtime.initializeConnection(channel) { return initialized }
            let next = self.owner.load(ordering: .sequentiallyConsistent)
            if next === runtime { break }
            runtime = next
        }
        return channel.close()
    }

    /// New connections go to `runtime` from now on.
    func handOver(to runtime: ListenerRuntime) {
        self.owner.store(runtime, ordering: .sequentiallyConsistent)
    }

    /// A new descriptor for this socket, for another process. Made on the channel's event loop while the
    /// channel is open: NIO closes the descriptor only there, so the number cannot belong to anything else.
    func duplicateDescriptor() async throws -> OwnedDescriptor {
        guard let (channel, descriptor) = self.channelBox.withLockedValue({ $0 }) else {
            throw ChannelError.ioOnClosedChannel
        }
        return try await channel.eventLoop.submit {
            guard channel.isActive else { throw ChannelError.ioOnClosedChannel }
            return try OwnedDescriptor(duplicating: descriptor)
        }.get()
    }

    /// Stops accepting without closing the socket: connections that arrive wait in the kernel's accept
    /// queue, which a successor process holding the same socket serves.
    func stopAccepting() async {
        try? await self.channel?.setOption(ChannelOptions.autoRead, value: false).get()
    }

    func startAccepting() async {
        try? await self.channel?.setOption(ChannelOptions.autoRead, value: true).get()
    }

    func close() async {
        try? await self.channel?.close()
    }
}

extension ListenerRuntime: AtomicReference {}

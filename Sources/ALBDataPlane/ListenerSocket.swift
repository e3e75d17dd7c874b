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
    private let owner: ManagedAtomic<ListenerRuntime>
    private let channelBox = NIOLockedValueBox<Channel?>(nil)

    init(address: String, owner: ListenerRuntime) {
        self.address = address
        self.owner = ManagedAtomic(owner)
    }

    var channel: Channel? { self.channelBox.withLockedValue { $0 } }

    func setChannel(_ channel: Channel) {
        self.channelBox.withLockedValue { $0 = channel }
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

    func close() async {
        try? await self.channel?.close()
    }
}

extension ListenerRuntime: AtomicReference {}

/// A listening socket (or a QUIC listener's UDP socket) on its way from one `alb` process to the next (a
/// takeover, docs/takeover.md): which listener served it, the address it was configured with, the address it
/// is bound to, whether it is UDP, and a descriptor for it.
public struct TransferableSocket: Sendable {
    /// The listener that served it in the process it came from.
    public var listener: String
    /// "host:port" as configured; port 0 stays 0.
    public var address: String
    /// "host:port" it is bound to (the real port for port 0).
    public var boundAddress: String
    /// A QUIC listener's UDP socket rather than a listening TCP socket: the two kinds share port numbers.
    public var datagram: Bool
    public var descriptor: OwnedDescriptor

    public init(listener: String, address: String, boundAddress: String, datagram: Bool = false,
                descriptor: OwnedDescriptor) {
        self.listener = listener
        self.address = address
        self.boundAddress = boundAddress
        self.datagram = datagram
        self.descriptor = descriptor
    }
}

/// Sockets inherited from a previous process, waiting for the listeners that want them: a start looks
/// here before it binds, so an address the previous process served is never bound twice.
struct InheritedSockets {
    private(set) var sockets: [TransferableSocket] = []

    init(_ sockets: [TransferableSocket] = []) {
        self.sockets = sockets
    }

    /// The socket that a listener `listener` wanting `address` ("host:port" as configured) takes: the one
    /// inherited with the same configured address and kind (a renamed listener takes its predecessor's port).
    /// For port 0 the port is the listener's own ephemeral one, so only the same listener takes it.
    mutating func claim(address: String, listener: String, datagram: Bool = false) -> TransferableSocket? {
        let ephemeral = address.hasSuffix(":0")
        guard let index = self.sockets.firstIndex(where: { socket in
            socket.address == address && socket.datagram == datagram && (!ephemeral || socket.listener == listener)
        }) else { return nil }
        return self.sockets.remove(at: index)
    }

    /// Everything not claimed.
    mutating func removeAll() -> [TransferableSocket] {
        defer { self.sockets = [] }
        return self.sockets
    }
}

import NIOCore

/// Where an idle keep-alive HTTP/1 connection's socket waits while the client sends nothing: off its
/// channel, whose objects (NIO's channel, its receive buffer and write queue, the pipeline and its handlers:
/// about 4.7 KB) are freed, until the client sends again, closes, or the idle timeout passes. Then the
/// socket gets a new channel and pipeline, as if just accepted.
///
/// nginx frees a keep-alive connection's buffers while it idles for the same reason: most of a busy
/// server's client connections are idle at any moment (docs/decisions.md, "Parked idle connections").
public protocol IdleConnectionParking: AnyObject, Sendable {
    /// How long a connection idles on its channel before it is parked: a client that sends its next request
    /// sooner never pays for the new channel.
    var parkingDelay: TimeAmount { get }

    /// Takes the socket of `channel` until the client sends again or `idleDeadline` passes, and closes the
    /// channel, which then no longer owns the socket. Called on the channel's event loop, only with nothing
    /// in flight: no request arriving, every response written. False: the connection stays as it is
    /// (its listener is draining, or bytes wait in the channel's write buffer).
    func park(_ channel: Channel, until idleDeadline: NIODeadline) -> Bool
}

import NIOCore

/// What a ``SharedDeadlineTimer`` calls back: an object that knows its own deadline.
public protocol SharedDeadlineTimerClient: AnyObject {
    /// Where the client sits in its timer's list while armed; only the timer sets it.
    var sharedTimerSlot: Int? { get set }
    /// The timer went off: a client whose deadline has passed acts on it, one whose deadline is still ahead
    /// arms again for it.
    func sharedTimerFired()
}

/// One pending timer for many clients on one event loop, such as the streams of an HTTP/2 connection.
///
/// Each stream of a connection is a new proxy handler, so a timer per handler scheduled one callback per
/// request and cancelled it when the stream ended: two passes over the event loop's timer heap (cancelling
/// searches it) for every request. Here the clients join a list and share one ``LazyDeadlineTimer``, which
/// is already pending for an earlier deadline in the common case: arming and cancelling are an append and
/// a swap-remove. When the timer fires, every armed client is called; those still short of their deadline
/// arm again, which schedules the next callback for the earliest of them.
///
/// Used on its event loop only. Clients stay in the list (strongly) until they cancel: a client cancels
/// when it goes away (a proxy handler when it leaves its pipeline), and the owner calls ``cancelAll()`` when
/// the connection is gone.
public final class SharedDeadlineTimer {
    private var timer = LazyDeadlineTimer()
    private var clients: [any SharedDeadlineTimerClient] = []

    public init() {}

    /// Whether any client is armed (for tests).
    public var armedClients: Int { self.clients.count }

    /// Makes sure `client` is called back no later than `deadline`.
    public func arm(at deadline: NIODeadline, for client: some SharedDeadlineTimerClient, on eventLoop: any EventLoop) {
        if client.sharedTimerSlot == nil {
            client.sharedTimerSlot = self.clients.count
            self.clients.append(client)
        }
        self.timer.arm(at: deadline, on: eventLoop, handler: Expiry(timer: self))
    }

    /// `client` is not called back any more (until it arms again).
    public func cancel(for client: some SharedDeadlineTimerClient) {
        guard let slot = client.sharedTimerSlot else { return }
        client.sharedTimerSlot = nil
        let last = self.clients.removeLast()
        if slot < self.clients.count {
            self.clients[slot] = last
            last.sharedTimerSlot = slot
        }
    }

    /// Forgets every client and the pending callback.
    public func cancelAll() {
        for client in self.clients {
            client.sharedTimerSlot = nil
        }
        self.clients.removeAll()
        self.timer.cancel()
    }

    private func fired() {
        self.timer.fired()
        // Clients cancel or arm again while they are called: call those armed now, each while still armed.
        let armed = self.clients
        for client in armed where client.sharedTimerSlot != nil {
            client.sharedTimerFired()
        }
    }

    // @unchecked: scheduled, called and cancelled on its owner's event loop only (LazyDeadlineTimer).
    private struct Expiry: NIOScheduledCallbackHandler, @unchecked Sendable {
        let timer: SharedDeadlineTimer

        func handleScheduledCallback(eventLoop: some EventLoop) {
            self.timer.fired()
        }
    }
}

@available(*, unavailable)
extension SharedDeadlineTimer: Sendable {}

import NIOCore

/// One pending timer per connection whose deadline can move: arming for a later deadline than the one
/// pending keeps the pending one, and the owner re-checks its real deadline when it fires (re-arming if
/// that is still ahead).
///
/// Keep-alive traffic then schedules about one callback per timeout instead of scheduling and cancelling
/// one per request. A scheduled callback rather than `scheduleTask`: no promise or closures to allocate.
/// Used on its channel's event loop only.
public struct LazyDeadlineTimer {
    private var pending: NIOScheduledCallback?
    /// When the pending callback is due (meaningful while `pending` is set).
    private var due = NIODeadline.distantFuture

    public init() {}

    /// Makes sure `handler` is called no later than `deadline`.
    public mutating func arm(
        at deadline: NIODeadline,
        on eventLoop: any EventLoop,
        handler: some NIOScheduledCallbackHandler
    ) {
        if self.pending != nil && self.due <= deadline { return }
        self.pending?.cancel()
        self.due = deadline
        self.pending = try? eventLoop.assumeIsolated().scheduleCallback(at: deadline, handler: handler)
    }

    /// The owner calls this first when the callback runs.
    public mutating func fired() {
        self.pending = nil
    }

    public mutating func cancel() {
        self.pending?.cancel()
        self.pending = nil
    }
}

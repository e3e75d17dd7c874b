import NIOCore

/// One pending timer per connection whose deadline can move: arming for a later deadline than the one
/// pending keeps the pending one, and the owner re-checks its real deadline when it fires (re-arming if
/// that is still ahead).
///
/// Keep-alive traffic then schedules about one callback per timeout instead of scheduling and cancelling
/// one per request. A scheduled callback rather than `scheduleTask`: no promise or closures to allocate.
/// Used on its channel's event loop only.
///
/// Its handlers are small structs marked `@unchecked Sendable`: the timer schedules them from their owner's
/// event loop (checked when armed), and the loop calls and cancels them there. NIO's isolated
/// `scheduleCallback` would take them as they are, but it wraps each in a generic struct whose metadata the
/// runtime looks up for each handler type at every scheduling and cancellation: about 5,300 instructions a
/// fresh HTTP/1 connection (callgrind, docs/benchmarks.md).
public struct LazyDeadlineTimer {
    private var pending: NIOScheduledCallback?
    /// When the pending callback is due (meaningful while `pending` is set).
    private var due = NIODeadline.distantFuture

    public init() {}

    /// Makes sure `handler` is called no later than `deadline`.
    @inline(__always)
    public mutating func arm(
        at deadline: NIODeadline,
        on eventLoop: any EventLoop,
        handler: some NIOScheduledCallbackHandler & Sendable
    ) {
        // The usual case on a busy connection, kept inline: a callback is due before this deadline anyway.
        if self.pending != nil && self.due <= deadline { return }
        self.schedule(at: deadline, on: eventLoop, handler: handler)
    }

    @inline(never)
    private mutating func schedule(at deadline: NIODeadline, on eventLoop: any EventLoop,
                                   handler: some NIOScheduledCallbackHandler & Sendable) {
        self.pending?.cancel()
        self.due = deadline
        eventLoop.preconditionInEventLoop()
        self.pending = try? eventLoop.scheduleCallback(at: deadline, handler: handler)
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

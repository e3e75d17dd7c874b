/// A token bucket over ngtcp2's clock (nanoseconds, `NIODeadline.uptimeNanoseconds`): up to `burst` events
/// at once, then `ratePerSecond` on average. A value type fed the time by its owner, so tests drive it with a
/// manual clock. It limits what a listener sends unasked (stateless resets): a flood of datagrams for unknown
/// connections must not turn the listener into a reflector.
///
/// Credit is kept in token-nanoseconds (a token is 10^9 of them) so that refills are exact integers.
public struct QUICTokenBucket: Sendable {
    public let ratePerSecond: Int
    public let burst: Int
    private static let unit: UInt64 = 1_000_000_000
    private var credit: UInt64
    private var lastRefill: UInt64?

    public init(ratePerSecond: Int, burst: Int) {
        self.ratePerSecond = max(0, ratePerSecond)
        self.burst = max(0, burst)
        self.credit = UInt64(self.burst) &* Self.unit
    }

    /// Takes one token at `now`; false when the bucket is empty (the event should not happen). A clock that
    /// goes backwards adds nothing.
    public mutating func take(now: UInt64) -> Bool {
        let capacity = UInt64(burst) &* Self.unit
        if let lastRefill {
            if now > lastRefill {
                let (added, overflow) = (now - lastRefill).multipliedReportingOverflow(by: UInt64(ratePerSecond))
                credit = overflow ? capacity : min(capacity, credit &+ min(added, capacity))
                self.lastRefill = now
            }
        } else {
            lastRefill = now
        }
        guard credit >= Self.unit else { return false }
        credit -= Self.unit
        return true
    }
}

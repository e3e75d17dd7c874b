import Foundation

/// The lifecycle of one listener as an explicit state machine.
///
/// It is a value type that performs no I/O: the reconciler asks it what to do (`plan`), performs the
/// returned action on the data plane, and reports the outcome (`succeeded` / `failed`). Time is passed in
/// as plain instants so tests drive it with a manual clock instead of sleeping.
///
/// ```
///            start            bound
///  Stopped ─────────▶ Configuring ─────▶ Running
///     ▲                 │    ▲              │
///     │    stopped      │    │ retry        │ stop
///     └──── Configuring ◀┘   └── Failed ◀───┘ (bind error → Failed)
/// ```
public struct ListenerLifecycle: Sendable, Equatable {
    public enum Phase: String, Sendable, Codable, Equatable {
        case configuring = "Configuring", running = "Running", stopped = "Stopped", failed = "Failed"
    }

    /// Why a listener could not reach `Running`: the reason of its `Failed` transition and of its
    /// status conditions.
    public enum FailureReason: String, Sendable, Equatable {
        /// The socket could not be bound (a port held by another process): retried with backoff.
        case bindFailed = "BindFailed"
        /// The protocol validates but has no data plane in this release.
        case protocolNotServed = "ProtocolNotServed"
        /// A LoadBalancer, ServerGroup or Certificate it needs is not available.
        case missingReference = "MissingReference"
        /// A certificate or key it needs cannot be used.
        case certificateInvalid = "CertificateInvalid"
        case invalidSpec = "InvalidSpec"
    }

    /// What the listener is converging towards while `Configuring`.
    public enum Target: String, Sendable, Equatable { case running, stopped }

    public enum State: Sendable, Equatable {
        case stopped
        case configuring(Target)
        case running
        /// Could not reach `Running`; `attempts` failures so far, next try not before `retryAt`.
        case failed(reason: FailureReason, message: String, attempts: Int, retryAt: Date)

        public var phase: Phase {
            switch self {
            case .stopped: return .stopped
            case .configuring: return .configuring
            case .running: return .running
            case .failed: return .failed
            }
        }
    }

    /// What the owner must do next.
    public enum Action: Sendable, Equatable {
        case none
        case start
        case stop
        /// Nothing to do before `at`; the owner should schedule a pass then.
        case waitUntil(Date)
    }

    public struct Transition: Sendable, Equatable {
        public var from: Phase
        public var to: Phase
        public var at: Date
        public var reason: String
        public init(from: Phase, to: Phase, at: Date, reason: String) {
            self.from = from; self.to = to; self.at = at; self.reason = reason
        }
    }

    /// Backoff for bind failures: 1 s, 2 s, 4 s ... capped at `maximumBackoff`.
    public static let initialBackoff: TimeInterval = 1
    public static let maximumBackoff: TimeInterval = 30
    public static let transitionHistory = 20

    public private(set) var state: State
    public private(set) var transitions: [Transition]

    public init(state: State = .stopped, transitions: [Transition] = []) {
        self.state = state
        self.transitions = transitions
    }

    /// Decide the next action to converge on `desired`. Entering `Configuring` is recorded here.
    public mutating func plan(desired: Target, now: Date) -> Action {
        switch (state, desired) {
        case (.running, .running), (.stopped, .stopped):
            return .none
        case (.configuring(let target), _):
            // A pass that finds us mid-way re-issues the pending operation; newer desires wait for it.
            return target == .running ? .start : .stop
        case (.stopped, .running):
            move(to: .configuring(.running), at: now, reason: "Starting")
            return .start
        case (.running, .stopped):
            move(to: .configuring(.stopped), at: now, reason: "Stopping")
            return .stop
        case (.failed, .stopped):
            move(to: .configuring(.stopped), at: now, reason: "Stopping")
            return .stop
        case (.failed(_, _, _, let retryAt), .running):
            guard now >= retryAt else { return .waitUntil(retryAt) }
            move(to: .configuring(.running), at: now, reason: "Retrying")
            return .start
        }
    }

    /// The action returned by `plan` succeeded.
    public mutating func succeeded(now: Date) {
        guard case .configuring(let target) = state else { return }
        switch target {
        case .running: move(to: .running, at: now, reason: "Listening")
        case .stopped: move(to: .stopped, at: now, reason: "Stopped")
        }
    }

    /// The start failed: back off and retry (a port may be freed, a reference may appear).
    public mutating func failed(_ reason: FailureReason, message: String, now: Date) {
        consecutiveFailures += 1
        let delay = min(Self.initialBackoff * pow(2, Double(consecutiveFailures - 1)), Self.maximumBackoff)
        move(to: .failed(reason: reason, message: message, attempts: consecutiveFailures,
                         retryAt: now.addingTimeInterval(delay)),
             at: now, reason: reason.rawValue)
    }

    /// A listener that stopped serving without being asked (e.g. replaced): treat as stopped.
    public mutating func reset(now: Date, reason: String) {
        move(to: .stopped, at: now, reason: reason)
    }

    /// A newer generation supersedes a pending retry: it is tried at once and the backoff starts over.
    public mutating func newGeneration() {
        consecutiveFailures = 0
        if case .failed(let reason, let message, _, _) = state {
            state = .failed(reason: reason, message: message, attempts: 0, retryAt: .distantPast)
        }
    }

    /// Failed starts since the listener last ran (or since a newer generation): the backoff exponent.
    private var consecutiveFailures = 0

    private mutating func move(to next: State, at now: Date, reason: String) {
        let from = state.phase
        if next == .running { consecutiveFailures = 0 }
        state = next
        if from != next.phase {
            transitions.append(Transition(from: from, to: next.phase, at: now, reason: reason))
            if transitions.count > Self.transitionHistory {
                transitions.removeFirst(transitions.count - Self.transitionHistory)
            }
        }
    }
}

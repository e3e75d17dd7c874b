import ALBReconciler
import Foundation
import XCTest

final class ListenerLifecycleTests: XCTestCase {
    /// A manual clock: tests move time by hand instead of sleeping.
    private var now = Date(timeIntervalSince1970: 1_800_000_000)
    private func advance(_ seconds: TimeInterval) { now = now.addingTimeInterval(seconds) }

    func testStartPassesThroughConfiguring() {
        var lifecycle = ListenerLifecycle()
        XCTAssertEqual(lifecycle.plan(desired: .running, now: now), .start)
        XCTAssertEqual(lifecycle.state, .configuring(.running))
        lifecycle.succeeded(now: now)
        XCTAssertEqual(lifecycle.state, .running)
        XCTAssertEqual(lifecycle.transitions.map { [$0.from, $0.to] }, [[.stopped, .configuring], [.configuring, .running]])
        XCTAssertEqual(lifecycle.plan(desired: .running, now: now), .none)
    }

    func testAFailureKeepsItsTypedReasonOnTheTransition() {
        var lifecycle = ListenerLifecycle()
        _ = lifecycle.plan(desired: .running, now: now)
        lifecycle.failed(.protocolNotServed, message: "HTTPS listeners are not served", now: now)
        XCTAssertEqual(lifecycle.transitions.last?.reason, "ProtocolNotServed")
        XCTAssertEqual(lifecycle.state, .failed(reason: .protocolNotServed, message: "HTTPS listeners are not served",
                                                attempts: 1, retryAt: now.addingTimeInterval(1)))
    }

    func testStopPassesThroughConfiguring() {
        var lifecycle = ListenerLifecycle(state: .running)
        XCTAssertEqual(lifecycle.plan(desired: .stopped, now: now), .stop)
        XCTAssertEqual(lifecycle.state.phase, .configuring)
        lifecycle.succeeded(now: now)
        XCTAssertEqual(lifecycle.state, .stopped)
        XCTAssertEqual(lifecycle.transitions.last?.to, .stopped)
    }

    func testChangeArrivingWhileConfiguringWaitsForThePendingOperation() {
        var lifecycle = ListenerLifecycle()
        XCTAssertEqual(lifecycle.plan(desired: .running, now: now), .start)
        // A stop requested mid-way re-issues the start first; the stop comes on the next plan.
        XCTAssertEqual(lifecycle.plan(desired: .stopped, now: now), .start)
        lifecycle.succeeded(now: now)
        XCTAssertEqual(lifecycle.plan(desired: .stopped, now: now), .stop)
    }

    func testBindFailureBacksOffExponentiallyCappedNearThirtySeconds() {
        var lifecycle = ListenerLifecycle()
        var delays: [TimeInterval] = []
        for _ in 0..<8 {
            guard lifecycle.plan(desired: .running, now: now) == .start else { return XCTFail("expected a start") }
            lifecycle.failed(.bindFailed, message: "Address already in use (errno: 98)", now: now)
            guard case .failed(_, _, _, let retryAt) = lifecycle.state else { return XCTFail("expected failed") }
            delays.append(retryAt.timeIntervalSince(now))
            XCTAssertEqual(lifecycle.plan(desired: .running, now: now), .waitUntil(retryAt))
            now = retryAt
        }
        XCTAssertEqual(delays, [1, 2, 4, 8, 16, 30, 30, 30])
    }

    func testNewGenerationRetriesAtOnce() {
        var lifecycle = ListenerLifecycle()
        _ = lifecycle.plan(desired: .running, now: now)
        lifecycle.failed(.bindFailed, message: "taken", now: now)
        _ = lifecycle.plan(desired: .running, now: now)
        lifecycle.failed(.bindFailed, message: "taken", now: now)
        advance(0.5)
        lifecycle.newGeneration()
        XCTAssertEqual(lifecycle.plan(desired: .running, now: now), .start)
        lifecycle.failed(.bindFailed, message: "taken", now: now)
        guard case .failed(_, _, _, let retryAt) = lifecycle.state else { return XCTFail("expected failed") }
        XCTAssertEqual(retryAt.timeIntervalSince(now), 1, "backoff starts over for a new generation")
    }

    func testTransitionHistoryKeepsTheLastTwenty() {
        var lifecycle = ListenerLifecycle()
        for _ in 0..<15 {
            _ = lifecycle.plan(desired: .running, now: now); lifecycle.succeeded(now: now)
            _ = lifecycle.plan(desired: .stopped, now: now); lifecycle.succeeded(now: now)
        }
        XCTAssertEqual(lifecycle.transitions.count, 20)
        XCTAssertEqual(lifecycle.transitions.last?.to, .stopped)
    }
}

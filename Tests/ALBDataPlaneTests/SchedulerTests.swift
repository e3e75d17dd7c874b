import NIOCore
import XCTest

@testable import ALBDataPlane

final class SchedulerTests: XCTestCase {
    private func clientIPs(_ count: Int) -> [String] {
        (0..<count).map { "10.\($0 >> 16 & 255).\($0 >> 8 & 255).\($0 & 255)" }
    }

    private func seeds(_ addresses: [String], weight: Int = 100) -> [(seed: UInt64, weight: Int)] {
        addresses.map { (seed: SourceIPHash.seed(of: $0), weight: weight) }
    }

    func testSourceIPHashMovesAboutAFifthOfClientsWhenAFifthServerIsAdded() throws {
        let four = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003", "127.0.0.1:9004"]
        let five = four + ["127.0.0.1:9005"]
        var moved = 0
        for ip in clientIPs(10_000) {
            let before = try XCTUnwrap(SourceIPHash.pick(key: ip, servers: seeds(four)))
            let after = try XCTUnwrap(SourceIPHash.pick(key: ip, servers: seeds(five)))
            if before != after {
                moved += 1
                XCTAssertEqual(after, 4, "a client that moves, moves to the new server")
            }
        }
        XCTAssertEqual(Double(moved) / 10_000, 0.2, accuracy: 0.03)
    }

    func testSourceIPHashSplitsByWeightAndIgnoresOrderAndWeightZero() throws {
        let servers = [(seed: SourceIPHash.seed(of: "a:1"), weight: 100), (seed: SourceIPHash.seed(of: "b:1"), weight: 300),
                       (seed: SourceIPHash.seed(of: "c:1"), weight: 0)]
        var counts = [0, 0, 0]
        for ip in clientIPs(10_000) {
            let index = try XCTUnwrap(SourceIPHash.pick(key: ip, servers: servers))
            counts[index] += 1
            let reversed = try XCTUnwrap(SourceIPHash.pick(key: ip, servers: servers.reversed()))
            XCTAssertEqual(2 - reversed, index, "the same server whatever the order")
        }
        XCTAssertEqual(counts[2], 0)
        XCTAssertEqual(Double(counts[1]) / 10_000, 0.75, accuracy: 0.03)
        XCTAssertNil(SourceIPHash.pick(key: "10.0.0.1", servers: [(seed: 1, weight: 0)]))
    }

    func testLeastRequestsComparesPerUnitOfWeightAndRotatesTies() {
        XCTAssertEqual(LeastRequests.pick(active: [3, 1, 2], weights: [100, 100, 100], start: 0), 1)
        // 4 / 200 is less than 3 / 100.
        XCTAssertEqual(LeastRequests.pick(active: [3, 4], weights: [100, 200], start: 0), 1)
        XCTAssertEqual(LeastRequests.pick(active: [0, 0, 5], weights: [0, 100, 100], start: 0), 1, "weight 0 never")
        let ties = (0..<6).compactMap { LeastRequests.pick(active: [0, 0, 0], weights: [1, 1, 1], start: $0) }
        XCTAssertEqual(ties, [0, 1, 2, 0, 1, 2])
        XCTAssertNil(LeastRequests.pick(active: [0], weights: [0], start: 0))
    }

    /// Two equal servers, one answering in 10 ticks and one in 1, a request every tick: least requests
    /// sends the slow one only what it can hold, round robin half of everything.
    func testWeightedLeastRequestsFavoursTheFasterServerUnderSkewedLatency() throws {
        let slow = BackendServer(host: "127.0.0.1", port: 9001), fast = BackendServer(host: "127.0.0.1", port: 9002)
        for (scheduling, expectedSlowShare) in [(Scheduling.weightedLeastRequests, 0.0...0.2),
                                                (.weightedRoundRobin, 0.45...0.55)] {
            let balancer = Balancer([BackendGroup(name: "g", servers: [slow, fast], scheduling: scheduling)])
            var inFlight: [(done: Int, server: BalancedServer)] = []
            var toSlow = 0
            for tick in 0..<1_000 {
                for finished in inFlight where finished.done == tick { finished.server.requestFinished() }
                inFlight.removeAll { $0.done <= tick }
                let server = try XCTUnwrap(balancer.pickBalanced(clientIP: ""))
                let isSlow = server.server == slow
                if isSlow { toSlow += 1 }
                inFlight.append((done: tick + (isSlow ? 10 : 1), server: server))
            }
            XCTAssertTrue(expectedSlowShare.contains(Double(toSlow) / 1_000), "\(scheduling): \(toSlow) of 1000 to the slow server")
        }
    }

    func testAWlcPickCountsUntilItsRequestFinishes() throws {
        let group = GroupScheduler(BackendGroup(name: "g", servers: [BackendServer(host: "h", port: 1)],
                                                scheduling: .weightedLeastRequests))
        let first = try XCTUnwrap(group.pick(clientIP: ""))
        _ = try XCTUnwrap(group.pick(clientIP: ""))
        XCTAssertEqual(first.requestsInFlight, 2)
        first.requestFinished()
        XCTAssertEqual(first.requestsInFlight, 1)
    }

    func testARetryPicksAnotherServerWhateverTheScheduler() throws {
        let a = BackendServer(host: "127.0.0.1", port: 9001), b = BackendServer(host: "127.0.0.1", port: 9002)
        for scheduling in [Scheduling.weightedRoundRobin, .weightedLeastRequests, .sourceIPHash] {
            let balancer = Balancer([BackendGroup(name: "g", servers: [a, b], scheduling: scheduling)])
            for client in 0..<20 {
                let picked = try XCTUnwrap(balancer.pickBalanced(clientIP: "10.0.0.\(client)", excluding: a))
                XCTAssertEqual(picked.server, b, "\(scheduling)")
                picked.requestFinished()
            }
            let alone = Balancer([BackendGroup(name: "g", servers: [a], scheduling: scheduling)])
            XCTAssertNil(alone.pickBalanced(clientIP: "10.0.0.1", excluding: a), "no other server: no retry")
        }
        // Another group takes the retry when the failed server's group has no other.
        let twoGroups = Balancer([BackendGroup(name: "one", servers: [a]), BackendGroup(name: "two", servers: [b])])
        for _ in 0..<4 {
            XCTAssertEqual(try XCTUnwrap(twoGroups.pickBalanced(clientIP: "", excluding: a)).server, b)
        }
    }
}

extension SchedulerTests {
    /// nginx's `max_fails=1 fail_timeout=10s`: a server whose connect failed is skipped by every scheduler's picks
    /// for ten seconds (so the requests after it do not each wait for its connect timeout), then picked again; with
    /// every server marked the marks are ignored rather than answering 503.
    func testAServerWhoseConnectFailedIsOutOfRotationForTenSeconds() throws {
        let dead = BackendServer(host: "127.0.0.1", port: 9001), live = BackendServer(host: "127.0.0.1", port: 9002)
        for scheduling in [Scheduling.weightedRoundRobin, .weightedLeastRequests, .sourceIPHash] {
            let group = GroupScheduler(BackendGroup(name: "g", servers: [dead, live], scheduling: scheduling))
            func picks(_ count: Int) -> [BackendServer] {
                (0..<count).compactMap { index -> BackendServer? in
                    let picked = group.pick(clientIP: "10.0.0.\(index)")
                    picked?.requestFinished()
                    return picked?.server
                }
            }
            XCTAssertTrue(picks(20).contains(dead), "\(scheduling)")
            let marked = try XCTUnwrap(group.pick(clientIP: "10.0.0.1", excluding: live))
            marked.requestFinished()
            XCTAssertEqual(marked.server, dead)
            marked.connectFailed(now: NIODeadline.now())
            XCTAssertEqual(Set(picks(20)), [live], "\(scheduling): marked down")
            let onlyLeft = group.pick(clientIP: "10.0.0.1", excluding: live)
            onlyLeft?.requestFinished()
            XCTAssertEqual(onlyLeft?.server, dead, "\(scheduling): the only server left is tried despite its mark")
            marked.connectFailed(now: NIODeadline.now() - TimeAmount.seconds(11))
            XCTAssertTrue(picks(20).contains(dead), "\(scheduling): back after ten seconds")
        }
    }
}

import ALBHTTP
import NIOCore
import NIOEmbedded
import XCTest

/// A client with a deadline of its own, as a proxy handler has for its exchange.
private final class DeadlineClient: SharedDeadlineTimerClient {
    var sharedTimerSlot: Int?
    var deadline: NIODeadline
    var expired = 0
    let timer: SharedDeadlineTimer
    let eventLoop: EmbeddedEventLoop

    init(deadline: NIODeadline, timer: SharedDeadlineTimer, eventLoop: EmbeddedEventLoop) {
        self.deadline = deadline
        self.timer = timer
        self.eventLoop = eventLoop
    }

    func arm() {
        self.timer.arm(at: self.deadline, for: self, on: self.eventLoop)
    }

    func sharedTimerFired() {
        if self.deadline <= self.eventLoop.now {
            self.expired += 1
            self.timer.cancel(for: self)
        } else {
            self.arm()
        }
    }
}

final class SharedDeadlineTimerTests: XCTestCase {
    func testEachClientIsCalledAtItsOwnDeadline() {
        let loop = EmbeddedEventLoop()
        let timer = SharedDeadlineTimer()
        let start = loop.now
        let late = DeadlineClient(deadline: start + .seconds(10), timer: timer, eventLoop: loop)
        let early = DeadlineClient(deadline: start + .seconds(5), timer: timer, eventLoop: loop)
        late.arm()
        early.arm()
        XCTAssertEqual(timer.armedClients, 2)
        loop.advanceTime(by: .seconds(4))
        XCTAssertEqual([early.expired, late.expired], [0, 0])
        loop.advanceTime(by: .seconds(1))
        XCTAssertEqual([early.expired, late.expired], [1, 0], "the earlier deadline, armed second, fires first")
        loop.advanceTime(by: .seconds(4))
        XCTAssertEqual(late.expired, 0)
        loop.advanceTime(by: .seconds(1))
        XCTAssertEqual([early.expired, late.expired], [1, 1], "the later one re-armed when the timer first fired")
        XCTAssertEqual(timer.armedClients, 0)
    }

    func testACancelledClientIsNotCalledAndTheOthersKeepTheirPlaces() {
        let loop = EmbeddedEventLoop()
        let timer = SharedDeadlineTimer()
        let clients = (1...4).map {
            DeadlineClient(deadline: loop.now + .seconds(Int64($0)), timer: timer, eventLoop: loop)
        }
        clients.forEach { $0.arm() }
        timer.cancel(for: clients[0])
        timer.cancel(for: clients[0])  // twice is harmless
        XCTAssertNil(clients[0].sharedTimerSlot)
        XCTAssertEqual(timer.armedClients, 3)
        loop.advanceTime(by: .seconds(10))
        XCTAssertEqual(clients.map(\.expired), [0, 1, 1, 1])
    }

    func testArmingTwiceKeepsOneEntry() {
        let loop = EmbeddedEventLoop()
        let timer = SharedDeadlineTimer()
        let client = DeadlineClient(deadline: loop.now + .seconds(5), timer: timer, eventLoop: loop)
        client.arm()
        client.deadline = loop.now + .seconds(3)
        client.arm()
        XCTAssertEqual(timer.armedClients, 1)
        loop.advanceTime(by: .seconds(3))
        XCTAssertEqual(client.expired, 1, "an earlier deadline moves the pending callback forward")
    }

    func testCancelAllForgetsEveryClient() {
        let loop = EmbeddedEventLoop()
        let timer = SharedDeadlineTimer()
        let client = DeadlineClient(deadline: loop.now + .seconds(1), timer: timer, eventLoop: loop)
        client.arm()
        timer.cancelAll()
        XCTAssertNil(client.sharedTimerSlot)
        loop.advanceTime(by: .seconds(5))
        XCTAssertEqual(client.expired, 0)
    }
}

import NIOHTTP2
import XCTest

@testable import ALBDataPlane

final class ExactEventTests: XCTestCase {
    private final class Payload {
        let text: String
        init(_ text: String) { self.text = text }
    }

    private struct Carrying {
        var payload: Payload
        var name: String
        var number: Int
    }

    func testAMatchComesOutWhole() throws {
        let event: Any = StreamClosedEvent(streamID: 7, reason: .cancel)
        let closed = try XCTUnwrap(exactly(event, StreamClosedEvent.self))
        XCTAssertEqual(closed.streamID, 7)
        XCTAssertEqual(closed.reason, .cancel)
        XCTAssertNil(exactly(event, NIOHTTP2StreamCreatedEvent.self))
        XCTAssertNil(exactly(event, Int.self))
    }

    /// References inside the value are shared as a copy shares them: alive while either holds them, released when
    /// both are gone (a reinterpretation that got the counts wrong would crash or leak here).
    func testAMatchHoldingReferencesIsACopy() throws {
        weak var watched: Payload?
        do {
            let payload = Payload("a field value longer than fifteen bytes")
            watched = payload
            var event: Any? = Carrying(payload: payload, name: "another string that needs storage", number: 42)
            let copy = try XCTUnwrap(exactly(try XCTUnwrap(event), Carrying.self))
            event = nil
            XCTAssertEqual(copy.payload.text, "a field value longer than fifteen bytes")
            XCTAssertEqual(copy.name, "another string that needs storage")
            XCTAssertEqual(copy.number, 42)
            XCTAssertNil(event)
        }
        XCTAssertNil(watched, "released once both were gone")
    }

    func testAnOptionalOrExistentialIsNotItsWrappedType() {
        let wrapped: Any = Optional(StreamClosedEvent(streamID: 1, reason: nil)) as Any
        XCTAssertNil(exactly(wrapped, StreamClosedEvent.self))
    }
}

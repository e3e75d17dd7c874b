import NIOHTTP1
import XCTest

@testable import ALBDataPlane

final class StickySessionTests: XCTestCase {
    private let a = BackendServer(host: "127.0.0.1", port: 9001), b = BackendServer(host: "127.0.0.1", port: 9002)

    func testTheCookieValueIsOpaqueStableAndPerGroup() {
        let value = StickyCookie.value(group: "pool", server: a)
        XCTAssertEqual(value.count, 16)
        XCTAssertFalse(value.contains("127") || value.contains("9001"), "the value does not show the address")
        XCTAssertEqual(value, StickyCookie.value(group: "pool", server: a))
        XCTAssertNotEqual(value, StickyCookie.value(group: "pool", server: b))
        XCTAssertNotEqual(value, StickyCookie.value(group: "other", server: a))
        XCTAssertEqual(StickyCookie.setCookie(value: value, maxAge: 60), "ALB_STICKY=\(value); Max-Age=60; Path=/; HttpOnly")
    }

    func testTheValueIsFoundAmongOtherCookies() {
        XCTAssertEqual(StickyCookie.value(in: ["Cookie": "a=1; ALB_STICKY=abc; b=2"]), "abc")
        XCTAssertEqual(StickyCookie.value(in: ["cookie": "a=1", "COOKIE": "ALB_STICKY=xyz"]), "xyz")
        XCTAssertNil(StickyCookie.value(in: ["Cookie": "XALB_STICKY=abc; ALB_STICKYX=1"]))
        XCTAssertNil(StickyCookie.value(in: ["Set-Cookie": "ALB_STICKY=abc"]))
    }

    func testACookieNamingAUsableServerWinsOverTheScheduler() throws {
        let balancer = Balancer([BackendGroup(name: "pool", servers: [a, b], stickyCookieTimeout: 60)])
        let valueOfB = StickyCookie.value(group: "pool", server: b)
        for _ in 0..<6 {
            XCTAssertEqual(try XCTUnwrap(balancer.pickBalanced(clientIP: "", stickyValue: valueOfB[...])).server, b)
        }
        // An unknown value, and a retry that must avoid the server the cookie names, fall back to the scheduler.
        let unknown = Set((0..<4).compactMap { _ in balancer.pickBalanced(clientIP: "", stickyValue: "0000")?.server })
        XCTAssertEqual(unknown, [a, b])
        XCTAssertEqual(try XCTUnwrap(balancer.pickBalanced(clientIP: "", excluding: b, stickyValue: valueOfB[...])).server, a)
        // A group without sticky sessions ignores cookies.
        let plain = Balancer([BackendGroup(name: "pool", servers: [a, b])])
        XCTAssertFalse(plain.hasStickyGroups)
        XCTAssertEqual(Set((0..<4).compactMap { _ in plain.pickBalanced(clientIP: "", stickyValue: valueOfB[...])?.server }),
                       [a, b])
    }
}

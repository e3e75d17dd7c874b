import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import XCTest

@testable import ALBDataPlane

/// Two data planes in one process standing for the old and the new `alb`: the sockets one exports, the
/// other serves without binding, and what the hand-off does to connections on both sides.
final class TakeoverDataPlaneTests: DataPlaneTestCase {
    private func config(_ name: String, backend: TestBackend, port: Int = 0) -> ListenerConfig {
        ListenerConfig(name: name, loadBalancerName: "lb", bindHost: "127.0.0.1", port: port,
                       idleTimeout: .seconds(30), requestTimeout: .seconds(30),
                       groups: [BackendGroup(name: "g", servers: [BackendServer(host: "127.0.0.1", port: backend.port)])])
    }

    func testTheNewPlaneServesTheExportedSocketAndTheOldOneFinishesItsExchanges() async throws {
        let a = try await backend("a")
        let b = try await backend("b")
        let old = try plane(drainTimeout: .seconds(10))
        let address = try await old.start(config("web", backend: a))
        let busy = try await client(address)
        let idle = try await client(address)
        _ = try await idle.request(.GET, "/")
        async let slow = busy.request(.GET, "/slow")
        try await Task.sleep(nanoseconds: 200_000_000)

        let exported = await old.exportListeningSockets()
        XCTAssertEqual(exported.map(\.listener), ["web"])
        XCTAssertEqual(exported.map(\.address), ["127.0.0.1:0"])
        XCTAssertEqual(exported.map(\.boundAddress), [address])

        let new = try plane(drainTimeout: .seconds(10))
        new.holdAccepting()
        new.inherit(exported)
        // Port 0 as configured: the same listener takes its own ephemeral port back, nothing is bound.
        let adopted = try await new.start(config("web", backend: b))
        XCTAssertEqual(adopted, address)
        XCTAssertTrue(new.releaseUnclaimedInheritedSockets().isEmpty)
        await old.stopAccepting()
        await new.startAccepting()
        async let drained: Void = old.drainAfterHandOff(lastRequestWindow: .seconds(2))
        // The gates go onto the connections on their own event loops; give that a moment.
        try await Task.sleep(nanoseconds: 300_000_000)

        // The old plane's idle keep-alive connection gets one more request (within the window), answered
        // there with `close`.
        let last = try await idle.request(.GET, "/")
        XCTAssertEqual(last.body, "a")
        XCTAssertEqual(last.headers["connection"], ["close"])
        let closed = await waitForClose(idle.channel, timeout: .seconds(2))
        XCTAssertTrue(closed)
        // New connections reach the new plane.
        let fresh = try await client(address)
        let answer = try await fresh.request(.GET, "/")
        XCTAssertEqual(answer.body, "b")
        // The old plane's in-flight exchange finishes and says the connection closes.
        let response = try await slow
        XCTAssertEqual(response.body, "slow")
        XCTAssertEqual(response.headers["connection"], ["close"])
        await drained
        XCTAssertEqual(old.listenerKeys, [])
        // The old plane closed its copy; the socket lives on in the new one.
        let again = try await client(address)
        let after = try await again.request(.GET, "/")
        XCTAssertEqual(after.body, "b")
    }

    func testConnectionsQueuedWhileNobodyAcceptsAreServedByTheNewPlane() async throws {
        let a = try await backend("a")
        let old = try plane(drainTimeout: .seconds(10))
        let address = try await old.start(config("web", backend: a))
        let exported = await old.exportListeningSockets()
        await old.stopAccepting()
        // Nobody accepts now: these wait in the kernel's queue, and survive the old plane closing its copy.
        let waiting = try await client(address)
        async let answer = waiting.request(.GET, "/queued")
        await old.drainAfterHandOff(lastRequestWindow: .zero)

        let new = try plane(drainTimeout: .seconds(10))
        new.inherit(exported)
        let adopted = try await new.start(config("web", backend: a))
        XCTAssertEqual(adopted, address)
        let response = try await answer
        XCTAssertEqual(response.body, "a")
    }

    func testARenamedListenerTakesTheAddressAndUnclaimedSocketsAreClosed() async throws {
        let a = try await backend("a")
        let old = try plane(drainTimeout: .seconds(10))
        let first = try await old.start(config("first", backend: a))
        let firstPort = try splitAddress(first).1
        var fixed = config("second", backend: a)
        fixed.port = try splitAddress(try await old.start(config("probe", backend: a))).1
        await old.stop(key: "probe")
        let second = try await old.start(fixed)
        let exported = await old.exportListeningSockets()
        XCTAssertEqual(exported.map(\.listener), ["first", "second"])

        let new = try plane(drainTimeout: .seconds(10))
        new.inherit(exported)
        // The new manifests call `second` `renamed`; `first` (port 0) is wanted by nobody.
        var renamed = fixed
        renamed.name = "renamed"
        renamed.key = "renamed"
        let adopted = try await new.start(renamed)
        XCTAssertEqual(adopted, second)
        XCTAssertEqual(new.releaseUnclaimedInheritedSockets().map(\.listener), ["first"])
        await old.drainAfterHandOff(lastRequestWindow: .zero)
        // Nobody holds `first` any more: its port refuses; `second` serves.
        do {
            _ = try await ClientBootstrap(group: try self.loopGroup).connect(host: "127.0.0.1", port: firstPort).get()
            XCTFail("an unclaimed inherited socket still accepts")
        } catch {}
        let client = try await client(second)
        let answer = try await client.request(.GET, "/")
        XCTAssertEqual(answer.body, "a")
    }

    func testInheritedSocketsAreClaimedByAddressAndEphemeralPortsByName() throws {
        let socket = { (listener: String, address: String) in
            TransferableSocket(listener: listener, address: address, boundAddress: address,
                               descriptor: OwnedDescriptor(adopting: -1))
        }
        var inherited = InheritedSockets([socket("web", "127.0.0.1:80"), socket("api", "127.0.0.1:0"),
                                          socket("admin", "127.0.0.1:0"), socket("v6", "[::1]:80")])
        XCTAssertEqual(inherited.claim(address: "127.0.0.1:80", listener: "renamed")?.listener, "web")
        XCTAssertNil(inherited.claim(address: "127.0.0.1:80", listener: "web"), "claimed once")
        XCTAssertNil(inherited.claim(address: "127.0.0.1:0", listener: "other"), "an ephemeral port is its listener's")
        XCTAssertEqual(inherited.claim(address: "127.0.0.1:0", listener: "admin")?.listener, "admin")
        XCTAssertNil(inherited.claim(address: "0.0.0.0:80", listener: "web"), "another host is another address")
        XCTAssertEqual(inherited.removeAll().map(\.listener), ["api", "v6"])
        XCTAssertTrue(inherited.sockets.isEmpty)
    }

    /// An HTTPS and a QUIC listener usually share a port number: each takes the socket of its own kind.
    func testATCPAndAUDPSocketOnOnePortGoToTheirOwnKindOfListener() {
        var inherited = InheritedSockets([
            TransferableSocket(listener: "h3", address: "127.0.0.1:443", boundAddress: "127.0.0.1:443", datagram: true,
                               descriptor: OwnedDescriptor(adopting: -1)),
            TransferableSocket(listener: "https", address: "127.0.0.1:443", boundAddress: "127.0.0.1:443",
                               descriptor: OwnedDescriptor(adopting: -1)),
        ])
        XCTAssertEqual(inherited.claim(address: "127.0.0.1:443", listener: "https")?.listener, "https")
        XCTAssertNil(inherited.claim(address: "127.0.0.1:443", listener: "https"), "the UDP socket is no TCP listener's")
        XCTAssertEqual(inherited.claim(address: "127.0.0.1:443", listener: "h3", datagram: true)?.listener, "h3")
    }
}

import Foundation
import NIOCore
import XCTest

@testable import ALBDataPlane

#if canImport(Glibc)
import Glibc
#endif

/// What the data plane's accepted sockets are set to, read from the sockets themselves (this process's
/// descriptors), not from NIO's view of them.
final class AcceptedSocketTests: DataPlaneTestCase {
    /// The descriptor of this process's TCP socket from `localPort` to `peerPort` on 127.0.0.1, if any.
    private func descriptor(localPort: Int, peerPort: Int) throws -> Int32? {
        for name in try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            guard let fd = Int32(name) else { continue }
            var local = sockaddr_in(), peer = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size), peerLength = length
            let named = withUnsafeMutablePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            }
            let connected = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &peerLength) }
            }
            guard named == 0, connected == 0, local.sin_family == sa_family_t(AF_INET) else { continue }
            if Int(UInt16(bigEndian: local.sin_port)) == localPort && Int(UInt16(bigEndian: peer.sin_port)) == peerPort {
                return fd
            }
        }
        return nil
    }

    func testAnAcceptedConnectionSendsWithoutDelay() async throws {
        // The listening socket carries TCP_NODELAY and Linux copies it to every socket it accepts: no
        // connection sets it itself (docs/benchmarks.md), and a response must still not wait for Nagle.
        let a = try await backend("a")
        let plane = try plane()
        let address = try await plane.start(ListenerConfig(
            name: "web", loadBalancerName: "lb", bindHost: "127.0.0.1", port: 0, idleTimeout: .seconds(30),
            requestTimeout: .seconds(30),
            groups: [BackendGroup(name: "g", weight: 100, servers: [BackendServer(host: "127.0.0.1", port: a.port)])]))
        let client = try await client(address)
        let response = try await client.request(.GET, "/")
        XCTAssertEqual(response.status, 200)
        let listenerPort = try XCTUnwrap(Int(address.split(separator: ":").last ?? ""))
        let clientPort = try XCTUnwrap(client.channel.localAddress?.port)
        let accepted = try XCTUnwrap(try descriptor(localPort: listenerPort, peerPort: clientPort),
                                     "the data plane's side of the connection")
        var noDelay: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        XCTAssertEqual(getsockopt(accepted, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, &size), 0)
        XCTAssertEqual(noDelay, 1, "TCP_NODELAY on the accepted socket")
    }
}

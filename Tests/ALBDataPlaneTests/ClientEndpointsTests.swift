import NIOCore
import XCTest

@testable import ALBDataPlane

final class ClientEndpointsTests: XCTestCase {
    /// The IPv4 text written by hand is NIO's `ipAddress`, byte for byte: every value of each octet (the
    /// others fixed, so 0, one, two and three digits meet each position), and random addresses.
    func testIPv4TextIsNIOs() throws {
        var addresses: [String] = []
        for position in 0..<4 {
            for value in 0...255 {
                var octets = [127, 0, 0, 1]
                octets[position] = value
                addresses.append(octets.map(String.init).joined(separator: "."))
            }
        }
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            addresses.append((0..<4).map { _ in String(Int.random(in: 0...255, using: &generator)) }.joined(separator: "."))
        }
        for text in addresses {
            let address = try SocketAddress(ipAddress: text, port: 80)
            XCTAssertEqual(ClientEndpoints.ipText(address), address.ipAddress, text)
            XCTAssertEqual(ClientEndpoints.ipText(address), text)
        }
    }

    func testIPv6GoesThroughNIO() throws {
        for text in ["::1", "2001:db8::8:800:200c:417a", "::ffff:192.0.2.1"] {
            let address = try SocketAddress(ipAddress: text, port: 443)
            XCTAssertEqual(ClientEndpoints.ipText(address), address.ipAddress)
        }
    }
}

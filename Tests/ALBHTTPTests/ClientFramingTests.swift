import ALBHTTP
import NIOHTTP1
import XCTest

/// Framing is decided per client protocol: HTTP/1 frames with length, chunks or close; HTTP/2 streams
/// carry no connection-specific header.
final class ClientFramingTests: XCTestCase {
    private let unframed = HTTPResponseHead(version: .http1_1, status: .ok,
                                            headers: ["connection": "keep-alive", "keep-alive": "timeout=5", "x-app": "1"])

    func testHTTP1GetsChunkedOrCloseAndSaysConnection() {
        let (chunked, closeAfter) = ProxyHeaders.clientResponseHead(from: unframed, requestMethod: .GET,
                                                                    requestVersion: .http1_1, keepAlive: true)
        XCTAssertEqual(chunked.headers["transfer-encoding"], ["chunked"])
        XCTAssertFalse(closeAfter)
        let (closing, closes) = ProxyHeaders.clientResponseHead(from: unframed, requestMethod: .GET,
                                                                requestVersion: .http1_0, keepAlive: true)
        XCTAssertEqual(closing.headers["connection"], ["close"])
        XCTAssertTrue(closes, "an HTTP/1.0 client learns where an unframed body ends by the close")
    }

    func testHTTP2GetsNoConnectionSpecificHeaders() {
        let (head, closeAfter) = ProxyHeaders.clientResponseHead(from: unframed, requestMethod: .GET,
                                                                 requestVersion: HTTPVersion(major: 2, minor: 0),
                                                                 keepAlive: false, framing: .http2)
        XCTAssertFalse(closeAfter)
        for name in ["connection", "keep-alive", "transfer-encoding"] {
            XCTAssertFalse(head.headers.contains(name: name), name)
        }
        XCTAssertEqual(head.headers["x-app"], ["1"])
        let error = EdgeResponse.head(for: .badGateway, version: HTTPVersion(major: 2, minor: 0), close: true, framing: .http2)
        XCTAssertFalse(error.headers.contains(name: "connection"))
        XCTAssertEqual(error.headers["content-length"], ["16"])
    }
}

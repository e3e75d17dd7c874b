import ALBHTTP
import NIOCore
import NIOHTTP1
import XCTest

/// What the response decoder learns of a head's fields while reading them must give the proxy exactly the
/// answers it got by searching the fields: the same client head and the same keep-alive decision.
final class HTTP1HeadSummaryTests: XCTestCase {
    private final class Heads: HTTPResponseDecoderOutput {
        var heads: [(HTTPResponseHead, HTTP1HeadSummary?)] = []
        func received(_ part: HTTPClientResponsePart) {
            if case .head(let head) = part { self.heads.append((head, nil)) }
        }
        func received(head: HTTPResponseHead, summary: HTTP1HeadSummary) {
            self.heads.append((head, summary))
        }
    }

    private func decodeHead(_ input: String, leavesOutHopByHop: Bool, byteByByte: Bool = false,
                            file: StaticString = #filePath, line: UInt = #line) throws -> (HTTPResponseHead, HTTP1HeadSummary) {
        var decoder = StrictHTTPResponseDecoder(leavesOutHopByHop: leavesOutHopByHop)
        decoder.expectResponse(to: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/"))
        let output = Heads()
        let bytes = Array(input.utf8)
        var held = ByteBuffer()
        for read in byteByByte ? bytes.map({ [$0] }) : [bytes] {
            held.writeBytes(read)
            while try decoder.decode(&held, into: output) == .continue {}
        }
        let first = try XCTUnwrap(output.heads.first, "no head", file: file, line: line)
        let summary = try XCTUnwrap(first.1, "no summary", file: file, line: line)
        return (first.0, summary)
    }

    /// Responses covering every way `Connection` can name fields and settle keep-alive, each hop-by-hop field,
    /// repeated and folded lengths, and HTTP/1.0.
    static let responses: [String] = {
        let fields = [
            "",
            "Connection: keep-alive\r\n",
            "Connection: close\r\n",
            "connection: Keep-Alive\r\nKeep-Alive: timeout=5, max=100\r\n",
            "Connection: keep-alive, close\r\n",
            "Connection: close\r\nConnection: keep-alive\r\n",
            "Connection: keep-alive\r\nConnection: keep-alive\r\n",
            "Connection: , keep-alive ,\r\n",
            "Connection: x-private, keep-alive\r\nX-Private: secret\r\n",
            "Connection: close\r\nClose: reserved\r\n",
            "Connection: te, trailer\r\nTE: trailers\r\nTrailer: x-sum\r\n",
            "Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\n",
            "Connection: Content-Length, Host\r\nHost: backend\r\n",
            "Content-Length: 0\r\nContent-Length: 0\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n",
            "Content-Length: 0, 0\r\nConnection: close\r\n",
            // One option, no comma: read whole rather than split.
            "Connection: KEEP-ALIVE\r\n",
            "Connection: x-private\r\nX-Private: secret\r\n",
            "Connection: Upgrade\r\nUpgrade: h2c\r\n",
            "Connection: keep alive\r\n",
            "Connection:\r\n",
            "Connection:   \r\nKeep-Alive: timeout=5\r\n",
            "Connection: Close\r\nClose: reserved\r\n",
        ]
        var responses: [String] = []
        for version in ["HTTP/1.1", "HTTP/1.0"] {
            for extra in fields {
                let framing = extra.contains("Content-Length: 0") ? "" : "Content-Length: 0\r\n"
                responses.append("\(version) 200 OK\r\nServer: test\r\n\(extra)X-End: 1\r\n\(framing)\r\n")
                responses.append("\(version) 200 OK\r\nTransfer-Encoding: chunked\r\n\(extra)X-End: 1\r\n\r\n0\r\n\r\n")
            }
        }
        return responses.filter { !($0.contains("Transfer-Encoding") && $0.contains("Content-Length")) }
    }()

    func testTheSummaryGivesTheAnswersOfSearchingTheFields() throws {
        for input in Self.responses {
            for byteByByte in [false, true] {
                let (whole, _) = try self.decodeHead(input, leavesOutHopByHop: false, byteByByte: byteByByte)
                let (leftOut, summary) = try self.decodeHead(input, leavesOutHopByHop: true, byteByByte: byteByByte)
                XCTAssertEqual(summary.isKeepAlive(version: leftOut.version), ProxyHeaders.isKeepAlive(whole),
                               input.debugDescription)
                for method in [HTTPMethod.GET, .HEAD] {
                    for requestVersion in [HTTPVersion.http1_1, .http1_0] {
                        for keepAlive in [true, false] {
                            let searched = ProxyHeaders.clientResponseHead(
                                from: whole, requestMethod: method, requestVersion: requestVersion, keepAlive: keepAlive)
                            let summarised = ProxyHeaders.clientResponseHead(
                                from: leftOut, summary: summary, requestMethod: method, requestVersion: requestVersion,
                                keepAlive: keepAlive)
                            XCTAssertEqual(summarised.head, searched.head, input.debugDescription)
                            XCTAssertEqual(summarised.closeAfter, searched.closeAfter, input.debugDescription)
                        }
                    }
                }
            }
        }
    }

    func testHopByHopFieldsAreLeftOutOnlyWhenAsked() throws {
        let input = "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n"
            + "X-A: b\r\n\r\n"
        let (leftOut, summary) = try self.decodeHead(input, leavesOutHopByHop: true)
        XCTAssertTrue(summary.hopByHopLeftOut)
        XCTAssertEqual(leftOut.headers.map { $0.name }, ["Content-Length", "X-A"])
        XCTAssertTrue(summary.present.isSuperset(of: [.connection, .keepAlive, .contentLength]))
        let (whole, kept) = try self.decodeHead(input, leavesOutHopByHop: false)
        XCTAssertFalse(kept.hopByHopLeftOut)
        XCTAssertEqual(whole.headers.map { $0.name }, ["Connection", "Keep-Alive", "Content-Length", "X-A"])
    }

    /// A field `Connection` names is found by name, the slow way: the decoder leaves the head whole.
    func testAFieldNamedByConnectionKeepsTheHeadWhole() throws {
        let input = "HTTP/1.1 200 OK\r\nConnection: x-private\r\nX-Private: 1\r\nContent-Length: 0\r\n\r\n"
        let (head, summary) = try self.decodeHead(input, leavesOutHopByHop: true)
        XCTAssertFalse(summary.hopByHopLeftOut)
        XCTAssertTrue(summary.connectionNamesMoreFields)
        XCTAssertEqual(head.headers.count, 3)
    }

    /// A `101` is delivered whole: the switch is read from its `Upgrade` and `Connection` fields.
    func testASwitchIsDeliveredWhole() throws {
        let input = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        let (head, summary) = try self.decodeHead(input, leavesOutHopByHop: true)
        XCTAssertFalse(summary.hopByHopLeftOut)
        XCTAssertEqual(head.headers["upgrade"], ["websocket"])
        XCTAssertTrue(WebSocketHandshake.isAccepted(head))
    }
}

import ALBHTTP
import NIOCore
import NIOHTTP1
import XCTest

/// What the response decoder learns of a head's fields while reading them must give the proxy exactly the
/// answers it got by searching the fields: the same client head and the same keep-alive decision.
final class HTTP1HeadSummaryTests: XCTestCase {
    private final class Heads: HTTPResponseDecoderOutput {
        var heads: [(HTTPResponseHead, HTTP1HeadSummary?, HTTP1FieldLines?)] = []
        func received(_ part: HTTPClientResponsePart) {
            if case .head(let head) = part { self.heads.append((head, nil, nil)) }
        }
        func received(head: HTTPResponseHead, summary: HTTP1HeadSummary) {
            self.heads.append((head, summary, nil))
        }
        func received(head: HTTPResponseHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines) {
            self.heads.append((head, summary, fieldLines))
        }
    }

    private func decodeHead(_ input: String, leavesOutHopByHop: Bool, byteByByte: Bool = false,
                            file: StaticString = #filePath, line: UInt = #line) throws -> (HTTPResponseHead, HTTP1HeadSummary) {
        let (head, summary, _) = try self.decodeHead(input, leavesOutHopByHop: leavesOutHopByHop, relayingFieldLines: false,
                                                     byteByByte: byteByByte, file: file, line: line)
        return (head, summary)
    }

    private func decodeHead(_ input: String, leavesOutHopByHop: Bool = false, relayingFieldLines: Bool, byteByByte: Bool = false,
                            file: StaticString = #filePath,
                            line: UInt = #line) throws -> (HTTPResponseHead, HTTP1HeadSummary, HTTP1FieldLines?) {
        var decoder = StrictHTTPResponseDecoder(leavesOutHopByHop: leavesOutHopByHop)
        decoder.expectResponse(to: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/"),
                               relayingFieldLines: relayingFieldLines)
        let output = Heads()
        let bytes = Array(input.utf8)
        var held = ByteBuffer()
        for read in byteByByte ? bytes.map({ [$0] }) : [bytes] {
            held.writeBytes(read)
            while try decoder.decode(&held, into: output) == .continue {}
        }
        let first = try XCTUnwrap(output.heads.first, "no head", file: file, line: line)
        let summary = try XCTUnwrap(first.1, "no summary", file: file, line: line)
        return (first.0, summary, first.2)
    }

    /// The client heads made from a whole head by searching its fields, and from a decoded one with its summary,
    /// for each request method, version and keep-alive decision.
    private static func forEachClientHead(
        searching whole: HTTPResponseHead, summarising decoded: HTTPResponseHead, summary: HTTP1HeadSummary,
        _ body: (_ searched: (head: HTTPResponseHead, closeAfter: Bool), _ summarised: (head: HTTPResponseHead, closeAfter: Bool)) -> Void
    ) {
        for method in [HTTPMethod.GET, .HEAD] {
            for requestVersion in [HTTPVersion.http1_1, .http1_0] {
                for keepAlive in [true, false] {
                    body(ProxyHeaders.clientResponseHead(from: whole, requestMethod: method, requestVersion: requestVersion,
                                                         keepAlive: keepAlive),
                         ProxyHeaders.clientResponseHead(from: decoded, summary: summary, requestMethod: method,
                                                         requestVersion: requestVersion, keepAlive: keepAlive))
                }
            }
        }
    }

    private static func pairs(_ headers: HTTPHeaders) -> [String] {
        headers.map { "\($0.name): \($0.value)" }
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
                if version == "HTTP/1.1" {
                    // An HTTP/1.0 response with `Transfer-Encoding` is refused (RFC 9112 section 6.1).
                    responses.append("\(version) 200 OK\r\nTransfer-Encoding: chunked\r\n\(extra)X-End: 1\r\n\r\n0\r\n\r\n")
                }
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
                Self.forEachClientHead(searching: whole, summarising: leftOut, summary: summary) { searched, summarised in
                    XCTAssertEqual(summarised.head, searched.head, input.debugDescription)
                    XCTAssertEqual(summarised.closeAfter, searched.closeAfter, input.debugDescription)
                }
            }
        }
    }

    /// A head relayed as its lines reaches the client with the fields a parsed and searched head has, in the same
    /// order, and the proxy's own after them; when the lines cannot be relayed (a field `Connection` names, folded
    /// lengths) the head comes with its fields as strings.
    func testRelayedLinesGiveTheFieldsOfTheSearchedHead() throws {
        var relayed = 0
        for input in Self.responses {
            for byteByByte in [false, true] {
                let (whole, _) = try self.decodeHead(input, leavesOutHopByHop: false, byteByByte: byteByByte)
                let (head, summary, lines) = try self.decodeHead(input, relayingFieldLines: true, byteByByte: byteByByte)
                XCTAssertEqual(summary.isKeepAlive(version: head.version), ProxyHeaders.isKeepAlive(whole),
                               input.debugDescription)
                if lines != nil {
                    relayed += 1
                    XCTAssertTrue(head.headers.isEmpty, input.debugDescription)
                    XCTAssertTrue(summary.hopByHopLeftOut, input.debugDescription)
                } else {
                    XCTAssertTrue(summary.connectionNamesMoreFields || input.contains("Content-Length: 0, 0")
                        || input.components(separatedBy: "Content-Length").count > 2, input.debugDescription)
                }
                Self.forEachClientHead(searching: whole, summarising: head, summary: summary) { searched, summarised in
                    let fields = lines.map { $0.headers(followedBy: summarised.head.headers) } ?? summarised.head.headers
                    XCTAssertEqual(Self.pairs(fields), Self.pairs(searched.head.headers), input.debugDescription)
                    XCTAssertEqual(summarised.head.status, searched.head.status)
                    XCTAssertEqual(summarised.head.version, searched.head.version)
                    XCTAssertEqual(summarised.closeAfter, searched.closeAfter, input.debugDescription)
                }
            }
        }
        XCTAssertGreaterThan(relayed, Self.responses.count, "most heads are relayed as lines")
    }

    /// The lines are the backend's bytes: names as sent, the spaces around a value and bytes beyond ASCII kept.
    /// Hop-by-hop lines anywhere (first, between, last) are left out.
    func testRelayedLinesAreTheBackendsBytesWithoutTheHopByHopOnes() throws {
        let input = "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nX-A:  b \r\nKeep-Alive: timeout=5\r\n"
            + "x-b:c\u{E9}\r\nContent-Length: 0\r\nTransfer-Encoding-X: 1\r\nUpgrade: h2c\r\n\r\n"
        for byteByByte in [false, true] {
            let (head, _, decoded) = try self.decodeHead(input, relayingFieldLines: true, byteByByte: byteByByte)
            let lines = try XCTUnwrap(decoded)
            XCTAssertEqual(head.status, .ok)
            XCTAssertEqual(String(buffer: lines.bytes),
                           "X-A:  b \r\nx-b:c\u{E9}\r\nContent-Length: 0\r\nTransfer-Encoding-X: 1\r\n")
            XCTAssertEqual(Self.pairs(lines.headers), ["X-A: b", "x-b: c\u{E9}", "Content-Length: 0", "Transfer-Encoding-X: 1"])
        }
        // Every line hop-by-hop: none left.
        let (_, _, none) = try self.decodeHead("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
                                               relayingFieldLines: true)
        XCTAssertEqual(none?.bytes.readableBytes, 0)
        XCTAssertEqual(none?.headers.count, 0)
    }

    /// For an HTTP/2 client the lines become the pairs of a header block: the fields the lines hold, in order,
    /// names in lowercase (short ones and those over 15 bytes), values as the fields have them, with the loop's
    /// texts or without; a `grpc-status` in any case stops them (its block is made from fields).
    func testLinesBecomeLowercasePairsUntilAGRPCStatus() throws {
        let texts = FieldTextCache()
        var relayed = 0
        let extra = "X-A-Rather-Long-Field-Name:  Mixed Case Value \r\nETag: \"abc\"\r\nX-Ascii-Beyond: caf\u{E9}\r\n"
        for input in Self.responses.map({ $0.replacingOccurrences(of: "X-End: 1\r\n", with: "X-End: 1\r\n" + extra) }) {
            let (_, _, decoded) = try self.decodeHead(input, relayingFieldLines: true)
            guard let lines = decoded else { continue }
            relayed += 1
            let expected = lines.headers.map { "\($0.name.lowercased()): \($0.value)" }
            for cache in [nil, texts, texts] {
                var pairs: [(String, String)] = [(":status", "200")]
                XCTAssertTrue(lines.appendLowercasedFields(to: &pairs, texts: cache, stoppingAt: "grpc-status"))
                XCTAssertEqual(pairs.dropFirst().map { "\($0.0): \($0.1)" }, expected, input.debugDescription)
                XCTAssertEqual(pairs.first?.0, ":status")
            }
        }
        XCTAssertGreaterThan(relayed, Self.responses.count / 2)
        for name in ["grpc-status", "Grpc-Status", "GRPC-STATUS"] {
            let (_, _, decoded) = try self.decodeHead(
                "HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\n\(name): 5\r\nX-After: 1\r\nContent-Length: 0\r\n\r\n",
                relayingFieldLines: true)
            var pairs: [(String, String)] = []
            XCTAssertFalse(try XCTUnwrap(decoded).appendLowercasedFields(to: &pairs, texts: texts, stoppingAt: "grpc-status"))
            XCTAssertEqual(pairs.map { "\($0.0): \($0.1)" }, ["content-type: application/grpc"], name)
        }
        // A name that only starts like it does not stop them.
        let (_, _, decoded) = try self.decodeHead("HTTP/1.1 200 OK\r\ngrpc-status-x: 1\r\nContent-Length: 0\r\n\r\n",
                                                  relayingFieldLines: true)
        var pairs: [(String, String)] = []
        XCTAssertTrue(try XCTUnwrap(decoded).appendLowercasedFields(to: &pairs, texts: nil, stoppingAt: "grpc-status"))
        XCTAssertEqual(pairs.map { $0.0 }, ["grpc-status-x", "content-length"])
    }

    /// A `101` is never relayed as lines: the switch is read from its fields.
    func testASwitchIsNotRelayedAsLines() throws {
        let input = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        let (head, _, lines) = try self.decodeHead(input, relayingFieldLines: true)
        XCTAssertNil(lines)
        XCTAssertEqual(head.headers["upgrade"], ["websocket"])
    }

    /// Responses one after another on one connection, each asked for as lines: every head has its own lines,
    /// the memory of one used again for the next.
    func testConsecutiveHeadsEachHaveTheirOwnLines() throws {
        var decoder = StrictHTTPResponseDecoder()
        let output = Heads()
        var bytes = ByteBuffer()
        for index in 0..<3 {
            decoder.expectResponse(to: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/"), relayingFieldLines: index != 1)
            bytes.writeString("HTTP/1.1 200 OK\r\nX-Index: \(index)\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
        }
        while try decoder.decode(&bytes, into: output) == .continue {}
        XCTAssertEqual(output.heads.count, 3)
        XCTAssertEqual(output.heads.map { $0.2.map { String(buffer: $0.bytes) } },
                       ["X-Index: 0\r\nContent-Length: 0\r\n", nil, "X-Index: 2\r\nContent-Length: 0\r\n"])
        XCTAssertEqual(Self.pairs(output.heads[1].0.headers), ["X-Index: 1", "Connection: keep-alive", "Content-Length: 0"])
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

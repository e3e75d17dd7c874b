import ALBHTTP
import NIOCore
import NIOHTTP1
import XCTest

/// The backend side's decoder on its own: the exact parts of each framing, whole and byte by byte, and every
/// response a proxy must refuse.
final class StrictHTTPResponseDecoderTests: XCTestCase {
    private final class Parts: HTTPResponseDecoderOutput {
        var parts: [HTTPClientResponsePart] = []
        func received(_ part: HTTPClientResponsePart) { self.parts.append(part) }
    }

    /// What the decoder delivers for `input`, answering requests with `methods`, in one read or one byte per
    /// read; with `endOfInput`, the input then ends. Body parts are joined, so both ways compare equal.
    private func decode(
        _ input: String,
        methods: [HTTPMethod] = [.GET],
        byteByByte: Bool = false,
        endOfInput: Bool = false,
        decoder: StrictHTTPResponseDecoder = StrictHTTPResponseDecoder()
    ) throws -> (parts: [HTTPClientResponsePart], left: String) {
        var decoder = decoder
        for method in methods {
            decoder.expectResponse(to: HTTPRequestHead(version: .http1_1, method: method, uri: "/"))
        }
        let output = Parts()
        let bytes = Array(input.utf8)
        let reads = byteByByte ? bytes.map { [$0] } : [bytes]
        var held = ByteBuffer()
        for read in reads {
            held.writeBytes(read)
            while try decoder.decode(&held, into: output) == .continue {}
        }
        if endOfInput {
            try decoder.decodeEndOfInput(into: output)
        }
        return (Self.joined(output.parts), String(buffer: held))
    }

    private static func joined(_ parts: [HTTPClientResponsePart]) -> [HTTPClientResponsePart] {
        var result: [HTTPClientResponsePart] = []
        for part in parts {
            if case .body(var more) = part, case .body(var body) = result.last {
                body.writeBuffer(&more)
                result[result.count - 1] = .body(body)
            } else {
                result.append(part)
            }
        }
        return result
    }

    private func head(_ status: HTTPResponseStatus, _ fields: [(String, String)],
                      version: HTTPVersion = .http1_1) -> HTTPClientResponsePart {
        .head(HTTPResponseHead(version: version, status: status, headers: HTTPHeaders(fields)))
    }

    private func body(_ text: String) -> HTTPClientResponsePart { .body(ByteBuffer(string: text)) }

    private func bothWays(
        _ input: String, methods: [HTTPMethod] = [.GET], endOfInput: Bool = false,
        file: StaticString = #filePath, line: UInt = #line
    ) throws -> (parts: [HTTPClientResponsePart], left: String) {
        let whole = try self.decode(input, methods: methods, endOfInput: endOfInput)
        let bytewise = try self.decode(input, methods: methods, byteByByte: true, endOfInput: endOfInput)
        XCTAssertEqual(whole.parts, bytewise.parts, "byte by byte", file: file, line: line)
        XCTAssertEqual(whole.left, bytewise.left, "byte by byte", file: file, line: line)
        return whole
    }

    func testAContentLengthBody() throws {
        let (parts, left) = try self.bothWays("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A:  b \r\n\r\nhello")
        XCTAssertEqual(parts, [self.head(.ok, [("Content-Length", "5"), ("X-A", "b")]), self.body("hello"), .end(nil)])
        XCTAssertEqual(left, "")
    }

    func testAChunkedBodyWithExtensionsAndTrailers() throws {
        let input = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "5;name=value\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Checksum: 7\r\nX-More: m\r\n\r\n"
        let (parts, _) = try self.bothWays(input)
        XCTAssertEqual(parts, [self.head(.ok, [("Transfer-Encoding", "chunked")]), self.body("hello0123456789"),
                               .end(HTTPHeaders([("X-Checksum", "7"), ("X-More", "m")]))])
        let (plain, _) = try self.bothWays("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        XCTAssertEqual(plain.dropFirst(), [self.body("ok"), .end(nil)])
    }

    func testABodyDelimitedByTheCloseEndsWithTheInput() throws {
        let input = "HTTP/1.0 200 OK\r\nServer: old\r\n\r\nall of it, Content-Length: 3\r\n\r\n"
        let (open, _) = try self.bothWays(input)
        XCTAssertEqual(open, [self.head(.ok, [("Server", "old")], version: .http1_0),
                              self.body("all of it, Content-Length: 3\r\n\r\n")], "no end until the input ends")
        let (closed, _) = try self.bothWays(input, endOfInput: true)
        XCTAssertEqual(closed.last, .end(nil))
        XCTAssertEqual(closed.count, 3)
    }

    func testResponsesWithoutABody() throws {
        // HEAD, 204 and 304 have no body whatever their fields say; what follows is the next response.
        let next = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        for (method, first) in [(HTTPMethod.HEAD, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
                                (.HEAD, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
                                (.GET, "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"),
                                (.GET, "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
                                (.GET, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")] {
            let (parts, left) = try self.bothWays(first + next, methods: [method, .GET])
            XCTAssertEqual(parts.count, 5, first)
            XCTAssertEqual(parts[1], .end(nil), first)
            XCTAssertEqual(Array(parts.suffix(2)), [self.body("ok"), .end(nil)], first)
            XCTAssertEqual(left, "")
        }
    }

    func testPipelinedResponsesPairWithTheirRequests() throws {
        let input = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"  // to HEAD: no body
            + "HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello"
            + "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n!\r\n0\r\n\r\n"
        let (parts, _) = try self.bothWays(input, methods: [.HEAD, .GET, .POST])
        XCTAssertEqual(parts, [
            self.head(.ok, [("Content-Length", "5")]), .end(nil),
            self.head(.created, [("Content-Length", "5")]), self.body("hello"), .end(nil),
            self.head(.ok, [("Transfer-Encoding", "chunked")]), self.body("!"), .end(nil),
        ])
    }

    func testInformationalResponsesAreDroppedAndTheRequestWaitsForItsFinalOne() throws {
        let input = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
        let (parts, _) = try self.bothWays(input)
        XCTAssertEqual(parts, [self.head(.ok, [("Content-Length", "1")]), self.body("x"), .end(nil)])
    }

    func testA101EndsHTTPAndLeavesWhatFollowsUnread() throws {
        let input = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
            + "\u{81}\u{02}hiHTTP/1.1 200 OK\r\n\r\n"
        let (parts, left) = try self.bothWays(input, methods: [.GET, .GET])
        XCTAssertEqual(parts, [self.head(.switchingProtocols, [("Upgrade", "websocket"), ("Connection", "upgrade")]),
                               .end(nil)])
        XCTAssertEqual(left, "\u{81}\u{02}hiHTTP/1.1 200 OK\r\n\r\n")
        var decoder = StrictHTTPResponseDecoder()
        decoder.expectResponse(to: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/"))
        var buffer = ByteBuffer(string: input)
        let output = Parts()
        while try decoder.decode(&buffer, into: output) == .continue {}
        XCTAssertTrue(decoder.hasHandedOff)
        XCTAssertNoThrow(try decoder.decodeEndOfInput(into: output))
    }

    func testEqualDuplicateContentLengthsBecomeOneHeader() throws {
        for lengths in ["Content-Length: 2\r\nContent-Length: 2\r\n", "Content-Length: 2, 2\r\n"] {
            let (parts, _) = try self.bothWays("HTTP/1.1 200 OK\r\n\(lengths)\r\nok")
            guard case .head(let head) = parts.first else { return XCTFail("no head") }
            XCTAssertEqual(head.headers["content-length"], ["2"], lengths)
            XCTAssertEqual(parts.dropFirst(), [self.body("ok"), .end(nil)])
        }
    }

    func testAStatusLineWithoutAReasonAndAnUnknownStatus() throws {
        let (parts, _) = try self.bothWays("HTTP/1.1 299\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
                                           methods: [.GET, .GET])
        XCTAssertEqual(parts, [self.head(HTTPResponseStatus(statusCode: 299), [("Content-Length", "0")]), .end(nil),
                               self.head(.ok, [("Content-Length", "0")]), .end(nil)])
    }

    /// Each of these would let the backend split or smuggle a response, or is not HTTP/1: refused, whole and
    /// byte by byte.
    func testMalformedResponsesAreRefused() {
        let ok = "HTTP/1.1 200 OK\r\n"
        let refused: [(String, String)] = [
            ("both lengths", ok + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ("differing lengths", ok + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
            ("differing list", ok + "Content-Length: 3, 4\r\n\r\nabcd"),
            ("signed length", ok + "Content-Length: +3\r\n\r\nabc"),
            ("hex length", ok + "Content-Length: 0x3\r\n\r\nabc"),
            ("empty length", ok + "Content-Length: \r\n\r\n"),
            ("huge length", ok + "Content-Length: 1234567890123456789\r\n\r\n"),
            ("gzip coding", ok + "Transfer-Encoding: gzip\r\n\r\nabc"),
            ("coding list", ok + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
            ("two codings", ok + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ("chunkedx", ok + "Transfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n"),
            ("bad chunk size", ok + "Transfer-Encoding: chunked\r\n\r\nz\r\n"),
            ("negative chunk", ok + "Transfer-Encoding: chunked\r\n\r\n-1\r\n"),
            ("overflowing chunk", ok + "Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n"),
            ("chunk size space", ok + "Transfer-Encoding: chunked\r\n\r\n5 5\r\n"),
            ("bad extension", ok + "Transfer-Encoding: chunked\r\n\r\n5;a\u{1}\r\nhello\r\n0\r\n\r\n"),
            ("no CRLF after data", ok + "Transfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n"),
            ("LF only after data", ok + "Transfer-Encoding: chunked\r\n\r\n2\r\nok\n0\r\n\r\n"),
            ("obs-fold", ok + "X-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
            ("bare LF", ok + "Content-Length: 0\n\r\n"),
            ("bare CR", ok + "X-A: a\rb\r\nContent-Length: 0\r\n\r\n"),
            ("bare LF status", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"),
            ("NUL in value", ok + "X-A: a\u{0}b\r\nContent-Length: 0\r\n\r\n"),
            ("CTL in value", ok + "X-A: a\u{7}b\r\nContent-Length: 0\r\n\r\n"),
            ("DEL in value", ok + "X-A: a\u{7F}b\r\nContent-Length: 0\r\n\r\n"),
            ("NUL in name", ok + "X\u{0}A: b\r\nContent-Length: 0\r\n\r\n"),
            ("space in name", ok + "X A: b\r\nContent-Length: 0\r\n\r\n"),
            ("space before colon", ok + "Content-Length : 5\r\n\r\nhello"),
            ("tab before colon", ok + "Content-Length\t: 5\r\n\r\nhello"),
            ("no colon", ok + "Content-Length 5\r\n\r\nhello"),
            ("empty name", ok + ": v\r\nContent-Length: 0\r\n\r\n"),
            ("HTTP/1.0 chunked", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ("HTTP/1.0 204 chunked", "HTTP/1.0 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ("HTTP/2.0", "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ("HTTP/1.2", "HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ("lower-case version", "http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ("two-digit status", "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"),
            ("four-digit status", "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"),
            ("status 099", "HTTP/1.1 099 OK\r\nContent-Length: 0\r\n\r\n"),
            ("letters in status", "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"),
            ("two spaces", "HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n"),
            ("CTL in reason", "HTTP/1.1 200 O\u{1}K\r\nContent-Length: 0\r\n\r\n"),
            ("not HTTP", "NOT HTTP\r\n\r\n"),
            ("leading space", " HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ]
        for (name, input) in refused {
            for byteByByte in [false, true] {
                XCTAssertThrowsError(try self.decode(input, byteByByte: byteByByte),
                                     "\(name), byte by byte: \(byteByByte)") { error in
                    XCTAssertEqual((error as? HTTP1SyntaxError)?.kind, .malformed, name)
                }
            }
        }
    }

    func testEmptyLinesBetweenResponsesAreSkipped() throws {
        let (parts, left) = try self.bothWays("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx\r\n\r\n"
                                                  + "HTTP/1.1 204 No Content\r\n\r\n\r\n", methods: [.GET, .GET])
        XCTAssertEqual(parts.count, 5)
        XCTAssertEqual(parts.last, .end(nil))
        XCTAssertEqual(left, "")
        XCTAssertThrowsError(try self.decode("\rHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), "a bare CR")
    }

    func testAResponseWithoutARequestIsRefused() {
        XCTAssertThrowsError(try self.decode("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", methods: []))
        XCTAssertThrowsError(try self.decode("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nH", methods: [.GET]),
                             "a byte after the only response answered")
        XCTAssertThrowsError(try self.decode("HTTP/1.1 100 Continue\r\n\r\n", methods: []))
    }

    func testAResponseCutShortByTheEndOfInputIsRefused() {
        for input in ["HTTP/1.1 200 OK\r\nContent-Le", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
                      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"] {
            XCTAssertThrowsError(try self.decode(input, endOfInput: true), input)
        }
    }

    func testTheHeadLimitIsEightyKiBByDefault() throws {
        XCTAssertEqual(StrictHTTPResponseDecoder.defaultLimits.maxHeaderBytes, 81920)
        let statusLine = "HTTP/1.1 200 OK\r\n"
        let filler = { (bytes: Int) in "X-Fill: " + String(repeating: "a", count: bytes - 10) + "\r\n" }
        // Status line, one field and the last two lines: exactly the limit, then one byte over.
        let exact = statusLine + filler(81920 - statusLine.utf8.count - 21) + "Content-Length: 0\r\n\r\n"
        XCTAssertEqual(exact.utf8.count, 81920)
        XCTAssertEqual(try self.decode(exact).parts.count, 2)
        let over = statusLine + filler(81920 - statusLine.utf8.count - 20) + "Content-Length: 0\r\n\r\n"
        XCTAssertThrowsError(try self.decode(over)) { error in
            XCTAssertEqual((error as? HTTP1SyntaxError)?.kind, .tooLarge)
        }
        // An endless line is refused once it crosses the limit, not when it ends.
        let endless = statusLine + "X-Endless: " + String(repeating: "a", count: 81920)
        XCTAssertThrowsError(try self.decode(endless)) { error in
            XCTAssertEqual((error as? HTTP1SyntaxError)?.kind, .tooLarge)
        }
        let small = StrictHTTPResponseDecoder(limits: HTTP1HeadLimits(maxHeaderBytes: 64, maxHeaderCount: 2))
        XCTAssertThrowsError(try self.decode(statusLine + "A: 1\r\nB: 2\r\nC: 3\r\n\r\n", decoder: small)) { error in
            XCTAssertEqual((error as? HTTP1SyntaxError)?.kind, .tooLarge, "more fields than the limit")
        }
    }

    /// The proxy's allocation-free keep-alive answer is NIO's, for the heads this decoder makes.
    func testKeepAliveIsAnsweredAsNIOAnswersIt() {
        let connections: [[String]] = [[], ["close"], ["keep-alive"], ["Keep-Alive"], ["CLOSE"], [" close "],
                                       ["keep-alive, close"], ["keep-alive", "keep-alive"], ["upgrade"],
                                       ["keep-alive, upgrade"], ["te, close"], ["closed"], [""], [","],
                                       ["close", "keep-alive"], ["keep-alive,"]]
        for version in [HTTPVersion.http1_1, .http1_0] {
            for values in connections {
                let head = HTTPResponseHead(version: version, status: .ok,
                                            headers: HTTPHeaders(values.map { ("Connection", $0) } + [("X", "y")]))
                XCTAssertEqual(ProxyHeaders.isKeepAlive(head), head.isKeepAlive, "\(version) \(values)")
            }
        }
    }

    func testContentLengthValues() throws {
        for (value, length) in [("0", 0), ("007", 7), (" 12 ", 12), ("5,5", 5), ("5 , 5", 5),
                                ("999999999999999999", 999_999_999_999_999_999)] {
            let (parts, _) = try self.decode("HTTP/1.1 200 OK\r\nContent-Length: \(value)\r\n\r\n"
                                                 + String(repeating: "x", count: min(length, 3)))
            guard case .head(let head) = parts.first else { return XCTFail("no head for \(value)") }
            XCTAssertEqual(head.headers["content-length"].count, 1, value)
            if length == 0 { XCTAssertEqual(parts.last, .end(nil), value) }
        }
        for value in ["5,", ",5", "5,,5", "5 5", "-5", "5a", "1234567890123456789", "5,6"] {
            XCTAssertThrowsError(try self.decode("HTTP/1.1 200 OK\r\nContent-Length: \(value)\r\n\r\n"), value)
        }
    }

    /// Whatever the bytes and however they are split into reads, the decoder delivers the same parts and
    /// refuses the same inputs: valid responses in random order and splits, then the same with bytes
    /// changed at random (a seeded generator, so a failure replays).
    func testRandomSplitsAndMutationsDecodeAsTheWholeInputDoes() {
        var random = SplitMix64(seed: 0x5EED)
        let responses = [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nX: y\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 304 Not Modified\r\nETag: \"1\"\r\n\r\n",
        ]
        for round in 0..<400 {
            let count = 1 + Int(random.next() % 4)
            var input = Array((0..<count).map { _ in responses[Int(random.next() % UInt64(responses.count))] }
                .joined().utf8)
            if round >= 200 {
                for _ in 0...(random.next() % 3) {
                    input[Int(random.next() % UInt64(input.count))] = UInt8(truncatingIfNeeded: random.next())
                }
            }
            var reads: [[UInt8]] = []
            var rest = input[...]
            while !rest.isEmpty {
                let length = min(rest.count, 1 + Int(random.next() % 12))
                reads.append(Array(rest.prefix(length)))
                rest = rest.dropFirst(length)
            }
            let whole = Self.outcome([input], requests: count)
            let split = Self.outcome(reads, requests: count)
            XCTAssertEqual(whole.parts, split.parts, "round \(round): \(String(decoding: input, as: UTF8.self))")
            XCTAssertEqual(whole.refused, split.refused, "round \(round): \(String(decoding: input, as: UTF8.self))")
            if round < 200 {
                XCTAssertFalse(whole.refused, "round \(round)")
            }
        }
    }

    /// The parts delivered (bodies joined) and whether the input was refused.
    private static func outcome(_ reads: [[UInt8]], requests: Int) -> (parts: [HTTPClientResponsePart], refused: Bool) {
        var decoder = StrictHTTPResponseDecoder()
        for _ in 0..<requests {
            decoder.expectResponse(to: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/"))
        }
        let output = Parts()
        var held = ByteBuffer()
        do {
            for read in reads {
                held.writeBytes(read)
                while try decoder.decode(&held, into: output) == .continue {}
            }
            return (Self.joined(output.parts), false)
        } catch {
            return (Self.joined(output.parts), true)
        }
    }
}

/// A small seeded generator (SplitMix64), so a failing round replays exactly.
private struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

import ALBHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

final class StrictHTTPRequestDecoderTests: XCTestCase {
    func testSimpleGetWholeAndByteByByte() throws {
        let input = "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-Thing:  spaced value \r\n\r\n"
        for byteByByte in [false, true] {
            let parts = try decode(input, byteByByte: byteByByte)
            XCTAssertEqual(parts.count, 2)
            guard case .head(let head) = parts.first else { return XCTFail("no head") }
            XCTAssertEqual(head.method, .GET)
            XCTAssertEqual(head.uri, "/a?b=c")
            XCTAssertEqual(head.version, .http1_1)
            XCTAssertEqual(head.headers["host"], ["example.com"])
            XCTAssertEqual(head.headers["x-thing"], ["spaced value"])
            XCTAssertEqual(parts.last, .end(nil))
        }
    }

    func testContentLengthBodyAndPipelinedRequests() throws {
        let input =
            "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
            + "\r\nGET /next HTTP/1.0\r\n\r\n"
        let whole = coalesced(try decode(input))
        let bytewise = coalesced(try decode(input, byteByByte: true))
        XCTAssertEqual(whole, bytewise)
        XCTAssertEqual(whole.count, 5)
        XCTAssertEqual(whole[1], .body(ByteBuffer(string: "hello")))
        XCTAssertEqual(whole[2], .end(nil))
        guard case .head(let second) = whole[3] else { return XCTFail("no second head") }
        XCTAssertEqual(second.uri, "/next")
        XCTAssertEqual(second.version, .http1_0)
    }

    func testChunkedBodyWithExtensionsAndTrailers() throws {
        let input =
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "5;name=value\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"
        for byteByByte in [false, true] {
            let parts = coalesced(try decode(input, byteByByte: byteByByte))
            XCTAssertEqual(parts.count, 3)
            XCTAssertEqual(parts[1], .body(ByteBuffer(string: "hello0123456789")))
            XCTAssertEqual(parts[2], .end(HTTPHeaders([("X-Trailer", "t")])))
        }
    }

    func testEqualDuplicateContentLengthsBecomeOneHeader() throws {
        // RFC 9110 section 8.6: a proxy must not forward a repeated length as sent; send one (as HAProxy does).
        for lengths in ["Content-Length: 2\r\nContent-Length: 2\r\n", "Content-Length: 2, 2\r\n",
                        "Content-Length: 2 ,2\r\nContent-Length: 2\r\n"] {
            let parts = try decode("POST / HTTP/1.1\r\nHost: h\r\n\(lengths)X: y\r\n\r\nok")
            XCTAssertEqual(parts.count, 3)
            guard case .head(let head) = parts.first else { return XCTFail("no head") }
            XCTAssertEqual(head.headers["content-length"], ["2"], lengths)
            XCTAssertEqual(head.headers["x"], ["y"])
            XCTAssertEqual(parts[1], .body(ByteBuffer(string: "ok")))
        }
    }

    func testAHeadStartIsReportedOncePerRequest() throws {
        var decoder = StrictHTTPRequestDecoder()
        let output = try decodeAll("GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
                                   decoder: &decoder, byteByByte: true)
        XCTAssertEqual(output.headsStarted, 2)
    }

    // MARK: - Limits

    /// A request whose line plus headers (final CRLF included) is exactly `size` bytes.
    private func request(ofHeadSize size: Int) -> String {
        let fixed = "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: \r\n\r\n"
        return "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: " + String(repeating: "a", count: size - fixed.utf8.count)
            + "\r\n\r\n"
    }

    func testHeaderBytesExactlyAtTheLimitPass() throws {
        let limits = StrictHTTPRequestDecoder.Limits(maxHeaderBytes: 200, maxHeaderCount: 100)
        XCTAssertEqual(request(ofHeadSize: 200).utf8.count, 200)
        for byteByByte in [false, true] {
            XCTAssertEqual(try decode(request(ofHeadSize: 200), limits: limits, byteByByte: byteByByte).count, 2)
        }
    }

    func testHeaderBytesOneOverTheLimitFail() {
        let limits = StrictHTTPRequestDecoder.Limits(maxHeaderBytes: 200, maxHeaderCount: 100)
        guard case .headersTooLarge? = decodeError(request(ofHeadSize: 201), limits: limits) else {
            return XCTFail("expected 431")
        }
        XCTAssertEqual(HTTPEdgeError.headersTooLarge("").status, .requestHeaderFieldsTooLarge)
    }

    func testEndlessHeaderLineIsRefusedBeforeItEnds() {
        let limits = StrictHTTPRequestDecoder.Limits(maxHeaderBytes: 100, maxHeaderCount: 100)
        let input = "GET / HTTP/1.1\r\nX-Long: " + String(repeating: "a", count: 200)
        guard case .headersTooLarge? = decodeError(input, limits: limits) else { return XCTFail("expected 431") }
    }

    func testDefaultLimitOf64KiB() throws {
        XCTAssertEqual(try decode(request(ofHeadSize: 65536)).count, 2)
        XCTAssertThrowsError(try decode(request(ofHeadSize: 65537)))
    }

    private func request(withFields count: Int) -> String {
        var text = "GET / HTTP/1.1\r\nHost: h\r\n"
        for index in 1..<count { text += "X-F\(index): v\r\n" }
        return text + "\r\n"
    }

    func testHeaderCountExactlyAtTheLimitPasses() throws {
        XCTAssertEqual(try decode(request(withFields: 100)).count, 2)
        XCTAssertEqual(try decode(request(withFields: 100), byteByByte: true).count, 2)
    }

    func testHeaderCountOneOverTheLimitFails() {
        guard case .headersTooLarge? = decodeError(request(withFields: 101)) else { return XCTFail("expected 431") }
    }

    // MARK: - Refusals (400)

    func assertBadRequest(_ input: String, file: StaticString = #filePath, line: UInt = #line) {
        guard case .badRequest? = decodeError(input) else {
            return XCTFail("expected 400 for \(input.debugDescription)", file: file, line: line)
        }
    }

    func testSmugglingVectorsAreRefused() {
        assertBadRequest("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
        assertBadRequest("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc")
        assertBadRequest("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\nabc")
        assertBadRequest("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n")
        assertBadRequest("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n")
        assertBadRequest("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
        assertBadRequest("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n")
    }

    func testInvalidChunksAreRefused() {
        let head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        assertBadRequest(head + "zz\r\n")
        assertBadRequest(head + "-1\r\n")
        assertBadRequest(head + "\r\n")
        assertBadRequest(head + "1 2\r\n")
        assertBadRequest(head + "fffffffffffffffff\r\n")
        assertBadRequest(head + "3\r\nabcX\r\n")
        assertBadRequest(head + "3;ext\u{0}\r\n")
    }

    func testLineFoldingBareCRAndBareLFAreRefused() {
        assertBadRequest("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n")
        assertBadRequest("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n")
        assertBadRequest("GET / HTTP/1.1\r\nHost: h\nX-A: a\r\n\r\n")
        assertBadRequest("GET / HTTP/1.1\r\nHost: h\r\n\n")
        assertBadRequest("GET /\r HTTP/1.1\r\nHost: h\r\n\r\n")
    }

    func testControlCharactersAndMalformedFieldsAreRefused() {
        assertBadRequest("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\u{0}b\r\n\r\n")
        assertBadRequest("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\u{7F}\r\n\r\n")
        assertBadRequest("GET / HTTP/1.1\r\nHost: h\r\nX-A : a\r\n\r\n")
        assertBadRequest("GET / HTTP/1.1\r\nHost: h\r\n: a\r\n\r\n")
        assertBadRequest("GET / HTTP/1.1\r\nHost: h\r\nNo colon\r\n\r\n")
    }

    func testMalformedRequestLinesAreRefused() {
        assertBadRequest("GET / HTTP/2.0\r\nHost: h\r\n\r\n")
        assertBadRequest("GET / HTTP/1.2\r\nHost: h\r\n\r\n")
        assertBadRequest("GET / http/1.1\r\nHost: h\r\n\r\n")
        assertBadRequest("GET / HTTP/1.10\r\nHost: h\r\n\r\n")
        assertBadRequest("GET / HTTP/1.\r\nHost: h\r\n\r\n")
        assertBadRequest("GET  / HTTP/1.1\r\nHost: h\r\n\r\n")
        assertBadRequest("GET / x HTTP/1.1\r\nHost: h\r\n\r\n")
        assertBadRequest("G(T / HTTP/1.1\r\nHost: h\r\n\r\n")
        assertBadRequest("GET /\u{1} HTTP/1.1\r\nHost: h\r\n\r\n")
    }

    func testMethodsAndTargetsOfEveryLengthAreReadAsSent() throws {
        // Up to 15 bytes a text is packed inline, longer ones are stored: both sides of that edge, for the
        // method (NIO's named methods, an extension method, one in lowercase) and the target.
        let methods = ["GET", "PUT", "HEAD", "POST", "PATCH", "TRACE", "DELETE", "OPTIONS", "PROPFIND", "M-SEARCH",
                       "get", "VERSION-CONTROL", "A-VERY-LONG-METHOD1", "X"]
        let targets = (1...40).map { "/" + String(repeating: "a", count: $0 - 1) } + ["/~a-b_c.d?e=f&g=%20"]
        for method in methods {
            for target in targets {
                let parts = try decode("\(method) \(target) HTTP/1.1\r\nHost: h\r\n\r\n")
                guard case .head(let head) = parts.first else { return XCTFail("no head for \(method) \(target)") }
                XCTAssertEqual(head.method, HTTPMethod(rawValue: method))
                XCTAssertEqual(head.method.rawValue, method)
                XCTAssertEqual(head.uri, target)
                XCTAssertEqual(Array(head.uri.utf8), Array(target.utf8))
            }
        }
    }

    func testRequestTargetsAreHeldToTheirFourForms() throws {
        func target(_ requestLine: String) throws -> String? {
            let parts = try decode("\(requestLine)\r\nHost: h\r\n\r\n")
            guard case .head(let head) = parts.first else { return nil }
            return head.uri
        }
        for refused in ["GET x HTTP/1.1", "GET ../x HTTP/1.1", "GET ?a HTTP/1.1", "GET example.com:80 HTTP/1.1",
                        "GET /index.html#.png HTTP/1.1", "GET /a?b#c HTTP/1.1", "GET http://h/a#b HTTP/1.1",
                        "GET http://h#/a HTTP/1.1", "OPTIONS *# HTTP/1.1",
                        "GET * HTTP/1.1", "options * HTTP/1.1", "GET http:///x HTTP/1.1", "GET http:// HTTP/1.1",
                        "GET http://user@h/x HTTP/1.1", "GET ftp://h/x HTTP/1.1", "GET http:/h/x HTTP/1.1",
                        "GET \\h/x HTTP/1.1"] {
            XCTAssertEqual(decodeError("\(refused)\r\nHost: h\r\n\r\n"), .badRequest("invalid request target"), refused)
        }
        XCTAssertEqual(try target("OPTIONS * HTTP/1.1"), "*")
        XCTAssertEqual(try target("CONNECT example.com:443 HTTP/1.1"), "example.com:443", "answered as any CONNECT is")
        XCTAssertEqual(try target("GET //h/x HTTP/1.1"), "//h/x", "an origin-form path that starts with two slashes")
    }

    /// A request's `Host`, and an absolute-form target's authority, are of ``HostSyntax``'s form: 400 otherwise, as
    /// nginx answers "client sent invalid host header".
    func testAHostIsHeldToTheFormOfAnAuthority() throws {
        for host in ["example.com", "Example.COM:8080", "127.0.0.1:19700", "[::1]:443", ""] {
            let parts = try decode("GET / HTTP/1.1\r\nHost: \(host)\r\n\r\n")
            guard case .head(let head) = parts.first else { return XCTFail(host) }
            XCTAssertEqual(head.headers["host"], [host])
        }
        for host in ["a/b", "user@example.com", "example.com:x", "a..b", "[::1", "::1", "a\\b", "a?b"] {
            XCTAssertEqual(decodeError("GET / HTTP/1.1\r\nX-A: 1\r\nHost: \(host)\r\n\r\n"), .badRequest("invalid Host"), host)
        }
        // In a target `/` and `?` end the authority: `http://a/b/x` is `a` and a path.
        for authority in ["user@example.com", "example.com:x", "a..b", "[::1", "::1", "a\\b"] {
            XCTAssertEqual(decodeError("GET http://\(authority)/x HTTP/1.1\r\nHost: h\r\n\r\n"),
                           .badRequest("invalid request target"), authority)
        }
        XCTAssertEqual(decodeError("GET / HTTP/1.0\r\nHost: a/b\r\n\r\n"), .badRequest("invalid Host"),
                       "an HTTP/1.0 request needs no Host, but one it sends is held to the form")
    }

    /// RFC 9112 section 6.1: an HTTP/1.0 request with `Transfer-Encoding` has faulty framing; nginx answers 400 too.
    func testAnHTTP10RequestWithTransferEncodingIsRefused() throws {
        for coding in ["chunked", "gzip"] {
            XCTAssertEqual(decodeError("POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: \(coding)\r\n\r\n0\r\n\r\n"),
                           .badRequest("Transfer-Encoding in an HTTP/1.0 request"), coding)
        }
        let parts = try decode("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        XCTAssertEqual(parts.count, 2, "the same request in HTTP/1.1 passes: \(parts)")
        XCTAssertEqual(try decode("POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nok").count, 3,
                       "an HTTP/1.0 body framed by its length passes")
    }

    func testAnAbsoluteFormTargetIsPassedOnInOriginFormWithItsAuthorityAsTheHost() throws {
        func head(_ request: String) throws -> HTTPRequestHead? {
            for byteByByte in [false, true] {
                let parts = try decode(request, byteByByte: byteByByte)
                guard case .head(let head) = parts.first else { return nil }
                if !byteByByte { return head }
            }
            return nil
        }
        let full = try XCTUnwrap(head("GET hTTp://Other.Example:8080/p/q?r=1 HTTP/1.1\r\nX-A: 1\r\nHost: a\r\nX-B: 2\r\n\r\n"))
        XCTAssertEqual(full.uri, "/p/q?r=1")
        XCTAssertEqual(full.headers.map { "\($0.name): \($0.value)" }, ["Host: Other.Example:8080", "X-A: 1", "X-B: 2"])
        XCTAssertEqual(try head("GET https://h HTTP/1.1\r\nHost: h\r\n\r\n")?.uri, "/")
        XCTAssertEqual(try head("GET http://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n")?.uri, "/?q=1")
        XCTAssertEqual(try head("OPTIONS http://h HTTP/1.1\r\nHost: h\r\n\r\n")?.uri, "*")
        let old = try XCTUnwrap(head("GET http://h/x HTTP/1.0\r\n\r\n"))
        XCTAssertEqual(old.headers["host"], ["h"], "HTTP/1.0 needs no Host; the target's becomes it")
        XCTAssertEqual(decodeError("GET http://h/x HTTP/1.1\r\n\r\n"), .badRequest("missing or duplicate Host"),
                       "an HTTP/1.1 request sends Host all the same (RFC 9112 section 3.2)")
    }

    func testEmptyLinesBeforeARequestAreSkippedAndABareCRIsRefused() throws {
        for byteByByte in [false, true] {
            let parts = try decode("\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n\r\nGET /y HTTP/1.1\r\nHost: h\r\n\r\n",
                                   byteByByte: byteByByte)
            XCTAssertEqual(parts.compactMap { if case .head(let head) = $0 { head.uri } else { nil } }, ["/x", "/y"])
        }
        assertBadRequest("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    }

    func testHostIsRequiredOnceOnHTTP11() throws {
        assertBadRequest("GET / HTTP/1.1\r\n\r\n")
        assertBadRequest("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        XCTAssertEqual(try decode("GET / HTTP/1.0\r\n\r\n").count, 2)
    }
}

@testable import ALBHTTP
import NIOCore
import NIOHTTP1
import XCTest

/// A request whose fields go to its backend as the lines the client sent (``HTTP1FieldLines``) must reach the
/// backend as the same bytes the proxy writes when it reads the fields as strings: the same fields, in the same
/// order, the same framing.
final class RequestFieldLinesTests: XCTestCase {
    /// What a request decoder delivers when its output takes lines.
    private final class LinesOutput: HTTPRequestDecoderOutput {
        let takesFieldLines: Bool
        var heads: [(head: HTTPRequestHead, summary: HTTP1HeadSummary?, lines: HTTP1FieldLines?)] = []
        var ends = 0

        init(takesFieldLines: Bool) { self.takesFieldLines = takesFieldLines }

        func requestHeadStarted() {}
        func receivedHTTP2Preface() {}
        func received(_ part: HTTPServerRequestPart) {
            switch part {
            case .head(let head): self.heads.append((head, nil, nil))
            case .body: break
            case .end: self.ends += 1
            }
        }
        func received(head: HTTPRequestHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines) {
            self.heads.append((head, summary, fieldLines))
        }
    }

    private func decodeHeads(_ input: String, takesFieldLines: Bool, byteByByte: Bool = false) throws -> LinesOutput {
        var decoder = StrictHTTPRequestDecoder()
        return try decodeAll(input, decoder: &decoder, into: LinesOutput(takesFieldLines: takesFieldLines), byteByByte: byteByByte)
    }

    func testAnAbsoluteFormTargetsFieldsComeAsFieldsWithItsAuthorityAsTheHost() throws {
        for byteByByte in [false, true] {
            let output = try decodeHeads("GET http://other.example/x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
                                         takesFieldLines: true, byteByByte: byteByByte)
            let head = try XCTUnwrap(output.heads.first)
            XCTAssertNil(head.lines, "the Host is edited: not passed on as sent")
            XCTAssertEqual(head.head.uri, "/x")
            XCTAssertEqual(head.head.headers.map { "\($0.name): \($0.value)" }, ["Host: other.example", "Accept: */*"])
        }
    }

    func testAnInvalidHostIsRefusedOnTheLinesPathToo() {
        for byteByByte in [false, true] {
            XCTAssertThrowsError(try decodeHeads("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", takesFieldLines: true,
                                                 byteByByte: byteByByte)) {
                XCTAssertEqual($0 as? HTTPEdgeError, .badRequest("invalid Host"))
            }
        }
    }

    private static let forwarding = ForwardingContext(
        clientIP: "192.0.2.7", clientPort: 40_000, listenerPort: 8080, scheme: "https", loadBalancerName: "alb-1",
        clientCertificate: ClientCertificateInfo(subjectDN: "CN=client", issuerDN: "CN=ca", fingerprint: "ab12", verify: "SUCCESS"))

    private static var optionSets: [ForwardedHeaderOptions] {
        var all = ForwardedHeaderOptions(xForwardedFor: true, xForwardedProto: true, xForwardedPort: true, xForwardedHost: true,
                                         xForwardedClientSrcPort: true, slbId: true)
        all.clientCertSubjectDN = true
        all.clientCertIssuerDN = true
        all.clientCertFingerprint = true
        all.clientCertClientVerify = true
        return [ForwardedHeaderOptions(), ForwardedHeaderOptions(xForwardedFor: false), all]
    }

    /// Requests whose lines are passed on: the hop-by-hop and forwarding fields in every place, each framing.
    private static let passedOn: [String] = [
        "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: keep-alive\r\nHost: h\r\nKeep-Alive: timeout=5\r\nAccept: */*\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.9.9.9\r\nSLB-ID: spoofed\r\nAccept: */*\r\n\r\n",
        "GET / HTTP/1.1\r\nX-Forwarded-Proto: http\r\nHost: h\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Port: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Clientcert-subjectdn: CN=evil\r\nX-Forwarded-Client-srcport: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nTrailer: x\r\nProxy-Connection: keep-alive\r\nCookie: a=b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
        "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "POST /up HTTP/1.1\r\nHost: h\r\n\r\n",
        "PUT /up HTTP/1.0\r\nHost: h\r\n\r\n",
        "DELETE /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
    ]

    /// Requests whose fields are read after all: by the decoder (equal lengths folded, `Connection` naming another
    /// field, an upgrade) or by the proxy (`Expect`, `TRACE`).
    private static let readAsFields: [String] = [
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc",
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: x-secret\r\nX-Secret: 1\r\nAccept: */*\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nClose: 1\r\n\r\n",
        "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        "TRACE / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
    ]

    /// The bytes the backend gets when the proxy reads the fields, as the backend connection writes them.
    private static func bytesFromFields(_ head: HTTPRequestHead, options: ForwardedHeaderOptions) -> (String, Bool) {
        let backend = ProxyHeaders.backendRequestHead(from: head, forwarding: Self.forwarding, options: options)
        let (framed, chunked) = backend.framedForHTTP1()
        let bytes = ByteBufferAllocator().http1RequestHead(framed)
        return (bytes.map { String(buffer: $0) } ?? "refused", chunked)
    }

    func testLinesGiveTheBackendTheBytesOfReadFields() throws {
        for input in Self.passedOn {
            for byteByByte in [false, true] {
                let asLines = try self.decodeHeads(input, takesFieldLines: true, byteByByte: byteByByte)
                let asFields = try self.decodeHeads(input, takesFieldLines: false, byteByByte: byteByByte)
                let delivered = try XCTUnwrap(asLines.heads.first, input)
                let lines = try XCTUnwrap(delivered.lines, "came as fields: \(input)")
                let summary = try XCTUnwrap(delivered.summary)
                XCTAssertEqual(asLines.ends, asFields.ends, input)
                let leftOut = try XCTUnwrap(ProxyHeaders.linesLeftOut(of: delivered.head, summary: summary), input)
                let fieldsHead = try XCTUnwrap(asFields.heads.first).head
                XCTAssertEqual(delivered.head.withFields(of: lines), fieldsHead, input)
                let readSummary = ProxyHeaders.RequestFieldSummary(fieldsHead.headers)
                let linesSummary = ProxyHeaders.RequestFieldSummary(summary, version: delivered.head.version)
                XCTAssertEqual(linesSummary.isKeepAlive(delivered.head), readSummary.isKeepAlive(fieldsHead), input)
                XCTAssertEqual(linesSummary.hasBody, readSummary.hasBody, input)
                for options in Self.optionSets {
                    let (head, chunked) = ProxyHeaders.backendRequestHead(
                        from: delivered.head, passingOn: lines, summary: summary, forwarding: Self.forwarding, options: options)
                    let written = try XCTUnwrap(ByteBufferAllocator().http1RequestHead(head, fieldLines: lines, leavingOut: leftOut))
                    let (expected, expectedChunked) = Self.bytesFromFields(fieldsHead, options: options)
                    XCTAssertEqual(String(buffer: written), expected, input)
                    XCTAssertEqual(chunked, expectedChunked, input)
                    XCTAssertEqual(lines.headers(leavingOut: leftOut, followedBy: head.headers), ProxyHeaders.backendRequestHead(
                        from: fieldsHead, forwarding: Self.forwarding, options: options).headers, input)
                }
            }
        }
    }

    func testRequestsThatNeedTheirFieldsReadAreNotPassedOnAsLines() throws {
        for input in Self.readAsFields {
            let asLines = try self.decodeHeads(input, takesFieldLines: true)
            let asFields = try self.decodeHeads(input, takesFieldLines: false)
            let delivered = try XCTUnwrap(asLines.heads.first, input)
            if let lines = delivered.lines, let summary = delivered.summary {
                // Only the proxy can tell: it reads them then.
                XCTAssertNil(ProxyHeaders.linesLeftOut(of: delivered.head, summary: summary), input)
                XCTAssertEqual(delivered.head.withFields(of: lines), asFields.heads.first?.head, input)
            } else {
                XCTAssertEqual(delivered.head, asFields.heads.first?.head, input)
            }
        }
    }

    /// Passed on as the client sent them: the spaces around a value and bytes beyond ASCII, which the fields'
    /// strings lose (trimmed, or replaced by U+FFFD).
    func testLinesKeepTheClientsBytes() throws {
        let input = Array("GET / HTTP/1.1\r\nHost: h\r\nX-Note:  spaced\t \r\nX-Raw: caf".utf8) + [0xE9] + Array("\r\n\r\n".utf8)
        var decoder = StrictHTTPRequestDecoder()
        let output = LinesOutput(takesFieldLines: true)
        var buffer = ByteBuffer(bytes: input)
        while try decoder.decode(&buffer, into: output) == .continue {}
        let delivered = try XCTUnwrap(output.heads.first)
        let summary = try XCTUnwrap(delivered.summary)
        let lines = try XCTUnwrap(delivered.lines)
        let (head, _) = ProxyHeaders.backendRequestHead(
            from: delivered.head, passingOn: lines, summary: summary, forwarding: Self.forwarding, options: ForwardedHeaderOptions())
        let leftOut = try XCTUnwrap(ProxyHeaders.linesLeftOut(of: delivered.head, summary: summary))
        let written = try XCTUnwrap(ByteBufferAllocator().http1RequestHead(head, fieldLines: lines, leavingOut: leftOut))
        XCTAssertEqual(Array(written.readableBytesView),
                       Array("GET / HTTP/1.1\r\nHost: h\r\nX-Note:  spaced\t \r\nX-Raw: caf".utf8) + [0xE9]
                        + Array("\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n".utf8))
    }

    /// The lines are a slice of the connection's input: the bytes that arrive after them, written into the same
    /// buffer, do not change lines still held (a request waiting for its backend connection).
    func testHeldLinesKeepTheirBytesWhileTheInputGoesOn() throws {
        var decoder = StrictHTTPRequestDecoder()
        let output = LinesOutput(takesFieldLines: true)
        var input = ByteBuffer(string: "GET /1 HTTP/1.1\r\nHost: one\r\nAccept: a\r\n\r\nGET /2 HTTP/1.1\r\nHo")
        while try decoder.decode(&input, into: output) == .continue {}
        let held = try XCTUnwrap(output.heads.first?.lines)
        input.discardReadBytes()
        input.writeString("st: two\r\n\r\n")
        while try decoder.decode(&input, into: output) == .continue {}
        XCTAssertEqual(String(buffer: held.bytes), "Host: one\r\nAccept: a\r\n")
        XCTAssertEqual(output.heads.map(\.head.uri), ["/1", "/2"])
        XCTAssertEqual(String(buffer: try XCTUnwrap(output.heads.last?.lines).bytes), "Host: two\r\n")
        XCTAssertEqual(held.first(lowercased: "host"), "one")
        XCTAssertEqual(held.first(lowercased: "accept"), "a")
        XCTAssertNil(held.first(lowercased: "cookie"))
    }

    /// Each name a request's summary marks as forwarding is one of ``ProxyHeaders/forwarding``, and every one of
    /// those is marked, in any case; a response's are not looked at for them.
    func testTheSummaryMarksExactlyTheForwardingFields() throws {
        for name in ProxyHeaders.forwarding {
            for spelling in [name, name.uppercased()] {
                let marked = Array(spelling.utf8).withUnsafeBytes { HTTP1HeadSummary.Names.ofRequestOnly($0) }
                XCTAssertEqual(marked, .forwarding, spelling)
            }
        }
        for name in ["x-forwarded-fox", "slb-ix", "x-forwarded", "expect", "accept", "x-forwarded-clientcert"] {
            let marked = Array(name.utf8).withUnsafeBytes { HTTP1HeadSummary.Names.ofRequestOnly($0) }
            XCTAssertNotEqual(marked, .forwarding, name)
        }
        var summary = HTTP1HeadSummary()
        try Array("x-forwarded-for".utf8).withUnsafeBytes { try summary.read(position: 0, name: $0, value: UnsafeRawBufferPointer(start: nil, count: 0)) }
        XCTAssertFalse(summary.present.contains(.forwarding))
        summary = HTTP1HeadSummary(readsRequest: true)
        try Array("x-forwarded-for".utf8).withUnsafeBytes { try summary.read(position: 0, name: $0, value: UnsafeRawBufferPointer(start: nil, count: 0)) }
        XCTAssertTrue(summary.present.contains(.forwarding))
    }
}

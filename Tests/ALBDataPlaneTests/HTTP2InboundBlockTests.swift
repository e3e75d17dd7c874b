import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import XCTest

@testable import ALBDataPlane

/// ``HTTP2InboundBlock`` against nio-http2's own validation, which the listener switches off: each block goes from
/// a nio-http2 client that checks nothing to a nio-http2 server that validates, and its verdict, ours and the
/// one expected must agree.
final class HTTP2InboundBlockTests: XCTestCase {
    private static let base: [(String, String)] = [
        (":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/"),
    ]

    private static let requests: [(fields: [(String, String)], valid: Bool)] = [
        (base, true),
        (base + [("accept", "*/*"), ("user-agent", "t/1"), ("x_y.z~!#$%&'*+-^`|", "1")], true),
        (base + [("te", "trailers")], true),
        (base + [("cookie", "a=b; \tc=d"), ("x-obs", "caf\u{e9}")], true),
        ([(":method", "CONNECT"), (":authority", "a:443")], true),
        // Not a name of HPACK's static table, which the client's encoder would match in any case and send lowercase.
        (base + [("X-Custom", "x")], false),
        (base + [("x y", "1")], false),
        (base + [("x\u{7f}", "1")], false),
        (base + [("x:y", "1")], false),
        (base + [("connection", "close")], false),
        (base + [("keep-alive", "1")], false),
        (base + [("proxy-connection", "x")], false),
        (base + [("transfer-encoding", "chunked")], false),
        (base + [("upgrade", "h2c")], false),
        (base + [("te", "gzip")], false),
        (base + [("te", "Trailers")], false),
        (base + [("x", "a\rb")], false),
        (base + [("x", "a\nb")], false),
        (base + [("x", "a\u{0}b")], false),
        ([(":method", "GET"), ("accept", "x"), (":scheme", "https"), (":path", "/")], false),
        (base + [(":path", "/again")], false),
        ([(":foo", "1")] + base, false),
        ([(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":authority", "a"),
          (":path", "/")], false),
        ([(":method", "GET"), (":authority", "a"), (":path", "/")], false),
        ([(":method", "GET"), (":scheme", "https"), (":authority", "a")], false),
        ([(":scheme", "https"), (":authority", "a"), (":path", "/")], false),
        ([(":method", "GET"), (":scheme", "https"), (":path", "")], false),
        ([(":method", "GET"), (":scheme", "https"), (":path", "/a b")], false),
        ([(":method", "GET"), (":scheme", "https"), (":authority", "a\u{1}"), (":path", "/")], false),
        (base + [(":status", "200")], false),
        ([(":method", "CONNECT"), (":authority", "a:443"), (":path", "/")], false),
        ([(":method", "CONNECT")], false),
        ([(":", "x")] + base, false),
    ]

    private static let trailers: [(fields: [(String, String)], valid: Bool)] = [
        ([("grpc-status", "0"), ("grpc-message", "ok")], true),
        ([("te", "gzip")], true),
        ([(":path", "/")], false),
        ([("connection", "x")], false),
        ([("X-Upper", "1")], false),
        ([("a", "b\r")], false),
    ]

    func testRequestBlocksAreJudgedAsNIOHTTP2JudgesThem() throws {
        try Self.judge(Self.requests, asTrailers: false, ours: { _ = try HTTP2InboundBlock.validateRequest($0) })
        // A pseudo-header in capitals (nio-http2's client encoder would send it lowercase, as above).
        XCTAssertThrowsError(try HTTP2InboundBlock.validateRequest(
            HPACKHeaders([(":Method", "GET"), (":scheme", "https"), (":path", "/")])))
    }

    func testARequestsContentLengthIsReadWhereItsBlockIsChecked() throws {
        let request = [(":method", "POST"), (":scheme", "https"), (":authority", "a"), (":path", "/")]
        func length(_ values: [String]) throws -> Int? {
            try HTTP2InboundBlock.validateRequest(HPACKHeaders(request + values.map { ("content-length", $0) }))
        }
        XCTAssertNil(try length([]))
        XCTAssertEqual(try length(["0"]), 0)
        XCTAssertEqual(try length(["1024"]), 1024)
        XCTAssertEqual(try length(["5", "5"]), 5, "repeated, the same")
        XCTAssertEqual(try length(["999999999999999999"]), 999_999_999_999_999_999)
        for malformed in [[""], ["-1"], ["+5"], ["5 "], ["5, 5"], ["0x10"], ["1000000000000000000"], ["5", "6"]] {
            XCTAssertThrowsError(try length(malformed), "\(malformed)")
        }
        XCTAssertNoThrow(try HTTP2InboundBlock.validateTrailers(HPACKHeaders([("content-length", "x")])),
                         "a trailer's content-length frames nothing")
    }

    /// Beyond nio-http2: a field value holds no control byte but HTAB (RFC 9110 section 5.5), as an HTTP/1 one, which
    /// is what the backend is sent, and neither starts nor ends with SP or HTAB (RFC 9113 section 8.2.1); nio-http2
    /// refuses NUL, LF and CR only.
    func testFieldValuesAreThoseAnHTTP1MessageMayCarry() throws {
        let base = [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")]
        for value in ["a\u{1}b", "a\u{7f}b", "\u{1b}[31m", "a\u{1f}", " a", "a ", "\ta", "a\t", " "] {
            XCTAssertThrowsError(try HTTP2InboundBlock.validateRequest(HPACKHeaders(base + [("x", value)])), value.debugDescription)
            XCTAssertThrowsError(try HTTP2InboundBlock.validateTrailers(HPACKHeaders([("x", value)])), value.debugDescription)
        }
        for value in ["a\tb", "caf\u{e9}", "a b", "", String(repeating: "v", count: 40) + "\u{7e}"] {
            XCTAssertNoThrow(try HTTP2InboundBlock.validateRequest(HPACKHeaders(base + [("x", value)])), value.debugDescription)
        }
    }

    /// Beyond nio-http2: RFC 9113 section 8.3.1, a `host` that names another authority than `:authority`.
    func testARequestWhoseHostDiffersFromItsAuthorityIsMalformed() throws {
        let pseudo = [(":method", "GET"), (":scheme", "https"), (":authority", "example.com:8443"), (":path", "/")]
        func judge(_ fields: [(String, String)]) -> Bool {
            do {
                try HTTP2InboundBlock.validateRequest(HPACKHeaders(fields))
                return true
            } catch {
                return false
            }
        }
        XCTAssertTrue(judge(pseudo))
        XCTAssertTrue(judge(pseudo + [("host", "example.com:8443")]))
        XCTAssertTrue(judge(pseudo + [("host", "EXAMPLE.com:8443")]), "a host name's case does not matter")
        XCTAssertFalse(judge(pseudo + [("host", "other.example")]))
        XCTAssertFalse(judge(pseudo + [("host", "example.com")]), "compared as sent: the port is part of it")
        XCTAssertFalse(judge(pseudo + [("host", "example.com:8443"), ("host", "other.example")]))
        XCTAssertThrowsError(try HTTP2InboundBlock.validateRequest(HPACKHeaders(pseudo + [("host", "other.example")]))) {
            XCTAssertTrue($0 is HTTP2InboundBlock.HostDiffersFromAuthority, "\($0)")
        }
        let withoutAuthority = [(":method", "GET"), (":scheme", "https"), (":path", "/"), ("host", "other.example")]
        XCTAssertTrue(judge(withoutAuthority), "a host alone names the authority")
        XCTAssertNoThrow(try HTTP2InboundBlock.validateTrailers(HPACKHeaders([("host", "other.example")])))
    }

    /// Beyond nio-http2: the authority (`:authority`, or `host` without one) is there, not empty, and of
    /// ``HostSyntax``'s form, as an HTTP/1.1 request's `Host` is; userinfo in `:authority` is forbidden by RFC 9113
    /// section 8.3.1.
    func testARequestsAuthorityIsHeldToTheFormOfAHost() throws {
        let base = [(":method", "GET"), (":scheme", "https"), (":path", "/")]
        func error(_ fields: [(String, String)]) -> Error? {
            do {
                try HTTP2InboundBlock.validateRequest(HPACKHeaders(base + fields))
                return nil
            } catch {
                return error
            }
        }
        for good in ["example.com", "example.com:8443", "127.0.0.1:80", "[::1]:443"] {
            XCTAssertNil(error([(":authority", good)]), good)
            XCTAssertNil(error([("host", good)]), good)
        }
        for bad in ["a/b", "user@example.com", "example.com:x", "a..b", "[::1", "a\\b"] {
            XCTAssertTrue(error([(":authority", bad)]) is HTTP2InboundBlock.InvalidAuthority, bad)
            XCTAssertTrue(error([("host", bad)]) is HTTP2InboundBlock.InvalidAuthority, bad)
        }
        XCTAssertNotNil(error([(":authority", "a b")]), "a space in a pseudo-header's value: nio-http2's rule")
        XCTAssertTrue(error([("host", "a b")]) is HTTP2InboundBlock.InvalidAuthority)
        // RFC 9113 section 8.3.1: an authority there is, and not empty.
        XCTAssertTrue(error([]) is HTTP2InboundBlock.InvalidAuthority, "neither :authority nor host")
        XCTAssertTrue(error([(":authority", "")]) is HTTP2InboundBlock.InvalidAuthority)
        XCTAssertTrue(error([("host", "")]) is HTTP2InboundBlock.InvalidAuthority)
        XCTAssertNoThrow(try HTTP2InboundBlock.validateTrailers(HPACKHeaders([("host", "a/b")])),
                         "a trailer's host names nothing")
    }

    /// Beyond nio-http2: RFC 9113 section 8.3.1, a `:path` is a path, or the `*` of an `OPTIONS`.
    func testARequestsPathIsAPathOrTheAsteriskOfAnOptions() throws {
        func judge(_ method: String, _ path: String) -> Bool {
            do {
                try HTTP2InboundBlock.validateRequest(HPACKHeaders([(":method", method), (":scheme", "https"),
                                                                    (":authority", "a"), (":path", path)]))
                return true
            } catch {
                return false
            }
        }
        XCTAssertTrue(judge("GET", "/"))
        XCTAssertTrue(judge("GET", "/a/../b?c"))
        XCTAssertTrue(judge("OPTIONS", "*"))
        XCTAssertTrue(judge("OPTIONS", "/x"))
        for path in ["x", "../x", "?a", "*x", "http://h/x", "/caf\u{e9}"] {
            XCTAssertFalse(judge("GET", path), path)
        }
        XCTAssertTrue(judge("GET", "/a?q={\"b\"}|^`<>\\"), "visible ASCII, as an HTTP/1 target may carry")
        for method in ["G(T", "G:T", "G\"T", "GÉT"] {
            XCTAssertFalse(judge(method, "/"), "a method is a token: \(method)")
        }
        XCTAssertTrue(judge("PURGE", "/"))
        XCTAssertFalse(judge("GET", "*"))
        XCTAssertFalse(judge("options", "*"), "methods are case-sensitive")
    }

    func testTrailerBlocksAreJudgedAsNIOHTTP2JudgesThem() throws {
        try Self.judge(Self.trailers, asTrailers: true, ours: HTTP2InboundBlock.validateTrailers)
    }

    /// Each case's verdict, ours (`ours` throwing or not) and nio-http2's, against the one expected.
    private static func judge(_ cases: [(fields: [(String, String)], valid: Bool)], asTrailers: Bool,
                              ours: (HPACKHeaders) throws -> Void) throws {
        for (fields, valid) in cases {
            let block = HPACKHeaders(fields)
            XCTAssertEqual((try? ours(block)) != nil, valid, "\(fields)")
            XCTAssertEqual(try Self.nioAccepts(block, asTrailers: asTrailers), valid, "nio-http2 on \(fields)")
        }
    }

    /// Whether a nio-http2 server with its validation on passes `block` on: as a request's headers, or as the
    /// trailers of a request it took.
    private static func nioAccepts(_ block: HPACKHeaders, asTrailers: Bool) throws -> Bool {
        var unchecked = NIOHTTP2Handler.ConnectionConfiguration()
        unchecked.headerBlockValidation = .disabled
        unchecked.contentLengthValidation = .disabled
        let client = EmbeddedChannel()
        try client.pipeline.syncOperations.addHandler(
            NIOHTTP2Handler(mode: .client, connectionConfiguration: unchecked, streamConfiguration: .init()))
        let server = EmbeddedChannel()
        try server.pipeline.syncOperations.addHandler(
            NIOHTTP2Handler(mode: .server, connectionConfiguration: .init(), streamConfiguration: .init()))
        defer {
            _ = try? client.finish()
            _ = try? server.finish()
        }
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try Self.exchangeBytes(client, server)

        var sent = [block]
        if asTrailers {
            sent.insert(HPACKHeaders(Self.base), at: 0)
        }
        for (index, headers) in sent.enumerated() {
            let last = index == sent.count - 1
            client.write(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: headers, endStream: asTrailers == last))),
                         promise: nil)
            client.flush()
            do {
                try Self.exchangeBytes(client, server)
            } catch {
                return false  // nio-http2's stream error, fired in the server's pipeline
            }
        }
        var headerFrames = 0
        while let frame = try server.readInbound(as: HTTP2Frame.self) {
            if case .headers = frame.payload, frame.streamID == 1 { headerFrames += 1 }
        }
        return headerFrames == sent.count
    }

    /// Moves bytes between the two until neither has anything more to send.
    private static func exchangeBytes(_ client: EmbeddedChannel, _ server: EmbeddedChannel) throws {
        var moved = true
        while moved {
            moved = false
            while let data = try client.readOutbound(as: IOData.self) {
                guard case .byteBuffer(let bytes) = data else { continue }
                moved = true
                try server.writeInbound(bytes)
            }
            while let data = try server.readOutbound(as: IOData.self) {
                guard case .byteBuffer(let bytes) = data else { continue }
                moved = true
                try client.writeInbound(bytes)
            }
        }
    }
}

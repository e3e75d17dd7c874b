@testable import ALBHTTP
import NIOHTTP1
import XCTest

final class SmoothWeightedRoundRobinTests: XCTestCase {
    func testThreeToOneOverEightPicks() {
        var wrr = SmoothWeightedRoundRobin([(element: "a", weight: 3), (element: "b", weight: 1)])
        let picks = (0..<8).compactMap { _ in wrr.next() }
        XCTAssertEqual(picks, ["a", "a", "b", "a", "a", "a", "b", "a"])
        XCTAssertEqual(picks.filter { $0 == "a" }.count, 6)
        XCTAssertEqual(picks.filter { $0 == "b" }.count, 2)
    }

    func testNginxSequenceForFiveOneOne() {
        var wrr = SmoothWeightedRoundRobin([(element: "a", weight: 5), (element: "b", weight: 1), (element: "c", weight: 1)])
        let picks = (0..<7).compactMap { _ in wrr.next() }
        XCTAssertEqual(picks, ["a", "a", "b", "a", "c", "a", "a"])
    }

    func testWeightZeroIsNeverPicked() {
        var wrr = SmoothWeightedRoundRobin([(element: "a", weight: 0), (element: "b", weight: 2), (element: "c", weight: 0)])
        XCTAssertTrue((0..<50).allSatisfy { _ in wrr.next() == "b" })
    }

    func testAllZeroIsEmpty() {
        var wrr = SmoothWeightedRoundRobin([(element: "a", weight: 0)])
        XCTAssertTrue(wrr.isEmpty)
        XCTAssertNil(wrr.next())
    }
}

final class ClientIPResolverTests: XCTestCase {
    func testTrustAllTakesLeftmost() throws {
        let resolver = try XCTUnwrap(ClientIPResolver(trustedProxies: ["0.0.0.0/0"]))
        XCTAssertEqual(resolver.resolve(peer: "10.0.0.1", forwardedFor: ["1.1.1.1, 2.2.2.2", "3.3.3.3"]), "1.1.1.1")
    }

    func testRightToLeftSkipsTrusted() throws {
        let resolver = try XCTUnwrap(ClientIPResolver(trustedProxies: ["10.0.0.0/8", "192.168.1.7"]))
        XCTAssertEqual(resolver.resolve(peer: "10.0.0.1", forwardedFor: ["1.1.1.1, 2.2.2.2, 192.168.1.7, 10.9.9.9"]), "2.2.2.2")
        XCTAssertEqual(resolver.resolve(peer: "10.0.0.1", forwardedFor: ["10.1.1.1, 10.2.2.2"]), "10.1.1.1")
    }

    func testNoHeaderOrGarbageKeepsPeer() throws {
        let resolver = try XCTUnwrap(ClientIPResolver(trustedProxies: ["10.0.0.0/8"]))
        XCTAssertEqual(resolver.resolve(peer: "10.0.0.1", forwardedFor: []), "10.0.0.1")
        XCTAssertEqual(resolver.resolve(peer: "10.0.0.1", forwardedFor: ["1.1.1.1, not-an-ip"]), "10.0.0.1")
    }

    func testIPv6AndPorts() throws {
        let resolver = try XCTUnwrap(ClientIPResolver(trustedProxies: ["2001:db8::/32"]))
        XCTAssertEqual(resolver.resolve(peer: "::1", forwardedFor: ["[2001:db9::1]:443, 2001:db8::5"]), "2001:db9::1")
        XCTAssertEqual(resolver.resolve(peer: "::1", forwardedFor: ["5.6.7.8:1234, 2001:db8:ffff::1"]), "5.6.7.8")
    }

    func testCIDRParsingAndMatching() throws {
        XCTAssertNil(ClientIPResolver(trustedProxies: ["10.0.0.0/33"]))
        XCTAssertNil(ClientIPResolver(trustedProxies: ["bogus"]))
        let cidr = try XCTUnwrap(CIDR("172.16.0.0/12"))
        XCTAssertTrue(cidr.contains(try XCTUnwrap(IPAddress("172.31.255.255"))))
        XCTAssertFalse(cidr.contains(try XCTUnwrap(IPAddress("172.32.0.0"))))
        XCTAssertEqual(IPAddress("::ffff:1.2.3.4"), .v6(high: 0, low: 0x0000_FFFF_0102_0304))
        XCTAssertNil(IPAddress("1.2.3"))
        XCTAssertNil(IPAddress("1:2:3:4:5:6:7:8:9"))
        XCTAssertNil(IPAddress("1::2::3"))
    }
}

final class ProxyHeadersTests: XCTestCase {
    func testBackendHeadRemovesHopByHopAndAddsForwardingHeaders() {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "example.com")
        headers.add(name: "Connection", value: "keep-alive, X-Secret")
        headers.add(name: "X-Secret", value: "s")
        headers.add(name: "Keep-Alive", value: "timeout=5")
        headers.add(name: "Upgrade", value: "websocket")
        headers.add(name: "TE", value: "trailers")
        headers.add(name: "X-Forwarded-For", value: "1.1.1.1")
        headers.add(name: "X-Forwarded-Proto", value: "spoofed")
        let client = HTTPRequestHead(version: .http1_0, method: .GET, uri: "/p", headers: headers)
        let head = ProxyHeaders.backendRequestHead(
            from: client,
            forwarding: ForwardingContext(clientIP: "9.9.9.9", clientPort: 5555, listenerPort: 80, loadBalancerName: "lb-1"),
            options: ForwardedHeaderOptions(
                xForwardedFor: true, xForwardedProto: true, xForwardedPort: true, xForwardedHost: true,
                xForwardedClientSrcPort: true, slbId: true
            )
        )
        XCTAssertEqual(head.version, .http1_1)
        for name in ["connection", "x-secret", "keep-alive", "upgrade", "te"] {
            XCTAssertFalse(head.headers.contains(name: name), name)
        }
        // Not from a trusted proxy: the client's list is dropped.
        XCTAssertEqual(head.headers["x-forwarded-for"], ["9.9.9.9"])
        XCTAssertEqual(head.headers["x-forwarded-proto"], ["http"])
        XCTAssertEqual(head.headers["x-forwarded-port"], ["80"])
        XCTAssertEqual(head.headers["x-forwarded-host"], ["example.com"])
        XCTAssertEqual(head.headers["x-forwarded-client-srcport"], ["5555"])
        XCTAssertEqual(head.headers["slb-id"], ["lb-1"])
        XCTAssertEqual(head.headers["host"], ["example.com"])
    }

    func testForwardingHeadersAreBelievedOnlyFromATrustedProxy() {
        let headers = HTTPHeaders([
            ("Host", "example.com"), ("X-Forwarded-For", "1.1.1.1"), ("x-forwarded-proto", "https"),
            ("X-Forwarded-Port", "443"), ("X-Forwarded-Host", "front.example"), ("X-Forwarded-Client-Srcport", "7"),
            ("SLB-ID", "front"), ("X-Forwarded-Clientcert-subjectdn", "CN=forged"),
            ("x-forwarded-clientcert-issuerdn", "CN=forged CA"), ("X-Forwarded-Clientcert-Fingerprint", "00"),
            ("X-Forwarded-Clientcert-clientverify", "SUCCESS"), ("X-Other", "kept"),
        ])
        let client = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: headers)
        let none = ForwardedHeaderOptions(xForwardedFor: false)
        var context = ForwardingContext(clientIP: "9.9.9.9", clientPort: 5555, listenerPort: 80, loadBalancerName: "lb")
        // Untrusted, and the listener sets none of them: every one is removed anyway.
        var head = ProxyHeaders.backendRequestHead(from: client, forwarding: context, options: none)
        XCTAssertEqual(head.headers.map(\.name), ["Host", "X-Other"])
        // From a trusted proxy they pass, and its values win over the listener's own.
        context.peerIsTrustedProxy = true
        head = ProxyHeaders.backendRequestHead(from: client, forwarding: context, options: none)
        XCTAssertEqual(head.headers, headers)
        let all = ForwardedHeaderOptions(xForwardedFor: true, xForwardedProto: true, xForwardedPort: true,
                                         xForwardedHost: true, xForwardedClientSrcPort: true, slbId: true)
        head = ProxyHeaders.backendRequestHead(from: client, forwarding: context, options: all)
        XCTAssertEqual(head.headers["x-forwarded-for"], ["1.1.1.1, 9.9.9.9"])
        XCTAssertEqual(head.headers["x-forwarded-proto"], ["https"])
        XCTAssertEqual(head.headers["x-forwarded-port"], ["443"])
        XCTAssertEqual(head.headers["x-forwarded-host"], ["front.example"])
        XCTAssertEqual(head.headers["x-forwarded-client-srcport"], ["7"])
        XCTAssertEqual(head.headers["slb-id"], ["lb"])
    }

    func testTrustedPeer() throws {
        let resolver = try XCTUnwrap(ClientIPResolver(trustedProxies: ["10.0.0.0/8", "::1"]))
        XCTAssertTrue(resolver.trusts(peer: "10.1.2.3"))
        XCTAssertTrue(resolver.trusts(peer: "::1"))
        XCTAssertFalse(resolver.trusts(peer: "11.0.0.1"))
        XCTAssertFalse(resolver.trusts(peer: "not-an-ip"))
    }

    func testChunkedFramingIsKeptAndConnectionCannotStripContentLength() {
        var headers = HTTPHeaders([("Host", "h"), ("Transfer-Encoding", "chunked")])
        var head = ProxyHeaders.backendRequestHead(
            from: HTTPRequestHead(version: .http1_1, method: .POST, uri: "/", headers: headers),
            forwarding: ForwardingContext(clientIP: "1.2.3.4", clientPort: 1, listenerPort: 2, loadBalancerName: ""),
            options: ForwardedHeaderOptions()
        )
        XCTAssertEqual(head.headers["transfer-encoding"], ["chunked"])
        headers = HTTPHeaders([("Host", "h"), ("Content-Length", "3"), ("Connection", "content-length, host")])
        head = ProxyHeaders.backendRequestHead(
            from: HTTPRequestHead(version: .http1_1, method: .POST, uri: "/", headers: headers),
            forwarding: ForwardingContext(clientIP: "1.2.3.4", clientPort: 1, listenerPort: 2, loadBalancerName: ""),
            options: ForwardedHeaderOptions(xForwardedFor: false)
        )
        XCTAssertEqual(head.headers["content-length"], ["3"])
        XCTAssertEqual(head.headers["host"], ["h"])
        XCTAssertFalse(head.headers.contains(name: "x-forwarded-for"))
    }

    func testClientResponseFraming() {
        let chunkedBackend = HTTPResponseHead(
            version: .http1_1,
            status: .ok,
            headers: HTTPHeaders([("Transfer-Encoding", "chunked"), ("Connection", "close")])
        )
        var result = ProxyHeaders.clientResponseHead(from: chunkedBackend, requestMethod: .GET, requestVersion: .http1_1, keepAlive: true)
        XCTAssertEqual(result.head.headers["transfer-encoding"], ["chunked"])
        XCTAssertFalse(result.head.headers.contains(name: "connection"))
        XCTAssertFalse(result.closeAfter)

        result = ProxyHeaders.clientResponseHead(from: chunkedBackend, requestMethod: .GET, requestVersion: .http1_0, keepAlive: true)
        XCTAssertFalse(result.head.headers.contains(name: "transfer-encoding"))
        XCTAssertEqual(result.head.headers["connection"], ["close"])
        XCTAssertTrue(result.closeAfter)

        result = ProxyHeaders.clientResponseHead(from: chunkedBackend, requestMethod: .HEAD, requestVersion: .http1_1, keepAlive: true)
        XCTAssertFalse(result.head.headers.contains(name: "transfer-encoding"))
        XCTAssertFalse(result.closeAfter)
    }

    func testHeaderValidation() {
        XCTAssertTrue(ProxyHeaders.areValid(HTTPHeaders([("X-A", "fine value")])))
        XCTAssertFalse(ProxyHeaders.areValid(HTTPHeaders([("X-A", "bad\u{0}")])))
        XCTAssertFalse(ProxyHeaders.areValid(HTTPHeaders([("X-A", "bad\r\nInjected: 1")])))
        XCTAssertFalse(ProxyHeaders.areValid(HTTPHeaders([("X A", "v")])))
        XCTAssertFalse(ProxyHeaders.areValid(HTTPHeaders([("", "v")])))
        XCTAssertFalse(ProxyHeaders.areValid(HTTPHeaders([("X-\u{7F}", "v")])))
        XCTAssertTrue(ProxyHeaders.areValid(HTTPHeaders([("!#$%&'*+-.^_`|~09azAZ", "caf\u{E9}\tok")])))
        let tokenChars = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        for byte in UInt8(0)...UInt8(127) {
            let name = "X" + String(UnicodeScalar(byte))
            XCTAssertEqual(ProxyHeaders.areValid(HTTPHeaders([(name, "v")])), tokenChars.contains(byte), "byte \(byte)")
        }
    }

    /// RFC 9110 section 6.5.1: a request's trailers lose what may not be a trailer (framing, routing, modifiers,
    /// authentication, content processing), the hop-by-hop fields and the forwarding ones; the rest keep their order.
    func testRequestTrailersLoseWhatMayNotBeATrailer() {
        let trailers = HTTPHeaders([
            ("X-Checksum", "abc"), ("Content-Length", "99"), ("HOST", "evil"), ("Transfer-Encoding", "x"),
            ("Connection", "close"), ("X-Forwarded-For", "6.6.6.6"), ("Authorization", "Basic x"), ("cookie", "a=b"),
            ("Content-Type", "text/plain"), ("Expect", "100-continue"), ("X-Status", "ok"),
        ])
        XCTAssertEqual(ProxyHeaders.requestTrailersToForward(trailers).map { Array($0.map { "\($0.name): \($0.value)" }) },
                       ["X-Checksum: abc", "X-Status: ok"])
        XCTAssertNil(ProxyHeaders.requestTrailersToForward(HTTPHeaders([("content-length", "1"), ("slb-id", "x")])))
    }

    func testHopByHopFieldsAreLeftOutIgnoringCaseAndOtherFieldsKeepTheirOrder() {
        /// The names that cross the proxy: copied for a request, removed in place from a response (the two
        /// must agree when forwarding fields are kept).
        func passedOn(_ headers: HTTPHeaders, keepForwarding: Bool) -> [String] {
            let copied = ProxyHeaders.fieldsPassedOn(headers, keepForwarding: keepForwarding, extra: 0).map(\.0)
            if keepForwarding {
                var edited = headers
                ProxyHeaders.removeHopByHop(from: &edited)
                XCTAssertEqual(edited.map(\.name), copied, "removed in place as copied")
            }
            return copied
        }
        let plain = HTTPHeaders([("Host", "h"), ("X-A", "1")])
        XCTAssertEqual(passedOn(plain, keepForwarding: true), ["Host", "X-A"])

        let mixed = HTTPHeaders([
            ("Host", "h"), ("CONNECTION", "Keep-Alive, X-Gone, Transfer-Encoding, content-length"),
            ("keep-ALIVE", "timeout=5"), ("X-Gone", "1"), ("Trailer", "x"), ("X-Kept", "2"),
            ("Proxy-Connection", "close"), ("TE", "trailers"), ("connection", " ,\tx-tab\t,"), ("X-Tab", "3"),
            ("Content-Length", "0"), ("X-Forwarded-For", "10.0.0.1"), ("slb-id", "x"),
        ])
        XCTAssertEqual(passedOn(mixed, keepForwarding: true),
                       ["Host", "X-Kept", "Content-Length", "X-Forwarded-For", "slb-id"],
                       "a framing field named in Connection stays")
        XCTAssertEqual(passedOn(mixed, keepForwarding: false), ["Host", "X-Kept", "Content-Length"])
        for (usual, kept) in [("keep-alive", ["Close", "X-A"]), ("KEEP-ALIVE", ["Close", "X-A"]), ("close", ["X-A"]),
                              ("Close", ["X-A"]), ("close, x-a", [])] {
            let headers = HTTPHeaders([("Connection", usual), ("Keep-Alive", "timeout=5"), ("Close", "x"), ("X-A", "1")])
            XCTAssertEqual(passedOn(headers, keepForwarding: true), kept, "Connection: \(usual)")
        }
    }
}

final class FieldCrossingTests: XCTestCase {
    /// The lists' answer, as the switch must give it.
    private func listed(_ name: String) -> ProxyHeaders.Crossing {
        let lowered = name.lowercased()
        if lowered == "connection" { return .connection }
        if ProxyHeaders.hopByHop.contains(lowered) { return .hopByHop }
        if ProxyHeaders.forwarding.contains(lowered) { return .forwarding }
        return .crosses
    }

    /// Every listed name in three cases, each one byte off in every position, and others of every length from 0
    /// to 40 (the lists' lengths among them): the switch answers as the lists do.
    func testTheSwitchOnLengthAnswersAsTheHopByHopAndForwardingLists() {
        var names: [String] = []
        for listed in ProxyHeaders.hopByHop + ProxyHeaders.forwarding {
            names += [listed, listed.uppercased(), listed.prefix(1).uppercased() + listed.dropFirst()]
            for position in listed.indices {
                var changed = listed
                changed.replaceSubrange(position...position, with: listed[position] == "x" ? "y" : "x")
                names.append(changed)
            }
            names += [listed + "s", String(listed.dropLast())]
        }
        for length in 0...40 {
            names.append(String(repeating: "a", count: length))
            names.append(String(repeating: "-", count: length))
        }
        names += ["Host", "User-Agent", "Accept-Encoding", "Content-Length", "Content-Type", "Accept"]
        for name in names {
            XCTAssertEqual(ProxyHeaders.crossing(name), self.listed(name), name)
            XCTAssertEqual(ProxyHeaders.isHopByHop(name), ProxyHeaders.hopByHopIndex(name) != nil, name)
        }
    }
}

final class RequestFieldSummaryTests: XCTestCase {
    /// Every combination of the fields the summary reads (none, one, two of a kind, in other cases, with
    /// neighbours of the same lengths) over HTTP/1.0, 1.1 and 2: its answers are the field-by-field look-ups'.
    func testTheSummaryAnswersAsTheLookUpsDo() {
        let choices: [[(String, String)]] = [
            [], [("Connection", "close")], [("connection", "keep-alive")], [("CONNECTION", "Upgrade, keep-alive")],
            [("Connection", "close"), ("Connection", "keep-alive")], [("Collection", "close")],
        ]
        let others: [[(String, String)]] = [
            [], [("Upgrade", "websocket")], [("Expect", "100-continue")], [("EXPECT", "100-CONTINUE, x")],
            [("Expect", "other")], [("Accept", "100-continue")], [("Transfer-Encoding", "chunked")],
            [("Transfer-Encoding", "gzip, chunked")], [("Content-Length", "0")], [("content-length", "12")],
            [("Content-Length", "0"), ("Content-Length", "5")], [("Content-Length", "5"), ("Content-Length", "0")],
            [("Content-Lengths", "5")], [("Upgrade", "websocket"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                         ("Sec-WebSocket-Version", "13")],
        ]
        for version in [HTTPVersion.http1_0, .http1_1, HTTPVersion(major: 2, minor: 0)] {
            for method in [HTTPMethod.GET, .POST] {
                for connection in choices {
                    for other in others {
                        let headers = HTTPHeaders([("Host", "h")] + connection + other)
                        let head = HTTPRequestHead(version: version, method: method, uri: "/", headers: headers)
                        let summary = ProxyHeaders.RequestFieldSummary(headers)
                        let context = "\(version) \(method) \(headers)"
                        XCTAssertEqual(summary.isKeepAlive(head),
                                       ProxyHeaders.isKeepAlive(headers, version: version), context)
                        XCTAssertEqual(summary.expectsContinue(head), ProxyHeaders.expectsContinue(headers), context)
                        XCTAssertEqual(summary.asksForWebSocket(head), WebSocketHandshake.isRequested(head), context)
                        XCTAssertEqual(summary.hasTransferEncoding, headers.contains(name: "transfer-encoding"), context)
                        let hasBody = headers.contains(name: "transfer-encoding")
                            || (headers.first(name: "content-length").map { $0 != "0" } ?? false)
                        XCTAssertEqual(summary.hasBody, hasBody, context)
                    }
                }
            }
        }
    }
}

final class HeaderLookupTests: XCTestCase {
    /// The proxy's lookups answer as NIO's `first(name:)` and `contains(name:)` do, for names of the same
    /// length, in any case, repeated and absent.
    func testLookupsByLowercaseNameAnswerAsNIOs() {
        let headers = HTTPHeaders([
            ("Content-Type", "text/plain"), ("Content-LENGTH", "5"), ("content-length", "6"),
            ("X-Content-Length", "7"), ("Expect", "100-continue"), ("Upgrade", "websocket"), ("Date", "today"),
        ])
        for name in ["content-length", "content-type", "expect", "upgrade", "date", "transfer-encoding", "host",
                     "x-content-length", "content-lengt", "content-lengthx"] {
            XCTAssertEqual(Self.first(headers, name), headers.first(name: name), name)
            XCTAssertEqual(Self.first(headers, name) != nil, headers.contains(name: name), name)
        }
        XCTAssertEqual(headers.first(lowercased: "content-length"), "5", "the first of two")
        XCTAssertNil(HTTPHeaders().first(lowercased: "host"))
        XCTAssertTrue(headers.contains(lowercased: "upgrade"))
        XCTAssertFalse(headers.contains(lowercased: "host"))
    }

    // The lookups take a StaticString: the names above, spelled out.
    private static func first(_ headers: HTTPHeaders, _ name: String) -> String? {
        switch name {
        case "content-length": headers.first(lowercased: "content-length")
        case "content-type": headers.first(lowercased: "content-type")
        case "expect": headers.first(lowercased: "expect")
        case "upgrade": headers.first(lowercased: "upgrade")
        case "date": headers.first(lowercased: "date")
        case "transfer-encoding": headers.first(lowercased: "transfer-encoding")
        case "host": headers.first(lowercased: "host")
        case "x-content-length": headers.first(lowercased: "x-content-length")
        case "content-lengt": headers.first(lowercased: "content-lengt")
        default: headers.first(lowercased: "content-lengthx")
        }
    }
}

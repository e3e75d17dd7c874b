import ALBHTTP
import NIOHTTP1
import XCTest

/// The compression decision as a table: one row per rule of SPEC section 4 / issue 8.
final class ResponseCompressionPolicyTests: XCTestCase {
    private let http2 = HTTPVersion(major: 2, minor: 0)

    private func response(_ headers: [(String, String)], _ status: HTTPResponseStatus = .ok) -> HTTPResponseHead {
        HTTPResponseHead(version: .http1_1, status: status, headers: HTTPHeaders(headers))
    }

    private func request(_ acceptEncoding: [String], method: HTTPMethod = .GET, version: HTTPVersion = .http1_1)
        -> CompressionRequest
    {
        var headers = HTTPHeaders()
        for value in acceptEncoding { headers.add(name: "Accept-Encoding", value: value) }
        return CompressionRequest(HTTPRequestHead(version: version, method: method, uri: "/", headers: headers))
    }

    func testAcceptEncodingTable() {
        let rows: [(String, [String], AcceptedCodings)] = [
            ("absent", [], .none),
            ("empty", [""], .none),
            ("both", ["gzip, br"], AcceptedCodings(brotli: true, gzip: true)),
            ("curl --compressed", ["deflate, gzip, br, zstd"], AcceptedCodings(brotli: true, gzip: true)),
            ("gzip only", ["gzip"], AcceptedCodings(brotli: false, gzip: true)),
            ("br only, any case", ["BR"], AcceptedCodings(brotli: true, gzip: false)),
            ("x-gzip", ["x-gzip"], AcceptedCodings(brotli: false, gzip: true)),
            ("br refused", ["br;q=0, gzip"], AcceptedCodings(brotli: false, gzip: true)),
            ("br refused, spaces", ["br ; q=0.000 , gzip;q=0.5"], AcceptedCodings(brotli: false, gzip: true)),
            ("gzip refused", ["gzip;q=0, br;q=0.1"], AcceptedCodings(brotli: true, gzip: false)),
            ("star", ["*"], AcceptedCodings(brotli: true, gzip: true)),
            ("star refused", ["*;q=0"], .none),
            ("star but br refused", ["*, br;q=0"], AcceptedCodings(brotli: false, gzip: true)),
            ("star refused but gzip named", ["gzip, *;q=0"], AcceptedCodings(brotli: false, gzip: true)),
            ("identity only", ["identity"], .none),
            ("two fields", ["gzip;q=0", "br"], AcceptedCodings(brotli: true, gzip: false)),
            ("Q upper case", ["br;Q=0"], .none),
            ("q out of range refuses", ["br;q=1.5, gzip;q=2"], .none),
            ("q malformed refuses", ["br;q=abc"], .none),
            ("q=1.000", ["br;q=1.000"], AcceptedCodings(brotli: true, gzip: false)),
            ("other parameter", ["gzip;level=1"], AcceptedCodings(brotli: false, gzip: true)),
            ("deflate, zstd only", ["deflate, zstd"], .none),
        ]
        for (name, fields, expected) in rows {
            XCTAssertEqual(ResponseCompressionPolicy.accepted(fields), expected, name)
        }
    }

    func testDecisionTable() {
        let json = [("content-type", "application/json"), ("content-length", "2048")]
        let png = [("content-type", "image/png"), ("content-length", "2048")]
        let both = ["gzip, br"]
        let rows: [(String, CompressionRequest, HTTPResponseHead, CompressionDecision)] = [
            ("JSON, both accepted: Brotli", request(both), response(json), .init(coding: .brotli, vary: true)),
            ("JSON, gzip only", request(["gzip"]), response(json), .init(coding: .gzip, vary: true)),
            ("PNG, both: Brotli for every type", request(both), response(png), .init(coding: .brotli, vary: true)),
            ("PNG, gzip only: not a gzip type", request(["gzip"]), response(png), .init(coding: nil, vary: true)),
            ("no Accept-Encoding", request([]), response(json), .init(coding: nil, vary: true)),
            ("gzip preferred by q, still Brotli", request(["gzip;q=1, br;q=0.2"]), response(json),
             .init(coding: .brotli, vary: true)),
            ("exactly 1024 bytes", request(both), response([("content-type", "text/plain"), ("content-length", "1024")]),
             .untouched),
            ("1025 bytes", request(both), response([("content-type", "text/plain"), ("content-length", "1025")]),
             .init(coding: .brotli, vary: true)),
            ("no Content-Length (chunked)", request(both), response([("content-type", "text/plain")]), .untouched),
            ("bad Content-Length", request(both), response([("content-length", "2k")]), .untouched),
            ("differing Content-Lengths", request(both), response([("content-length", "2048"), ("content-length", "4096")]),
             .untouched),
            ("already encoded", request(both), response(json + [("content-encoding", "gzip")]), .untouched),
            ("identity encoding counts as encoded", request(both), response(json + [("Content-Encoding", "identity")]),
             .untouched),
            ("no-transform", request(both), response(json + [("cache-control", "public, No-Transform")]), .untouched),
            ("other cache-control", request(both), response(json + [("cache-control", "max-age=60")]),
             .init(coding: .brotli, vary: true)),
            ("206", request(both), response(json, .partialContent), .untouched),
            ("204", request(both), response(json, .noContent), .untouched),
            ("304", request(both), response(json, .notModified), .untouched),
            ("404 with a body", request(both), response(json, .notFound), .init(coding: .brotli, vary: true)),
            ("HEAD: not compressed, but the GET would vary", request(both, method: .HEAD), response(json),
             .init(coding: nil, vary: true)),
            ("HTTP/1.0 client", request(both, version: .http1_0), response(json), .init(coding: nil, vary: true)),
            ("HTTP/2 client", request(both, version: http2), response(json), .init(coding: .brotli, vary: true)),
            ("gzip type with parameters and case", request(["gzip"]),
             response([("content-type", "Text/CSS; charset=utf-8"), ("content-length", "4096")]), .init(coding: .gzip, vary: true)),
            ("gzip, no content type", request(["gzip"]), response([("content-length", "4096")]), .init(coding: nil, vary: true)),
        ]
        for (name, request, response, expected) in rows {
            XCTAssertEqual(ResponseCompressionPolicy.decide(request, response), expected, name)
        }
        for type in ResponseCompressionPolicy.gzipMediaTypes {
            XCTAssertEqual(ResponseCompressionPolicy.decide(request(["gzip"]), response([("content-type", type), ("content-length", "2000")])).coding,
                           .gzip, type)
        }
        XCTAssertEqual(ResponseCompressionPolicy.gzipMediaTypes.count, 9)
        for type in ["text/html", "application/octet-stream", "image/svg+xml", "text/javascript"] {
            XCTAssertNil(ResponseCompressionPolicy.decide(request(["gzip"]), response([("content-type", type), ("content-length", "2000")])).coding,
                         type)
        }
    }

    func testRewriteHTTP1() {
        var head = response([("content-type", "application/json"), ("content-length", "2048"), ("etag", "\"abc\""),
                             ("accept-ranges", "bytes"), ("vary", "Origin")])
        ResponseCompressionPolicy.rewrite(&head, .init(coding: .brotli, vary: true), requestVersion: .http1_1)
        XCTAssertEqual(head.headers["content-encoding"], ["br"])
        XCTAssertFalse(head.headers.contains(name: "content-length"))
        XCTAssertEqual(head.headers["transfer-encoding"], ["chunked"])
        XCTAssertEqual(head.headers["etag"], ["W/\"abc\""])
        XCTAssertFalse(head.headers.contains(name: "accept-ranges"))
        XCTAssertEqual(head.headers[canonicalForm: "vary"], ["Origin", "Accept-Encoding"])
    }

    func testRewriteHTTP2WeakETagAndVaryKept() {
        var head = response([("content-length", "2048"), ("etag", "W/\"abc\""), ("Vary", "accept-encoding")])
        ResponseCompressionPolicy.rewrite(&head, .init(coding: .gzip, vary: true), requestVersion: http2)
        XCTAssertEqual(head.headers["content-encoding"], ["gzip"])
        XCTAssertFalse(head.headers.contains(name: "content-length"))
        XCTAssertFalse(head.headers.contains(name: "transfer-encoding"), "an HTTP/2 stream frames the body itself")
        XCTAssertEqual(head.headers["etag"], ["W/\"abc\""])
        XCTAssertEqual(head.headers["vary"], ["accept-encoding"], "Vary already names it")
    }

    func testRewriteVaryOnlyLeavesFraming() {
        var head = response([("content-length", "2048"), ("etag", "\"abc\"")])
        ResponseCompressionPolicy.rewrite(&head, .init(coding: nil, vary: true), requestVersion: .http1_1)
        XCTAssertEqual(head.headers["content-length"], ["2048"])
        XCTAssertEqual(head.headers["etag"], ["\"abc\""])
        XCTAssertEqual(head.headers["vary"], ["Accept-Encoding"])
        XCTAssertFalse(head.headers.contains(name: "content-encoding"))
    }
}

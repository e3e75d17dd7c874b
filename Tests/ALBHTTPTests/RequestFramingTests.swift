@testable import ALBHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

/// `framedForHTTP1()` frames a request head as NIO's `HTTPRequestEncoder` does: the same bytes on the wire
/// for every method, version and combination of framing fields, but for the case of a name (a `chunked`
/// field already there keeps its name as sent, where NIO writes it again in lowercase).
final class RequestFramingTests: XCTestCase {
    private func nioEncoded(_ head: HTTPRequestHead) throws -> String {
        let channel = EmbeddedChannel(handler: HTTPRequestEncoder())
        try channel.writeOutbound(HTTPClientRequestPart.head(head))
        var text = ""
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            text += buffer.readString(length: buffer.readableBytes) ?? ""
        }
        _ = try? channel.finish()
        return text
    }

    func testEveryMethodVersionAndFramingIsFramedAsNIOFramesIt() throws {
        let methods: [HTTPMethod] = [.GET, .HEAD, .POST, .PUT, .PATCH, .DELETE, .OPTIONS, .TRACE, .RAW(value: "PURGE")]
        let fieldSets: [[(String, String)]] = [
            [],
            [("Content-Length", "5")],
            [("content-length", "0")],
            [("Transfer-Encoding", "chunked")],
            [("transfer-encoding", "Chunked")],
            [("Transfer-Encoding", "gzip")],
            [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
            [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
            [("Transfer-Encoding", "chunked"), ("CONTENT-LENGTH", "7")],
        ]
        let allocator = ByteBufferAllocator()
        for method in methods {
            for version in [HTTPVersion.http1_0, .http1_1] {
                for fields in fieldSets {
                    let head = HTTPRequestHead(version: version, method: method, uri: "/",
                                               headers: HTTPHeaders([("Host", "h")] + fields))
                    let framed = head.framedForHTTP1()
                    let ours = try XCTUnwrap(allocator.http1RequestHead(framed.head))
                    let label = "\(method) \(version) \(fields)"
                    XCTAssertEqual(String(buffer: ours).lowercased(), try self.nioEncoded(head).lowercased(), label)
                    let chunkedOnTheWire = framed.head.headers["transfer-encoding"].last == "chunked"
                        && !framed.head.headers.contains(name: "content-length") && version == .http1_1
                    XCTAssertEqual(framed.chunked, chunkedOnTheWire, label)
                }
            }
        }
    }
}

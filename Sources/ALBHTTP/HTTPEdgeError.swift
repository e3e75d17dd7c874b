import NIOCore
import NIOHTTP1

/// Why the edge refused a client request. Each case maps to the status the client sees;
/// the associated reason is for logs only and never reaches the client.
public enum HTTPEdgeError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Malformed or ambiguous framing (smuggling attempts, bad characters, bad chunk sizes): 400 and close.
    case badRequest(String)
    /// Request line plus headers larger than `maxHeaderBytes`, or more than `maxHeaderCount` fields: 431 and close.
    case headersTooLarge(String)
    /// The head of a request did not complete within the header timeout of its first byte: 408 and close.
    case headerTimeout

    public var status: HTTPResponseStatus {
        switch self {
        case .badRequest: return .badRequest
        case .headersTooLarge: return .requestHeaderFieldsTooLarge
        case .headerTimeout: return .requestTimeout
        }
    }

    public var description: String {
        switch self {
        case .badRequest(let reason): return "bad request: \(reason)"
        case .headersTooLarge(let reason): return "request header fields too large: \(reason)"
        case .headerTimeout: return "request header timeout"
        }
    }
}

/// Fired inbound by ``HTTP1ConnectionHandler`` when a connection opens with the HTTP/2 preface (h2c with prior
/// knowledge): the HTTP/1 pipeline gives way to HTTP/2
/// (``ChannelPipeline/SynchronousOperations/leaveEdgeHTTPPipeline(application:replacement:)``), and the preface
/// reaches the HTTP/2 handler unread.
public struct HTTP2PrefaceEvent: Sendable, Equatable {
    public init() {}
}

/// Short canned responses the edge writes itself: a text body naming the error, nothing internal.
/// How responses are framed for the client's protocol, decided in one place per protocol: HTTP/1 frames
/// with `Content-Length`, chunked coding or close, and says `Connection`; HTTP/2 frames by its streams and
/// must carry no connection-specific header (RFC 9113 section 8.2.2).
public enum ClientFraming: Sendable, Equatable {
    case http1
    case http2
}

public enum EdgeResponse {
    /// "502 Bad Gateway\n" and so on.
    public static func body(for status: HTTPResponseStatus) -> String {
        "\(status.code) \(status.reasonPhrase)\n"
    }

    /// Head with explicit framing (the response encoder does not add any) and `Connection` set.
    public static func head(
        for status: HTTPResponseStatus,
        version: HTTPVersion = .http1_1,
        close: Bool,
        framing: ClientFraming = .http1
    ) -> HTTPResponseHead {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        headers.add(name: "content-length", value: String(Self.body(for: status).utf8.count))
        if framing == .http2 {
            return HTTPResponseHead(version: version, status: status, headers: headers)
        }
        if close {
            headers.add(name: "connection", value: "close")
        } else if version.minor == 0 {
            headers.add(name: "connection", value: "keep-alive")
        }
        return HTTPResponseHead(version: version, status: status, headers: headers)
    }
}

import NIOCore
import NIOHTTP1

/// Which `X-Forwarded-*` and `SLB-ID` headers the proxy adds to backend requests (SPEC §4 `headers`).
public struct ForwardedHeaderOptions: Sendable, Equatable {
    public var xForwardedFor: Bool
    public var xForwardedProto: Bool
    public var xForwardedPort: Bool
    public var xForwardedHost: Bool
    public var xForwardedClientSrcPort: Bool
    public var slbId: Bool

    public init(
        xForwardedFor: Bool = true,
        xForwardedProto: Bool = false,
        xForwardedPort: Bool = false,
        xForwardedHost: Bool = false,
        xForwardedClientSrcPort: Bool = false,
        slbId: Bool = false
    ) {
        self.xForwardedFor = xForwardedFor
        self.xForwardedProto = xForwardedProto
        self.xForwardedPort = xForwardedPort
        self.xForwardedHost = xForwardedHost
        self.xForwardedClientSrcPort = xForwardedClientSrcPort
        self.slbId = slbId
    }
}

/// What the proxy knows about the client side of one request.
public struct ForwardingContext: Sendable, Equatable {
    /// After client IP retrieval, when that is on.
    public var clientIP: String
    public var clientPort: Int
    public var listenerPort: Int
    /// `http` here; `https` on TLS listeners.
    public var scheme: String
    public var loadBalancerName: String

    public init(clientIP: String, clientPort: Int, listenerPort: Int, scheme: String = "http", loadBalancerName: String) {
        self.clientIP = clientIP
        self.clientPort = clientPort
        self.listenerPort = listenerPort
        self.scheme = scheme
        self.loadBalancerName = loadBalancerName
    }
}

/// Header rewriting between client and backend: pure functions, no I/O.
public enum ProxyHeaders {
    /// Headers that describe one hop and never cross the proxy (RFC 9110 §7.6.1), plus
    /// `Transfer-Encoding`, whose framing each side's encoder redoes.
    static let hopByHop: [String] = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "transfer-encoding",
    ]

    /// Never removed because `Connection` names them: that would change the request's framing or target.
    static let protected: Set<String> = ["host", "content-length", "transfer-encoding"]

    /// Removes hop-by-hop headers and those named in `Connection`.
    public static func removeHopByHop(_ headers: inout HTTPHeaders) {
        for token in headers[canonicalForm: "connection"] {
            let name = token.lowercased()
            if !Self.protected.contains(name) {
                headers.remove(name: name)
            }
        }
        for name in Self.hopByHop {
            headers.remove(name: name)
        }
    }

    /// Field names must be tokens; values must not carry CR, LF or NUL (response splitting).
    public static func areValid(_ headers: HTTPHeaders) -> Bool {
        for (name, value) in headers {
            if name.isEmpty || !name.utf8.allSatisfy(StrictHTTPRequestDecoder.isTokenChar) { return false }
            if value.utf8.contains(where: { $0 == 0 || $0 == 0x0A || $0 == 0x0D }) { return false }
        }
        return true
    }

    /// The request sent to a backend: HTTP/1.1 keep-alive, hop-by-hop headers removed, framing kept
    /// (`Content-Length`, or chunked when the client sent chunked), forwarding headers added.
    ///
    /// `X-Forwarded-For` is the client's list with the client IP appended (`a, b, clientIP`), exactly
    /// like nginx's `$proxy_add_x_forwarded_for`. When client IP retrieval is on, `clientIP` is the
    /// retrieved address, not the TCP peer. The other `X-Forwarded-*` headers replace whatever the
    /// client sent, so they cannot be spoofed.
    public static func backendRequestHead(
        from client: HTTPRequestHead,
        forwarding: ForwardingContext,
        options: ForwardedHeaderOptions
    ) -> HTTPRequestHead {
        var headers = client.headers
        let chunked = headers[canonicalForm: "transfer-encoding"].last?.lowercased() == "chunked"
        Self.removeHopByHop(&headers)
        if chunked {
            headers.add(name: "transfer-encoding", value: "chunked")
        } else if !headers.contains(name: "content-length"),
            client.method == .POST || client.method == .PUT || client.method == .PATCH
        {
            headers.add(name: "content-length", value: "0")
        }
        if options.xForwardedFor {
            let existing = headers["x-forwarded-for"]
            headers.remove(name: "x-forwarded-for")
            let list = existing.isEmpty ? forwarding.clientIP : existing.joined(separator: ", ") + ", " + forwarding.clientIP
            headers.add(name: "X-Forwarded-For", value: list)
        }
        if options.xForwardedProto {
            headers.replaceOrAdd(name: "X-Forwarded-Proto", value: forwarding.scheme)
        }
        if options.xForwardedPort {
            headers.replaceOrAdd(name: "X-Forwarded-Port", value: String(forwarding.listenerPort))
        }
        if options.xForwardedHost {
            if let host = client.headers.first(name: "host") {
                headers.replaceOrAdd(name: "X-Forwarded-Host", value: host)
            } else {
                headers.remove(name: "X-Forwarded-Host")
            }
        }
        if options.xForwardedClientSrcPort {
            headers.replaceOrAdd(name: "X-Forwarded-Client-srcport", value: String(forwarding.clientPort))
        }
        if options.slbId {
            headers.replaceOrAdd(name: "SLB-ID", value: forwarding.loadBalancerName)
        }
        return HTTPRequestHead(version: .http1_1, method: client.method, uri: client.uri, headers: headers)
    }

    /// The response head sent to the client, with framing set explicitly (the edge's response encoder
    /// does not add framing): `Content-Length` kept; otherwise chunked for HTTP/1.1 clients, or
    /// close-delimited for HTTP/1.0 clients (then `closeAfter` is true). Bodyless responses
    /// (HEAD, 1xx, 204, 304) carry no transfer coding.
    public static func clientResponseHead(
        from backend: HTTPResponseHead,
        requestMethod: HTTPMethod,
        requestVersion: HTTPVersion,
        keepAlive: Bool
    ) -> (head: HTTPResponseHead, closeAfter: Bool) {
        var headers = backend.headers
        Self.removeHopByHop(&headers)
        let code = backend.status.code
        let bodyless = requestMethod == .HEAD || (100..<200).contains(code) || code == 204 || code == 304
        var keepAlive = keepAlive
        if !bodyless && !headers.contains(name: "content-length") {
            if requestVersion.minor >= 1 {
                headers.add(name: "transfer-encoding", value: "chunked")
            } else {
                keepAlive = false
            }
        }
        if !keepAlive {
            headers.add(name: "connection", value: "close")
        } else if requestVersion.minor == 0 {
            headers.add(name: "connection", value: "keep-alive")
        }
        let version = requestVersion.minor == 0 ? HTTPVersion.http1_0 : .http1_1
        return (HTTPResponseHead(version: version, status: backend.status, headers: headers), !keepAlive)
    }
}

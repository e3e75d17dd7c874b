import NIOHTTP1

/// The opening handshake of RFC 6455 as the proxy sees it: which requests ask to become WebSocket
/// connections, which of those are malformed (400 at the edge, before any backend sees them), and which
/// backend answers switch. Pure functions; the decoder, the exchange and the proxy ask them.
///
/// Only `websocket` is tunnelled. Any other `Upgrade` (an HTTP/1.1 `h2c` upgrade, say) is a hop-by-hop
/// header the proxy removes, so such a request is served as the plain request it also is.
public enum WebSocketHandshake {
    /// Whether `head` asks to switch to WebSocket: HTTP/1.1 with `Upgrade` listing `websocket` and
    /// `Connection` listing `upgrade` (RFC 9110 section 7.8: an `Upgrade` that `Connection` does not name
    /// is not in effect). Looks for `Upgrade` first, so the usual request allocates nothing.
    public static func isRequested(_ head: HTTPRequestHead) -> Bool {
        guard head.version == .http1_1, head.headers.contains(lowercased: "upgrade") else { return false }
        return Self.lists(head.headers, "upgrade", token: "websocket")
            && Self.lists(head.headers, "connection", token: "upgrade")
    }

    /// Why a WebSocket upgrade request must be refused with 400, or nil when it is well formed: a `GET`
    /// without a body, one `Sec-WebSocket-Key` that is 16 bytes in base64, `Sec-WebSocket-Version: 13`
    /// (RFC 6455 section 4.1). The reason is for the log, not the client.
    public static func refusal(_ head: HTTPRequestHead) -> String? {
        if !head.method.isGET { return "WebSocket upgrade with a method other than GET" }
        if head.headers.contains(lowercased: "transfer-encoding")
            || head.headers[canonicalForm: "content-length"].contains(where: { $0 != "0" })
        {
            return "WebSocket upgrade with a body"
        }
        let keys = head.headers["sec-websocket-key"]
        guard keys.count == 1, Self.isNonce(keys[0]) else { return "WebSocket upgrade without a valid Sec-WebSocket-Key" }
        guard head.headers["sec-websocket-version"] == ["13"] else { return "WebSocket version other than 13" }
        return nil
    }

    /// Whether a backend's answer switches the connection to WebSocket: a `101` whose `Upgrade` names
    /// `websocket`. A 101 to anything else would leave the client waiting for a protocol that never starts.
    public static func isAccepted(_ head: HTTPResponseHead) -> Bool {
        head.status == .switchingProtocols && Self.lists(head.headers, "upgrade", token: "websocket")
    }

    /// The `101` head for the client: the backend's end-to-end fields (`Sec-WebSocket-Accept`, the chosen
    /// subprotocol and extensions) and the two hop-by-hop fields a switch needs, which the proxy sets itself.
    public static func switchingProtocolsHead(from backend: HTTPResponseHead) -> HTTPResponseHead {
        var head = backend
        head.version = .http1_1
        ProxyHeaders.removeHopByHop(from: &head.headers)
        head.headers.add(name: "connection", value: "upgrade")
        head.headers.add(name: "upgrade", value: "websocket")
        return head
    }

    /// The hop-by-hop fields the request to the backend needs to ask for the same switch.
    public static func addUpgradeFields(to headers: inout HTTPHeaders) {
        headers.add(name: "connection", value: "upgrade")
        headers.add(name: "upgrade", value: "websocket")
    }

    /// Whether some `name` field's comma-separated list holds `token` (any case).
    private static func lists(_ headers: HTTPHeaders, _ name: String, token: String) -> Bool {
        headers[canonicalForm: name].contains { ProxyHeaders.equalsIgnoringASCIICase($0.utf8, lowercased: token.utf8) }
    }

    /// A base64 encoding of 16 bytes: 22 characters of the alphabet, then `==`.
    private static func isNonce(_ value: String) -> Bool {
        let bytes = Array(value.utf8)
        guard bytes.count == 24, bytes[22] == UInt8(ascii: "="), bytes[23] == UInt8(ascii: "=") else { return false }
        return bytes[0..<22].allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"):
                return true
            default:
                return false
            }
        }
    }
}

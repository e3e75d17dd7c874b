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
    /// Mutual-TLS listeners: the verified client certificate's subject DN, issuer DN, fingerprint and
    /// verify result as `X-Forwarded-Clientcert-subjectdn` / `-issuerdn` / `-fingerprint` / `-clientverify`.
    public var clientCertSubjectDN = false
    public var clientCertIssuerDN = false
    public var clientCertFingerprint = false
    public var clientCertClientVerify = false

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

/// The verified client certificate of a mutual-TLS connection, as its headers carry it.
public struct ClientCertificateInfo: Sendable, Equatable {
    /// RFC 4514 distinguished names.
    public var subjectDN: String
    public var issuerDN: String
    /// Lower-case hex SHA-1 of the certificate's DER (what ALB's header carries).
    public var fingerprint: String
    /// "SUCCESS": a connection with a certificate that did not verify never gets this far.
    public var verify: String

    public init(subjectDN: String, issuerDN: String, fingerprint: String, verify: String) {
        self.subjectDN = subjectDN
        self.issuerDN = issuerDN
        self.fingerprint = fingerprint
        self.verify = verify
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
    /// The TCP peer is one of the listener's trusted proxies (`clientIp.trustedProxies`): the forwarding
    /// headers it sent are passed on. From anyone else they are removed.
    public var peerIsTrustedProxy: Bool
    /// The client's verified certificate on a mutual-TLS listener.
    public var clientCertificate: ClientCertificateInfo?

    public init(
        clientIP: String, clientPort: Int, listenerPort: Int, scheme: String = "http", loadBalancerName: String,
        peerIsTrustedProxy: Bool = false, clientCertificate: ClientCertificateInfo? = nil
    ) {
        self.clientCertificate = clientCertificate
        self.clientIP = clientIP
        self.clientPort = clientPort
        self.listenerPort = listenerPort
        self.scheme = scheme
        self.loadBalancerName = loadBalancerName
        self.peerIsTrustedProxy = peerIsTrustedProxy
    }
}

/// Header rewriting between client and backend: pure functions, no I/O.
public enum ProxyHeaders {
    /// Headers that describe one hop and never cross the proxy (RFC 9110 §7.6.1), plus
    /// `Transfer-Encoding`, whose framing each side's encoder redoes.
    static let hopByHop: [String] = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "transfer-encoding",
    ]

    /// The headers the listener manages (``ForwardedHeaderOptions``): believed only from a trusted proxy.
    static let forwarding: [String] = [
        "x-forwarded-for", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-host",
        "x-forwarded-client-srcport", "slb-id", "x-forwarded-clientcert-subjectdn", "x-forwarded-clientcert-issuerdn",
        "x-forwarded-clientcert-fingerprint", "x-forwarded-clientcert-clientverify",
    ]

    /// Never removed because `Connection` names them: that would change the request's framing or target.
    static let protected: Set<String> = ["host", "content-length", "transfer-encoding"]

    /// What becomes of a field of some name on its way through the proxy.
    enum Crossing: Equatable {
        /// It crosses.
        case crosses
        /// `Connection`: hop-by-hop, and it may name more fields that are.
        case connection
        /// One of the other ``hopByHop`` fields.
        case hopByHop
        /// One of the ``forwarding`` fields: it crosses only from a trusted proxy.
        case forwarding
    }

    /// What becomes of a field named `name` (any case): ``hopByHop`` and ``forwarding`` as one switch on the
    /// name's length, then a compare for each name of that length. Most names have a length none of them has;
    /// a look-up in each list cost about 90 instructions a field (callgrind), most of a field's way through
    /// ``fieldsPassedOn(_:keepForwarding:extra:)``. `FieldCrossingTests` holds the switch to the two lists.
    static func crossing(_ name: String) -> Crossing {
        func named(_ lowercased: StaticString) -> Bool { HTTP1Syntax.equalsIgnoringASCIICase(name, lowercased) }
        switch name.utf8.count {
        case 2: return named("te") ? .hopByHop : .crosses
        case 6: return named("slb-id") ? .forwarding : .crosses
        case 7: return named("trailer") || named("upgrade") ? .hopByHop : .crosses
        case 10:
            if named("connection") { return .connection }
            return named("keep-alive") ? .hopByHop : .crosses
        case 15: return named("x-forwarded-for") ? .forwarding : .crosses
        case 16:
            if named("proxy-connection") { return .hopByHop }
            return named("x-forwarded-port") || named("x-forwarded-host") ? .forwarding : .crosses
        case 17:
            if named("transfer-encoding") { return .hopByHop }
            return named("x-forwarded-proto") ? .forwarding : .crosses
        case 26: return named("x-forwarded-client-srcport") ? .forwarding : .crosses
        case 31: return named("x-forwarded-clientcert-issuerdn") ? .forwarding : .crosses
        case 32: return named("x-forwarded-clientcert-subjectdn") ? .forwarding : .crosses
        case 34: return named("x-forwarded-clientcert-fingerprint") ? .forwarding : .crosses
        case 35: return named("x-forwarded-clientcert-clientverify") ? .forwarding : .crosses
        default: return .crosses
        }
    }

    /// The fields of `headers` that cross the proxy, copied in one pass into storage sized for `extra` more:
    /// hop-by-hop fields and those `Connection` names (never the framing ones) are left out, and so are the
    /// forwarding headers unless `keepForwarding`. One allocation, where removing from a copy of a head
    /// the caller still holds costs a copy and then a growth for the fields the proxy adds. `Connection`
    /// is read in the same pass; only when it names a field that is not hop-by-hop anyway (rare: the usual
    /// values are `keep-alive` and `close`) does a second pass take the named fields out.
    ///
    /// An array, to be appended to and wrapped once: `HTTPHeaders.add` scans each name for non-ASCII bytes and
    /// compares it with `connection`, which names from a decoded message or from this file do not need.
    static func fieldsPassedOn(_ headers: HTTPHeaders, keepForwarding: Bool, extra: Int) -> [(String, String)] {
        var named: [String] = []
        var fields: [(String, String)] = []
        fields.reserveCapacity(headers.count + extra)
        for (name, value) in headers {
            switch Self.crossing(name) {
            case .crosses: fields.append((name, value))
            case .connection: Self.appendFieldsNamed(inConnection: value, to: &named)
            case .hopByHop: continue
            case .forwarding: if keepForwarding { fields.append((name, value)) }
            }
        }
        // Most requests name no field in `Connection`: `removeAll(where:)` is not free on an empty array (about
        // 150 instructions through `replaceSubrange`, callgrind).
        guard !named.isEmpty else { return fields }
        named.removeAll { Self.protected.contains($0) }
        if !named.isEmpty {
            fields.removeAll { field in
                named.contains { Self.equalsIgnoringASCIICase(field.0.utf8, lowercased: $0.utf8) }
            }
        }
        return fields
    }

    /// Takes the hop-by-hop fields and those `Connection` names (never the framing ones) out of `headers` in
    /// place: what ``fieldsPassedOn(_:keepForwarding:extra:)`` leaves out with `keepForwarding`. A response
    /// head its decoder handed over whole is not copied, and nothing is allocated unless `Connection` names
    /// other fields.
    public static func removeHopByHop(from headers: inout HTTPHeaders) {
        var present: UInt8 = 0  // bit i: some field is named `hopByHop[i]`
        var named: [String] = []
        for (name, value) in headers {
            guard let index = Self.hopByHopIndex(name) else { continue }
            present |= 1 << index
            if index == 0 { Self.appendFieldsNamed(inConnection: value, to: &named) }
        }
        for (index, name) in Self.hopByHop.enumerated() where present & (1 << index) != 0 {
            headers.remove(name: name)
        }
        for name in named where !Self.protected.contains(name) {
            headers.remove(name: name)
        }
    }

    /// The tokens of one `Connection` value, lowercased, except hop-by-hop names. Scans the bytes in place:
    /// the usual `keep-alive` or `close` allocates nothing.
    private static func appendFieldsNamed(inConnection value: String, to names: inout [String]) {
        // What almost every peer sends, settled without splitting: `keep-alive` names a hop-by-hop field,
        // `close` only itself (a field of that name, reserved by RFC 9110 section 18.4, goes too).
        if HTTP1Syntax.equalsIgnoringASCIICase(value, "keep-alive") {
            return
        }
        if HTTP1Syntax.equalsIgnoringASCIICase(value, "close") {
            names.append("close")
            return
        }
        Self.forEachListItem(in: value) { token in
            if Self.hopByHopIndex(token) == nil {
                names.append(token.lowercased())
            }
        }
    }

    /// Each non-empty item of a comma-separated field value, without its surrounding whitespace, split on the
    /// character as `HTTPHeaders[canonicalForm:]` splits; nothing is allocated.
    private static func forEachListItem(in value: String, _ body: (Substring) -> Void) {
        var rest = Substring(value)
        while !rest.isEmpty {
            let comma = rest.firstIndex(of: ",") ?? rest.endIndex
            let item = rest[..<comma].trimmingOWS
            rest = comma == rest.endIndex ? rest[comma...] : rest[rest.index(after: comma)...]
            if !item.isEmpty { body(item) }
        }
    }

    /// A client's request trailers as the proxy passes them on: without the fields RFC 9110 section 6.5.1 forbids
    /// in trailers (framing, routing, request modifiers, authentication, how to process the content), the
    /// hop-by-hop ones and the proxy's forwarding fields; nil when none is left. A backend that merges trailers into
    /// the header section (section 6.5.2 forbids it, some do) would otherwise take a `Host`, a `Content-Length` or
    /// an `X-Forwarded-For` the client sent after the body, past the checks the head went through. nginx passes no
    /// request trailers at all; those a backend may use (a checksum, a status) pass.
    public static func requestTrailersToForward(_ trailers: HTTPHeaders) -> HTTPHeaders? {
        var kept: [(String, String)] = []
        for (name, value) in trailers {
            if Self.crossing(name) != .crosses { continue }
            switch name.lowercased() {
            case "content-length", "host", "expect", "max-forwards", "cache-control", "pragma", "range", "if-match",
                 "if-none-match", "if-modified-since", "if-unmodified-since", "if-range", "authorization",
                 "proxy-authorization", "cookie", "content-encoding", "content-type", "content-range":
                continue
            default:
                kept.append((name, value))
            }
        }
        return kept.isEmpty ? nil : HTTPHeaders(kept)
    }

    /// Bit n is set when some name in ``hopByHop`` is n bytes long (all are shorter than 64).
    private static let hopByHopLengths: UInt64 = Self.hopByHop.reduce(0) { $0 | 1 << UInt64($1.utf8.count) }

    /// Whether `name` (any case) is a hop-by-hop field, without allocating.
    public static func isHopByHop(_ name: String) -> Bool {
        switch Self.crossing(name) {
        case .connection, .hopByHop: return true
        case .crosses, .forwarding: return false
        }
    }

    /// The position of `name` in ``hopByHop`` (any case), without allocating.
    static func hopByHopIndex(_ name: some StringProtocol) -> Int? {
        Self.index(of: name, in: Self.hopByHop, lengths: Self.hopByHopLengths)
    }

    /// The position of `name` (any case) in `names` (lowercase), whose lengths are the bits of `lengths`:
    /// most names are ruled out by their length alone, and nothing is allocated.
    private static func index(of name: some StringProtocol, in names: [String], lengths: UInt64) -> Int? {
        let length = name.utf8.count
        guard length < 64, lengths & (1 << UInt64(length)) != 0 else { return nil }
        for (index, candidate) in names.enumerated() where candidate.utf8.count == length {
            if Self.equalsIgnoringASCIICase(name.utf8, lowercased: candidate.utf8) {
                return index
            }
        }
        return nil
    }

    /// Whether the backend keeps the connection open after this response: NIO's `HTTPResponseHead.isKeepAlive`
    /// (`Connection: close` closes, a second `close` or `keep-alive` token too, otherwise `keep-alive` keeps
    /// and HTTP/1.1 keeps by default) without its arrays: NIO knows the answer without them only for the
    /// heads its own decoder made, and our decoder's heads would cost four allocations each.
    public static func isKeepAlive(_ head: HTTPResponseHead) -> Bool {
        Self.isKeepAlive(head.headers, version: head.version)
    }

    /// The same for any message's fields (a request's: NIO's `HTTPRequestHead.isKeepAlive` looked the field up
    /// through its canonical form, about 240 instructions a request, callgrind).
    public static func isKeepAlive(_ headers: HTTPHeaders, version: HTTPVersion) -> Bool {
        var seen: Bool?
        for (name, value) in headers where HTTP1Syntax.equalsIgnoringASCIICase(name, "connection") {
            // What almost every backend sends, one token alone, is settled without splitting the list.
            if HTTP1Syntax.equalsIgnoringASCIICase(value, "keep-alive") {
                seen = seen == nil
                continue
            }
            if HTTP1Syntax.equalsIgnoringASCIICase(value, "close") {
                seen = false
                continue
            }
            Self.forEachListItem(in: value) { token in
                if Self.equalsIgnoringASCIICase(token.utf8, lowercased: "close".utf8) {
                    seen = false
                } else if Self.equalsIgnoringASCIICase(token.utf8, lowercased: "keep-alive".utf8) {
                    seen = seen == nil
                }
            }
        }
        return seen ?? (version.major == 1 && version.minor >= 1)
    }

    /// Compares with `lowercased`, which must be lowercase ASCII already: over the two strings' contiguous
    /// UTF-8 where both have it (native strings do), a byte loop instead of two string iterators.
    static func equalsIgnoringASCIICase(_ bytes: some Sequence<UInt8>, lowercased: some Sequence<UInt8>) -> Bool {
        func equal(_ bytes: some Sequence<UInt8>, _ lowercased: some Sequence<UInt8>) -> Bool {
            bytes.elementsEqual(lowercased) { byte, lower in
                (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte) == lower
            }
        }
        let contiguous = bytes.withContiguousStorageIfAvailable { bytes in
            lowercased.withContiguousStorageIfAvailable { lowercased in
                bytes.count == lowercased.count && equal(bytes, lowercased)
            }
        }
        return (contiguous ?? nil) ?? equal(bytes, lowercased)
    }

    /// What the proxy asks of a request's fields before it forwards it, from one pass over them: each question
    /// was a pass of its own (six a request, about 65 instructions each for a request with one field,
    /// callgrind). The fields that need a closer look (`Connection`, `Expect`, `Upgrade`, `Transfer-Encoding`)
    /// are read again only when the request has them, which most do not.
    public struct RequestFieldSummary {
        private var hasConnection = false
        private var hasUpgrade = false
        /// Some `Transfer-Encoding` field.
        public private(set) var hasTransferEncoding = false
        private var hasExpect = false
        /// Whether the first `Content-Length` says `0`; nil without one.
        private var firstLengthIsZero: Bool?
        /// What a strict decoder's summary says of `Connection`, when the summary is what this was made of.
        private var keepAlive: Bool?

        /// The same answers from what a strict decoder learnt of the fields as it read them.
        public init(_ summary: HTTP1HeadSummary, version: HTTPVersion) {
            self.hasConnection = summary.present.contains(.connection)
            self.hasUpgrade = summary.present.contains(.upgrade)
            self.hasTransferEncoding = summary.present.contains(.transferEncoding)
            self.hasExpect = summary.present.contains(.expect)
            // Valid, and equal when there are several (the decoder refused others).
            self.firstLengthIsZero = summary.framing.length.map { $0 == 0 }
            self.keepAlive = summary.isKeepAlive(version: version)
        }

        public init(_ headers: HTTPHeaders) {
            for (name, value) in headers {
                switch name.utf8.count {
                case 6: self.hasExpect = self.hasExpect || HTTP1Syntax.equalsIgnoringASCIICase(name, "expect")
                case 7: self.hasUpgrade = self.hasUpgrade || HTTP1Syntax.equalsIgnoringASCIICase(name, "upgrade")
                case 10:
                    self.hasConnection = self.hasConnection || HTTP1Syntax.equalsIgnoringASCIICase(name, "connection")
                case 14 where self.firstLengthIsZero == nil && HTTP1Syntax.equalsIgnoringASCIICase(name, "content-length"):
                    self.firstLengthIsZero = value == "0"
                case 17:
                    self.hasTransferEncoding = self.hasTransferEncoding
                        || HTTP1Syntax.equalsIgnoringASCIICase(name, "transfer-encoding")
                default:
                    break
                }
            }
        }

        /// ``ProxyHeaders/isKeepAlive(_:version:)`` of the request `head` (whose fields these are).
        public func isKeepAlive(_ head: HTTPRequestHead) -> Bool {
            if let keepAlive = self.keepAlive { return keepAlive }
            guard self.hasConnection else { return head.version.major == 1 && head.version.minor >= 1 }
            return ProxyHeaders.isKeepAlive(head.headers, version: head.version)
        }

        /// The request has a body: a transfer coding, or a length other than `0`.
        public var hasBody: Bool {
            self.hasTransferEncoding || self.firstLengthIsZero == false
        }

        /// ``ProxyHeaders/expectsContinue(_:)`` of `head`'s fields.
        public func expectsContinue(_ head: HTTPRequestHead) -> Bool {
            self.hasExpect && ProxyHeaders.expectsContinue(head.headers)
        }

        /// ``WebSocketHandshake/isRequested(_:)`` of `head`.
        public func asksForWebSocket(_ head: HTTPRequestHead) -> Bool {
            self.hasUpgrade && WebSocketHandshake.isRequested(head)
        }
    }

    /// Whether `Expect` lists `100-continue` (in any case). Looks for the field first, so the usual
    /// request, without one, allocates nothing.
    public static func expectsContinue(_ headers: HTTPHeaders) -> Bool {
        guard headers.contains(lowercased: "expect") else { return false }
        return headers[canonicalForm: "expect"].contains { $0.lowercased() == "100-continue" }
    }

    /// Field names must be tokens; values must not carry CR, LF or NUL (response splitting).
    public static func areValid(_ headers: HTTPHeaders) -> Bool {
        for (name, value) in headers {
            if !Self.isToken(name) { return false }
            if !Self.isSafeValue(value) { return false }
        }
        return true
    }

    /// A non-empty token (RFC 9110 section 5.6.2): header names here, methods and names on the wire too. On the
    /// string's contiguous UTF-8 where it has one.
    public static func isToken(_ name: String) -> Bool {
        // Through ``HTTP1Syntax/areTokenChars(_:)`` (eight bytes at a time, then a table): a byte at a time, a call
        // each, an HTTP/2 request's `GET` cost about 100 instructions, now about 65 (callgrind).
        name.utf8.withContiguousStorageIfAvailable { HTTP1Syntax.areTokenChars(UnsafeRawBufferPointer($0)) }
            ?? (!name.isEmpty && name.utf8.allSatisfy(HTTP1Syntax.isTokenChar))
    }

    /// A field value an HTTP/1 message may carry: VCHAR, obs-text, SP and HTAB (RFC 9110 section 5.5), no other
    /// control byte. What the HTTP/1 edge takes and the backend writer sends; HTTP/2 and HTTP/3 framing allow more.
    public static func isFieldValue(_ value: String) -> Bool {
        value.utf8.withContiguousStorageIfAvailable { HTTP1Syntax.areFieldValueChars(UnsafeRawBufferPointer($0)) }
            ?? value.utf8.allSatisfy(HTTP1Syntax.isFieldValueChar)
    }

    /// ``isFieldValue(_:)``, and neither the first nor the last byte is SP or HTAB (RFC 9113 section 8.2.1: an
    /// HTTP/1 recipient would read the value trimmed). One pass over the bytes.
    public static func isTrimmedFieldValue(_ value: String) -> Bool {
        func check(_ bytes: UnsafeRawBufferPointer) -> Bool {
            guard let first = bytes.first, let last = bytes.last else { return true }
            return first != UInt8(ascii: " ") && first != UInt8(ascii: "\t") && last != UInt8(ascii: " ")
                && last != UInt8(ascii: "\t") && HTTP1Syntax.areFieldValueChars(bytes)
        }
        return value.utf8.withContiguousStorageIfAvailable { check(UnsafeRawBufferPointer($0)) }
            ?? Array(value.utf8).withUnsafeBytes(check)
    }

    private static func isSafeValue(_ value: String) -> Bool {
        value.utf8AllSatisfy { $0 != 0 && $0 != 0x0A && $0 != 0x0D }
    }

    /// The request sent to a backend: HTTP/1.1 keep-alive, hop-by-hop headers removed, framing kept
    /// (`Content-Length`, or chunked when the client sent chunked), forwarding headers added.
    ///
    /// The forwarding headers (``forwarding``) a client sent reach the backend only when the TCP peer is
    /// a trusted proxy (`forwarding.peerIsTrustedProxy`); from anyone else they are removed, also when
    /// the listener does not set that header itself, so a backend never sees a value a client chose
    /// (Traefik and Envoy do the same by default). Then, for each header the listener sets:
    /// - `X-Forwarded-For`: the trusted list with the client IP appended (`a, b, clientIP`, like nginx's
    ///   `$proxy_add_x_forwarded_for`), or the client IP alone. When client IP retrieval is on,
    ///   `clientIP` is the retrieved address, not the TCP peer.
    /// - `X-Forwarded-Proto`, `-Port`, `-Host`, `-Client-srcport`: a trusted proxy's value is kept (it
    ///   saw the original request); otherwise the listener's own.
    /// - `SLB-ID`: always this load balancer's name.
    ///
    /// `summary`: the request's ``RequestFieldSummary`` when the caller has it, so that its fields are not
    /// searched again for a transfer coding.
    public static func backendRequestHead(
        from client: HTTPRequestHead,
        forwarding: ForwardingContext,
        options: ForwardedHeaderOptions,
        backendSpeaksHTTP2: Bool = false,
        summary: RequestFieldSummary? = nil
    ) -> HTTPRequestHead {
        let chunked =
            (summary?.hasTransferEncoding ?? client.headers.contains(lowercased: "transfer-encoding"))
            && client.headers[canonicalForm: "transfer-encoding"].last?.lowercased() == "chunked"
        // gRPC needs `te: trailers` end to end; HTTP/2 allows that one value (RFC 9113 section 8.2.2).
        let trailers = backendSpeaksHTTP2 && client.headers[canonicalForm: "te"].contains { $0.lowercased() == "trailers" }
        // Room for every header the listener may add below.
        let trusted = forwarding.peerIsTrustedProxy
        var fields = Self.fieldsPassedOn(client.headers, keepForwarding: trusted, extra: 12)
        if backendSpeaksHTTP2 {
            // The backend's stream frames the body: no HTTP/1 framing header goes out.
            if trailers { fields.append(("te", "trailers")) }
        } else if chunked {
            fields.append(("transfer-encoding", "chunked"))
        } else if client.method.conventionallyHasBody, !fields.contains(where: { Self.isNamed($0, "content-length") }) {
            // An HTTP/1 request without either has no body; an HTTP/2 stream may carry one without
            // announcing its length: send it chunked.
            fields.append(client.version.major >= 2 ? ("transfer-encoding", "chunked") : ("content-length", "0"))
        }
        let host = options.xForwardedHost ? client.headers.first(lowercased: "host") : nil
        Self.addForwardingFields(to: &fields, trusted: trusted, clientHost: host, forwarding: forwarding, options: options)
        let headers = HTTPHeaders(fields)
        // The client's head with new fields: its method, target and version storage is shared, not copied.
        var head = client
        head.headers = headers
        if head.version != .http1_1 { head.version = .http1_1 }
        return head
    }

    private static func isNamed(_ field: (String, String), _ lowercased: String) -> Bool {
        Self.equalsIgnoringASCIICase(field.0.utf8, lowercased: lowercased.utf8)
    }

    /// Appends the forwarding fields the listener sets (``backendRequestHead(from:forwarding:options:backendSpeaksHTTP2:summary:)``
    /// says how) to `fields`, the client's fields that cross: a client's own forwarding fields are among them
    /// only when it is a trusted proxy, so only a trusted proxy's are looked for. `clientHost`: the request's
    /// `Host`, when `X-Forwarded-Host` is set.
    @inline(__always)  // called once a request from either caller: outlined, it cost HTTP/2 about 90 instructions more
    private static func addForwardingFields(to fields: inout [(String, String)], trusted: Bool, clientHost: String?,
                                            forwarding: ForwardingContext, options: ForwardedHeaderOptions) {
        /// Sets `name` (`lowercased` in lowercase) to `value`; a trusted proxy's own value stays when
        /// `keepTrusted`, and is replaced otherwise.
        func set(_ name: String, _ lowercased: String, _ value: String, keepTrusted: Bool = true) {
            if trusted, fields.contains(where: { isNamed($0, lowercased) }) {
                if keepTrusted { return }
                fields.removeAll { isNamed($0, lowercased) }
            }
            fields.append((name, value))
        }
        if options.xForwardedFor {
            let existing = trusted ? fields.filter { isNamed($0, "x-forwarded-for") }.map(\.1) : []
            let list = existing.isEmpty ? forwarding.clientIP : existing.joined(separator: ", ") + ", " + forwarding.clientIP
            set("X-Forwarded-For", "x-forwarded-for", list, keepTrusted: false)
        }
        if options.xForwardedProto {
            set("X-Forwarded-Proto", "x-forwarded-proto", forwarding.scheme)
        }
        if options.xForwardedPort {
            set("X-Forwarded-Port", "x-forwarded-port", String(forwarding.listenerPort))
        }
        if options.xForwardedHost, let host = clientHost {
            set("X-Forwarded-Host", "x-forwarded-host", host)
        }
        if options.xForwardedClientSrcPort {
            set("X-Forwarded-Client-srcport", "x-forwarded-client-srcport", String(forwarding.clientPort))
        }
        if options.slbId {
            set("SLB-ID", "slb-id", forwarding.loadBalancerName, keepTrusted: false)
        }
        // A client's own X-Forwarded-Clientcert-* went with the other forwarding headers (unless it is a trusted
        // proxy); the listener's handshake sets them.
        if let certificate = forwarding.clientCertificate {
            if options.clientCertSubjectDN {
                set("X-Forwarded-Clientcert-subjectdn", "x-forwarded-clientcert-subjectdn", certificate.subjectDN,
                    keepTrusted: false)
            }
            if options.clientCertIssuerDN {
                set("X-Forwarded-Clientcert-issuerdn", "x-forwarded-clientcert-issuerdn", certificate.issuerDN,
                    keepTrusted: false)
            }
            if options.clientCertFingerprint {
                set("X-Forwarded-Clientcert-fingerprint", "x-forwarded-clientcert-fingerprint",
                    certificate.fingerprint, keepTrusted: false)
            }
            if options.clientCertClientVerify {
                set("X-Forwarded-Clientcert-clientverify", "x-forwarded-clientcert-clientverify", certificate.verify,
                    keepTrusted: false)
            }
        }
    }

    /// Which of a request's lines (bit i: line i) do not go to the backend with
    /// ``backendRequestHead(from:passingOn:summary:forwarding:options:)``, the hop-by-hop and forwarding fields,
    /// when its fields came as lines (`summary` being what its decoder learnt of them) and can be passed on by
    /// leaving out lines and adding fields, nothing more; nil when they cannot: hop-by-hop fields cannot be told
    /// by position or `Connection` names others, equal lengths are to be folded into one, an `Expect` or `Upgrade`
    /// is to be handled, or the method is `TRACE` (whose framing fields go). Asked before anything reads the
    /// fields: if nil, they are made fields.
    public static func linesLeftOut(of client: HTTPRequestHead, summary: HTTP1HeadSummary) -> UInt64? {
        guard !summary.framing.foldsLengths, !summary.present.contains(.expect), !summary.present.contains(.upgrade),
            !client.method.isTRACE
        else { return nil }
        return summary.positionsLeftOut(forwarding: true)
    }

    /// The request sent to an HTTP/1 backend when the client's fields go as the lines it sent (``HTTP1FieldLines``),
    /// from a client that is not a trusted proxy: its request line and the proxy's own fields, which follow the lines
    /// but those ``linesLeftOut(of:summary:)`` names (the hop-by-hop and forwarding fields). With them, the same
    /// fields in the same order as ``backendRequestHead(from:forwarding:options:backendSpeaksHTTP2:summary:)`` makes
    /// of the same request's fields. `chunked`: the body goes chunked (the client's was).
    public static func backendRequestHead(from client: HTTPRequestHead, passingOn fieldLines: HTTP1FieldLines,
                                          summary: HTTP1HeadSummary, forwarding: ForwardingContext,
                                          options: ForwardedHeaderOptions) -> (head: HTTPRequestHead, chunked: Bool) {
        var fields: [(String, String)] = []
        fields.reserveCapacity(8)  // one allocation for a framing field and those the listener may add
        let chunked = summary.framing.transferEncodings > 0
        if chunked {
            fields.append(("transfer-encoding", "chunked"))
        } else if client.method.conventionallyHasBody, !summary.present.contains(.contentLength) {
            fields.append(("content-length", "0"))
        }
        let host = options.xForwardedHost ? fieldLines.first(lowercased: "host") : nil
        Self.addForwardingFields(to: &fields, trusted: false, clientHost: host, forwarding: forwarding, options: options)
        var head = client
        head.headers = HTTPHeaders(fields)
        if head.version != .http1_1 { head.version = .http1_1 }
        return (head, chunked)
    }

    /// The response head sent to the client, with framing set explicitly (the edge's response encoder
    /// does not add framing): `Content-Length` kept; otherwise chunked for HTTP/1.1 clients, or
    /// close-delimited for HTTP/1.0 clients (then `closeAfter` is true). Bodyless responses
    /// (HEAD, 1xx, 204, 304) carry no transfer coding. `summary` is what the backend's decoder learnt of
    /// the head's fields, if it had one: the fields are then not searched again.
    public static func clientResponseHead(
        from backend: consuming HTTPResponseHead,
        summary: HTTP1HeadSummary? = nil,
        requestMethod: HTTPMethod,
        requestVersion: HTTPVersion,
        keepAlive: Bool,
        framing: ClientFraming = .http1
    ) -> (head: HTTPResponseHead, closeAfter: Bool) {
        // The backend's head, edited in place: a caller that hands it over (`consume`) pays no copy.
        var head = backend
        if summary?.hopByHopLeftOut != true {
            Self.removeHopByHop(from: &head.headers)
        }
        if framing == .http2 {
            // The stream frames the body; a `Content-Length` from the backend stays as information.
            if head.version != requestVersion { head.version = requestVersion }
            return (head, false)
        }
        let code = head.status.code
        let bodyless = requestMethod.isHEAD || (100..<200).contains(code) || code == 204 || code == 304
        var keepAlive = keepAlive
        let hasLength = summary.map { $0.present.contains(.contentLength) } ?? head.headers.contains(lowercased: "content-length")
        if !bodyless && !hasLength {
            if requestVersion.minor >= 1 {
                head.headers.add(name: "transfer-encoding", value: "chunked")
            } else {
                keepAlive = false
            }
        }
        if !keepAlive {
            head.headers.add(name: "connection", value: "close")
        } else if requestVersion.minor == 0 {
            head.headers.add(name: "connection", value: "keep-alive")
        }
        let version = requestVersion.minor == 0 ? HTTPVersion.http1_0 : .http1_1
        if head.version != version { head.version = version }
        return (head, !keepAlive)
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs (RFC 9110 OWS), trimmed bytewise like
    /// `HTTPHeaders[canonicalForm:]`.
    fileprivate var trimmingOWS: Substring {
        guard let first = self.utf8.firstIndex(where: { !HTTP1Syntax.isWhitespace($0) }),
            let last = self.utf8.lastIndex(where: { !HTTP1Syntax.isWhitespace($0) })
        else { return Substring() }
        return Substring(self.utf8[first...last])
    }
}

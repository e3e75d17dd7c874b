import ALBHTTP
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// The checks nio-http2 makes of the header blocks a client sends (RFC 9113 sections 8.2 and 8.3), made by the
/// listener instead, in one pass over each field's bytes, with nio-http2's errors.
///
/// Why: nio-http2 validates the blocks it receives and the blocks it sends behind one switch
/// (`headerBlockValidation`), and its checks (a `Substring` per name, five string compares per field, an
/// option set per pseudo-header) cost about 2,000 instructions a field: 26,000 of the 163,000 a proxied
/// HTTP/2 request took (callgrind), 16,000 of them on the response blocks the proxy makes itself
/// (``HTTP2Heads/headerBlock(status:fields:scratch:)``: lowercase names from a strict decoder, no connection-specific
/// field). So a server connection runs with that switch off and ``HTTP2StreamRouter`` checks what arrives
/// with this, before a stream is opened for it; a block that fails resets its stream with `PROTOCOL_ERROR`,
/// as nio-http2 does.
///
/// The same holds for nio-http2's content-length checks (`contentLengthValidation`), which look the field up
/// in every block both ways (about 3,000 instructions a request, callgrind): a request's `content-length` is
/// read here, in the pass that checks its block, and ``HTTP2StreamRouter`` holds the stream's DATA to it.
///
/// The rules, as nio-http2 1.46 has them:
/// - a name is a lowercase token (RFC 9110 section 5.6.2 without `A`-`Z`), after the colon for a pseudo-header;
/// - pseudo-headers come before the other fields, each at most once, known ones only; `:protocol` (extended
///   CONNECT, RFC 8441) is refused, as the listener does not offer it;
/// - a pseudo-header's value holds no control byte, space or DEL; any other value no NUL, LF or CR (here no control
///   byte but HTAB, as an HTTP/1 field value);
/// - `connection`, `proxy-connection`, `keep-alive`, `transfer-encoding` and `upgrade` are refused, and a
///   request's `te` may only say `trailers`;
/// - a request has `:method`, `:scheme` and `:path` (not empty), and may have `:authority`; a `CONNECT`
///   has `:method` and `:authority` only; trailers have no pseudo-header;
/// - a request's `content-length` is digits only (at most 18; nio-http2 also takes a sign), and every
///   `content-length` of a block says the same.
///
/// And four nio-http2 does not make. A request's `:path` starts with `/` or is the `*` of an `OPTIONS` (RFC 9113
/// section 8.3.1; nio-http2 takes any that is not empty), as the HTTP/1 decoder holds a request target to its
/// forms: a path the listener routes by one way and a backend reads another (`x`, `../x`) must not pass. Its bytes
/// and the `:method` are what an HTTP/1 request line may carry to the backend: the path visible ASCII, the method a
/// token (nio-http2 takes any byte above space but DEL in both; such a request could not be sent on). And a
/// request with both `:authority` and `host` has them equal (ASCII case aside): RFC 9113 section 8.3.1 forbids a
/// client to send them different, tells a server to treat such a request as malformed, and forbids deciding the
/// target from `host` when `:authority` is there; the proxy routes and forwards by `Host`, which an HTTP/2 request
/// would otherwise choose apart from the authority the client named. nginx answers such a request 400; here it is
/// malformed as the other failures are. And a request has an authority (`:authority`, or `host` without it), not
/// empty and of ``HostSyntax``'s form, as an HTTP/1.1 request's `Host` is.
enum HTTP2InboundBlock {
    /// A request whose `host` field names another authority than its `:authority` (RFC 9113 section 8.3.1).
    struct HostDiffersFromAuthority: Error {}
    /// A request whose `:path` is neither a path (`/...`) nor the `*` of an `OPTIONS` (RFC 9113 section 8.3.1), or
    /// holds a byte outside visible ASCII (as an HTTP/1 request target may not).
    struct InvalidPath: Error {}
    /// A request whose `:method` is not a token (RFC 9110 section 9.1).
    struct InvalidMethod: Error {}
    /// A request without an authority, or whose `:authority` (or `host` without one) is empty or not of
    /// ``HostSyntax``'s form (RFC 9113 section 8.3.1 asks for one, not empty and without userinfo; the rest as an
    /// HTTP/1 request's `Host` is held to it).
    struct InvalidAuthority: Error {}

    /// Checks a request's header block; returns the length its `content-length` declares, if it has one.
    @discardableResult
    static func validateRequest(_ block: HPACKHeaders) throws -> Int? {
        try Self.validate(block, isRequest: true)
    }

    /// Checks a trailer block.
    static func validateTrailers(_ block: HPACKHeaders) throws {
        _ = try Self.validate(block, isRequest: false)
    }

    private struct PseudoHeaders: OptionSet {
        let rawValue: UInt8
        static let path = PseudoHeaders(rawValue: 1 << 0)
        static let method = PseudoHeaders(rawValue: 1 << 1)
        static let scheme = PseudoHeaders(rawValue: 1 << 2)
        static let authority = PseudoHeaders(rawValue: 1 << 3)
        static let status = PseudoHeaders(rawValue: 1 << 4)
    }

    private static func validate(_ block: HPACKHeaders, isRequest: Bool) throws -> Int? {
        var seen: PseudoHeaders = []
        var regularFieldsBegan = false
        var isConnect = false
        var contentLength: Int?
        var authority: String?
        var hasHost = false
        var isOptions = false
        var pathIsAsterisk = false
        let inline = SmallASCIIText.layoutMatches
        for (name, value, _) in block {
            // Nearly every name is held inline (15 bytes at most): checked and told apart on its two words.
            let words = inline ? InlineFieldName(name) : nil
            let isPseudo = words?.startsWithColon ?? (name.utf8.first == UInt8(ascii: ":"))
            let isToken = words.map {
                SmallASCIIText.isLowercaseToken(first: $0.first, second: $0.second, count: $0.count, from: isPseudo ? 1 : 0)
            } ?? Self.isLowercaseToken(name, droppingFirst: isPseudo)
            guard isToken else {
                throw NIOHTTP2Errors.invalidHTTP2HeaderFieldName(name)
            }
            guard isPseudo else {
                regularFieldsBegan = true
                try Self.checkRegularField(name: name, words: words, value: value, isRequest: isRequest)
                // Pseudo-headers come first: a request's `:authority`, if it has one, is known here.
                if isRequest, words.map({ $0 == .host }) ?? (name.utf8.count == 4 && name == "host") {
                    // With an `:authority` (checked already) `host` must name the same; without, it is the authority.
                    if let authority {
                        guard hostMatchesAuthority(value, authority) else { throw HostDiffersFromAuthority() }
                    } else if value.isEmpty || !HostSyntax.isValid(value) {
                        throw InvalidAuthority()
                    }
                    hasHost = true
                }
                if isRequest, words.map({ $0 == .contentLength }) ?? (name.utf8.count == 14 && name == "content-length") {
                    guard let length = Self.length(value) else { throw NIOHTTP2Errors.contentLengthHeaderMalformedValue() }
                    if let earlier = contentLength, earlier != length { throw NIOHTTP2Errors.contentLengthHeadersMismatch() }
                    contentLength = length
                }
                continue
            }
            if regularFieldsBegan {
                throw NIOHTTP2Errors.pseudoHeaderAfterRegularHeader(name)
            }
            guard value.utf8AllSatisfy({ $0 > 0x20 && $0 != 0x7F }) else {
                throw NIOHTTP2Errors.invalidPseudoHeaderValue(name: name, value: value)
            }
            let pseudoHeader: PseudoHeaders
            switch PseudoHeaderName(name, words: words) {
            case .path?: pseudoHeader = .path
            case .method?: pseudoHeader = .method
            case .scheme?: pseudoHeader = .scheme
            case .authority?:
                pseudoHeader = .authority
                guard !value.isEmpty, HostSyntax.isValid(value) else { throw InvalidAuthority() }
                authority = value
            case .status?: pseudoHeader = .status
            case .protocol?: throw NIOHTTP2Errors.unsupportedPseudoHeader(name)
            case nil: throw NIOHTTP2Errors.unknownPseudoHeader(name)
            }
            if seen.contains(pseudoHeader) {
                throw NIOHTTP2Errors.duplicatePseudoHeader(name)
            }
            seen.insert(pseudoHeader)
            if pseudoHeader == .method {
                guard ProxyHeaders.isToken(value) else { throw InvalidMethod() }
                isConnect = value == "CONNECT"
                isOptions = value == "OPTIONS"
            } else if pseudoHeader == .path {
                guard let first = value.utf8.first else { throw NIOHTTP2Errors.emptyPathHeader() }
                guard HTTPRequestHead.isValidRequestTarget(value) else { throw InvalidPath() }
                // RFC 9113 section 8.3.1: a path (`/...`), or `*` for an `OPTIONS`; nothing a backend could read as
                // another path than the one the listener routes by (`x`, `../x`).
                if first != UInt8(ascii: "/") {
                    guard value == "*" else { throw InvalidPath() }
                    pathIsAsterisk = true
                }
            }
        }
        if pathIsAsterisk && !isOptions {
            throw InvalidPath()
        }
        let allowed: PseudoHeaders
        let mandatory: PseudoHeaders
        if !isRequest {
            (allowed, mandatory) = ([], [])
        } else if isConnect {
            (allowed, mandatory) = ([.method, .authority], [.method, .authority])
        } else {
            (allowed, mandatory) = ([.path, .method, .scheme, .authority], [.path, .method, .scheme])
        }
        guard allowed.isSuperset(of: seen), mandatory.isSubset(of: seen) else {
            throw NIOHTTP2Errors.invalidPseudoHeaders(block)
        }
        // RFC 9113 section 8.3.1: an `http` or `https` request names its authority, by `:authority` or `host`, and
        // neither is empty (an HTTP/1.1 request without `Host` is answered 400 likewise).
        if isRequest && !seen.contains(.authority) && !hasHost {
            throw InvalidAuthority()
        }
        return contentLength
    }

    /// A `content-length` value: 1 to 18 decimal digits, nothing else.
    private static func length(_ value: String) -> Int? {
        let count = value.utf8.count
        guard count > 0, count <= 18 else { return nil }
        var length = 0
        for byte in value.utf8 {
            guard byte &- UInt8(ascii: "0") < 10 else { return nil }
            length = length * 10 + Int(byte &- UInt8(ascii: "0"))
        }
        return length
    }

    /// A field that is not a pseudo-header: not connection-specific (RFC 9113 section 8.2.2), and a value
    /// without NUL, LF or CR (section 8.2.1). `words`: the name's inline form, when it has one (names are
    /// compared as those words then; `proxy-connection` and `transfer-encoding` are too long to have one).
    private static func checkRegularField(name: String, words: InlineFieldName?, value: String,
                                          isRequest: Bool) throws {
        let forbidden: Bool
        if let words {
            switch words {
            case .te: forbidden = isRequest && value != "trailers"
            case .upgrade, .connection, .keepAlive: forbidden = true
            default: forbidden = false
            }
        } else {
            switch name.utf8.count {
            case 2: forbidden = isRequest && name == "te" && value != "trailers"
            case 7: forbidden = name == "upgrade"
            case 10: forbidden = name == "connection" || name == "keep-alive"
            case 16: forbidden = name == "proxy-connection"
            case 17: forbidden = name == "transfer-encoding"
            default: forbidden = false
            }
        }
        if forbidden {
            throw NIOHTTP2Errors.forbiddenHeaderField(name: name, value: value)
        }
        // RFC 9113 section 8.2.1 forbids NUL, LF and CR; the other control bytes (but HTAB) are no field value either
        // (RFC 9110 section 5.5), and an HTTP/1 backend could not be sent them. It also makes a value that starts or
        // ends with SP or HTAB malformed: an HTTP/1 backend would trim them, so a rule here that matched the value
        // with them would not be reading what the backend reads.
        guard ProxyHeaders.isTrimmedFieldValue(value) else {
            throw NIOHTTP2Errors.invalidHTTP2HeaderFieldValue(name: name, value: value)
        }
    }

    /// Whether `name` (after its first byte, when `droppingFirst`) is a token in lowercase: not empty, and every
    /// byte one of ``tokenTable``'s.
    private static func isLowercaseToken(_ name: String, droppingFirst: Bool) -> Bool {
        let start = droppingFirst ? 1 : 0
        guard name.utf8.count > start else { return false }
        let table = Self.tokenTable
        return name.utf8.withContiguousStorageIfAvailable { bytes in
            for index in start..<bytes.count where !table[Int(bytes[index])] { return false }
            return true
        } ?? name.utf8.dropFirst(start).allSatisfy { table[Int($0)] }
    }

    /// The bytes of an HTTP/2 field name (RFC 9110's `tchar` without `A`-`Z`, RFC 9113 section 8.2.1).
    private static let tokenTable: [Bool] = (0..<256).map { byte in
        switch byte {
        case 0x21, 0x23...0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x30...0x39, 0x5E...0x7A, 0x7C, 0x7E: true
        default: false
        }
    }
}

/// Whether a request's `host` field names the authority its `:authority` names: the same text, ASCII case aside
/// (RFC 9113 section 8.3.1 for HTTP/2, RFC 9114 section 4.3.1 for HTTP/3, which says they MUST be the same).
func hostMatchesAuthority(_ host: String, _ authority: String) -> Bool {
    host.utf8.elementsEqual(authority.utf8) { a, b in
        (a &- UInt8(ascii: "A") < 26 ? a | 0x20 : a) == (b &- UInt8(ascii: "A") < 26 ? b | 0x20 : b)
    }
}

/// A field name in its inline form (``SmallASCIIText``: a small ASCII string's two words, the only form two equal
/// names of up to 15 bytes can have), so that telling names apart is comparing two integers where comparing the
/// strings called the standard library's compare for each name that did not match (about 22 instructions each,
/// callgrind).
struct InlineFieldName: Equatable {
    let first: UInt64
    let second: UInt64

    /// `name`'s words when it is held inline, nil otherwise. For callers that found
    /// ``SmallASCIIText/layoutMatches`` true.
    @inline(__always)
    init?(_ name: String) {
        guard let (first, second, _) = SmallASCIIText.inlineWords(name, layoutChecked: ()) else { return nil }
        self.first = first
        self.second = second
    }

    /// A known name's words; nothing equals them when the layout check failed (no caller has words then).
    private init(known name: String) {
        guard SmallASCIIText.layoutMatches, let (first, second, _) = SmallASCIIText.inlineWords(name, layoutChecked: ())
        else {
            (self.first, self.second) = (0, 0)
            return
        }
        (self.first, self.second) = (first, second)
    }

    /// The name's length in bytes.
    var count: Int { Int(truncatingIfNeeded: (self.second >> 56) & 0xF) }

    var startsWithColon: Bool { self.first & 0xFF == UInt64(UInt8(ascii: ":")) }

    static let path = InlineFieldName(known: ":path")
    static let method = InlineFieldName(known: ":method")
    static let scheme = InlineFieldName(known: ":scheme")
    static let authority = InlineFieldName(known: ":authority")
    static let status = InlineFieldName(known: ":status")
    static let `protocol` = InlineFieldName(known: ":protocol")
    static let contentLength = InlineFieldName(known: "content-length")
    static let host = InlineFieldName(known: "host")
    static let cookie = InlineFieldName(known: "cookie")
    // The connection-specific names short enough to be held inline (`proxy-connection` and `transfer-encoding` are not).
    static let te = InlineFieldName(known: "te")
    static let upgrade = InlineFieldName(known: "upgrade")
    static let connection = InlineFieldName(known: "connection")
    static let keepAlive = InlineFieldName(known: "keep-alive")
}

/// The pseudo-header fields nio-http2 knows.
enum PseudoHeaderName {
    case path, method, scheme, authority, status, `protocol`

    /// Which one `name` is, nil for none; `words`: its inline form, when it has one.
    @inline(__always)
    init?(_ name: String, words: InlineFieldName?) {
        if let words {
            switch words {
            case .path: self = .path
            case .method: self = .method
            case .scheme: self = .scheme
            case .authority: self = .authority
            case .status: self = .status
            case .protocol: self = .protocol
            default: return nil
            }
            return
        }
        switch name {
        case ":path": self = .path
        case ":method": self = .method
        case ":scheme": self = .scheme
        case ":authority": self = .authority
        case ":status": self = .status
        case ":protocol": self = .protocol
        default: return nil
        }
    }
}

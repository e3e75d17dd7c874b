import NIOHTTP1

/// A content coding the listener compresses with.
public enum ContentCoding: Sendable, Equatable {
    case brotli
    case gzip

    /// The `Content-Encoding` token.
    public var token: String {
        switch self {
        case .brotli: return "br"
        case .gzip: return "gzip"
        }
    }
}

/// Which of our codings a request's `Accept-Encoding` accepts (RFC 9110 section 12.5.3): a coding named with
/// a q-value above 0, or not named while `*` is (above 0). `q=0` refuses; a missing or empty field accepts
/// none here (nginx compresses only for clients that ask). `x-gzip` counts as `gzip`.
public struct AcceptedCodings: Sendable, Equatable {
    public var brotli: Bool
    public var gzip: Bool

    public init(brotli: Bool, gzip: Bool) {
        self.brotli = brotli
        self.gzip = gzip
    }

    public static let none = AcceptedCodings(brotli: false, gzip: false)
}

/// What the compressor needs to know about a request when its response comes.
public struct CompressionRequest: Sendable, Equatable {
    public var accepted: AcceptedCodings
    public var isHEAD: Bool
    public var version: HTTPVersion

    public init(accepted: AcceptedCodings, isHEAD: Bool, version: HTTPVersion) {
        self.accepted = accepted
        self.isHEAD = isHEAD
        self.version = version
    }

    public init(_ head: HTTPRequestHead) {
        var acceptEncoding: [String] = []
        for (name, value) in head.headers where ProxyHeaders.equalsIgnoringASCIICase(name.utf8, lowercased: "accept-encoding".utf8) {
            acceptEncoding.append(value)
        }
        self.init(accepted: ResponseCompressionPolicy.accepted(acceptEncoding), isHEAD: head.method.isHEAD,
                  version: head.version)
    }
}

/// The answer for one response: a coding (nil: send it as it is) and whether it gets `Vary: Accept-Encoding`.
/// Vary goes on every response that some client would get compressed, compressed here or not, so a cache
/// keeps the variants apart.
public struct CompressionDecision: Sendable, Equatable {
    public var coding: ContentCoding?
    public var vary: Bool

    public init(coding: ContentCoding?, vary: Bool) {
        self.coding = coding
        self.vary = vary
    }

    public static let untouched = CompressionDecision(coding: nil, vary: false)
}

/// The compression rules of SPEC section 4 and issue 8, as pure functions (no I/O, no state):
///
/// - Only a response with a `Content-Length` above ``minimumLength`` (1,024) bytes; a response without one
///   (chunked or close-delimited) is not compressed.
/// - Not one that is already encoded (any `Content-Encoding`), nor one with `Cache-Control: no-transform`,
///   nor a 206, 204, 304 or 1xx, nor the answer to a HEAD.
/// - Brotli for every content type; gzip only for ``gzipMediaTypes``. Brotli whenever the client accepts it,
///   also when it accepts gzip with a higher q-value (SPEC: "When a client accepts both, Brotli").
/// - Not for HTTP/1.0 clients (no chunked coding to frame the compressed body; nginx's `gzip_http_version
///   1.1` default).
public enum ResponseCompressionPolicy {
    /// Bodies of at most this many bytes go out as they are.
    public static let minimumLength = 1024

    /// The media types gzip is used for (the seed's list); Brotli takes every type.
    public static let gzipMediaTypes: Set<String> = [
        "text/xml", "text/plain", "text/css", "application/javascript", "application/x-javascript",
        "application/rss+xml", "application/atom+xml", "application/xml", "application/json",
    ]

    public static func decide(_ request: CompressionRequest, _ response: HTTPResponseHead) -> CompressionDecision {
        let code = response.status.code
        guard code >= 200, code != 204, code != 206, code != 304 else { return .untouched }
        let headers = response.headers
        guard let length = Self.contentLength(headers), length > Self.minimumLength else { return .untouched }
        guard !headers.contains(lowercased: "content-encoding"), !Self.forbidsTransform(headers) else { return .untouched }
        guard !request.isHEAD, request.version.major >= 2 || (request.version.major == 1 && request.version.minor >= 1) else {
            return CompressionDecision(coding: nil, vary: true)
        }
        if request.accepted.brotli {
            return CompressionDecision(coding: .brotli, vary: true)
        }
        if request.accepted.gzip, Self.gzipApplies(to: headers.first(lowercased: "content-type")) {
            return CompressionDecision(coding: .gzip, vary: true)
        }
        return CompressionDecision(coding: nil, vary: true)
    }

    /// The head of a response the decision touches: `Vary: Accept-Encoding` added (unless `Vary` already
    /// names it or is `*`); when compressed also `Content-Encoding`, no `Content-Length` (HTTP/1.1:
    /// `Transfer-Encoding: chunked` instead; HTTP/2: the stream frames the body), no `Accept-Ranges` (ranges
    /// of the encoded body are not what the client would ask for), and a strong `ETag` made weak (the bytes
    /// differ from the backend's, the meaning does not).
    public static func rewrite(_ head: inout HTTPResponseHead, _ decision: CompressionDecision, requestVersion: HTTPVersion) {
        if decision.vary && !Self.varyCoversAcceptEncoding(head.headers) {
            head.headers.add(name: "vary", value: "Accept-Encoding")
        }
        guard let coding = decision.coding else { return }
        head.headers.replaceOrAdd(name: "content-encoding", value: coding.token)
        head.headers.remove(name: "content-length")
        head.headers.remove(name: "accept-ranges")
        if requestVersion.major < 2 {
            head.headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
        }
        if let etag = head.headers.first(lowercased: "etag"), !etag.hasPrefix("W/") {
            head.headers.replaceOrAdd(name: "etag", value: "W/" + etag)
        }
    }

    /// Parses `Accept-Encoding` field values (each a comma-separated list of `coding;q=value`).
    public static func accepted(_ fields: [String]) -> AcceptedCodings {
        var brotli: Double?
        var gzip: Double?
        var any: Double?
        for field in fields {
            for element in field.split(separator: ",") {
                let parts = element.split(separator: ";", omittingEmptySubsequences: false)
                guard let first = parts.first else { continue }
                let coding = first.trimmingWhitespace.lowercased()
                var q = 1.0
                for parameter in parts.dropFirst() {
                    let pair = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                    guard pair.count == 2, pair[0].trimmingWhitespace.lowercased() == "q" else { continue }
                    q = Self.qValue(pair[1].trimmingWhitespace) ?? 0
                }
                switch coding {
                case "br": brotli = max(brotli ?? 0, q)
                case "gzip", "x-gzip": gzip = max(gzip ?? 0, q)
                case "*": any = max(any ?? 0, q)
                default: break
                }
            }
        }
        return AcceptedCodings(brotli: (brotli ?? any ?? 0) > 0, gzip: (gzip ?? any ?? 0) > 0)
    }

    /// RFC 9110 `qvalue`: `0` to `1` with at most three decimals; anything else is nil (and refuses).
    static func qValue(_ text: Substring) -> Double? {
        let bytes = Array(text.utf8)
        guard let first = bytes.first, first == UInt8(ascii: "0") || first == UInt8(ascii: "1") else { return nil }
        if bytes.count == 1 { return first == UInt8(ascii: "1") ? 1 : 0 }
        guard bytes[1] == UInt8(ascii: "."), bytes.count <= 5 else { return nil }
        let decimals = bytes.dropFirst(2)
        guard decimals.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        if first == UInt8(ascii: "1") {
            return decimals.allSatisfy { $0 == UInt8(ascii: "0") } ? 1 : nil
        }
        return Double(text)
    }

    /// One `Content-Length` of digits only; nil when absent, repeated with different values, or malformed.
    static func contentLength(_ headers: HTTPHeaders) -> Int? {
        var result: Int?
        for (name, value) in headers where ProxyHeaders.equalsIgnoringASCIICase(name.utf8, lowercased: "content-length".utf8) {
            guard !value.isEmpty, value.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                  let length = Int(value), result == nil || result == length
            else { return nil }
            result = length
        }
        return result
    }

    /// `Cache-Control` has the `no-transform` directive (RFC 9111 section 5.2.2.6).
    static func forbidsTransform(_ headers: HTTPHeaders) -> Bool {
        guard headers.contains(lowercased: "cache-control") else { return false }
        return headers[canonicalForm: "cache-control"].contains { $0.lowercased() == "no-transform" }
    }

    /// The media type (before any parameter, any case) is one of ``gzipMediaTypes``.
    static func gzipApplies(to contentType: String?) -> Bool {
        guard let contentType else { return false }
        let mediaType = contentType.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return Self.gzipMediaTypes.contains(mediaType.trimmingWhitespace.lowercased())
    }

    static func varyCoversAcceptEncoding(_ headers: HTTPHeaders) -> Bool {
        guard headers.contains(lowercased: "vary") else { return false }
        return headers[canonicalForm: "vary"].contains {
            let token = $0.lowercased()
            return token == "*" || token == "accept-encoding"
        }
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs.
    fileprivate var trimmingWhitespace: Substring {
        let isOWS: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = self.firstIndex(where: { !isOWS($0) }), let last = self.lastIndex(where: { !isOWS($0) }) else {
            return Substring()
        }
        return self[first...last]
    }
}

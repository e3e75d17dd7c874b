import NIOCore

/// One header field of an HTTP/3 request or response, as bytes nghttp3 decoded (names are lower case on
/// the wire, RFC 9114 section 4.2).
public struct HTTP3HeaderField: Equatable, Sendable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// A request's header section: the pseudo-header fields apart, then the regular fields in order.
/// nghttp3 has already checked the section's form (RFC 9114 section 4.3: pseudo fields first, no
/// connection-specific fields, `:method`, `:scheme` and `:path` present except for CONNECT).
public struct HTTP3RequestHead: Equatable, Sendable {
    public var method: String
    public var scheme: String
    public var authority: String
    public var path: String
    public var fields: [HTTP3HeaderField]
    /// The stream ended with the header section: a request without body (nghttp3's `end_headers` `fin`).
    public var endsStream: Bool

    public init(method: String, scheme: String, authority: String, path: String, fields: [HTTP3HeaderField],
                endsStream: Bool = false) {
        self.method = method
        self.scheme = scheme
        self.authority = authority
        self.path = path
        self.fields = fields
        self.endsStream = endsStream
    }
}

/// What happened on one request stream of a connection, in order, for the listener's exchange adapter.
/// Produced by nghttp3's callbacks and handed over after the C call returned
/// (``QUICConnection/takeStreamEvents()``).
public enum HTTP3StreamEvent: Equatable, Sendable {
    /// The request's header section.
    case head(streamID: Int64, HTTP3RequestHead)
    /// The request's header section is over the listener's limits (``QUICConnectionConfiguration/maxFieldSectionSize``,
    /// counted as HTTP/3 does: name + value + 32 per field; or more than ``QUICConnectionConfiguration/maxHeaderFields``
    /// fields): answer 431 (the fields were not kept).
    case headTooLarge(streamID: Int64)
    /// Request body bytes. The client's flow-control credit for them comes back only when the adapter
    /// says it has passed them on (``QUICConnection/consumeRequestBody(streamID:bytes:)``), which bounds
    /// what one stream can make us buffer to its window.
    case body(streamID: Int64, ByteBuffer)
    /// The request is complete (the client closed its side of the stream).
    case end(streamID: Int64)
    /// The client abandoned the request (RESET_STREAM or STOP_SENDING) with this HTTP/3 error code.
    case reset(streamID: Int64, code: UInt64)
    /// The request's body disagreed with its `content-length` (longer, or shorter when the stream ended): a
    /// malformed request, which the connection has reset with H3_MESSAGE_ERROR (RFC 9114 section 4.1.2).
    case malformed(streamID: Int64)
    /// The response's buffered bytes fell below ``QUICConnection/responseBufferLowWater``: more may be read
    /// from the backend.
    case writable(streamID: Int64)
    /// The stream is gone (both sides closed or reset); nothing more happens on it.
    case closed(streamID: Int64)
}

import NIOCore
import NIOHTTP1

/// Settings of the client-side HTTP/1.1 pipeline.
public struct EdgePipelineOptions {
    public var limits: StrictHTTPRequestDecoder.Limits
    public var headerTimeout: TimeAmount
    /// Asked each time a connection goes idle.
    public var idleTimeout: () -> TimeAmount
    /// A connection opening with the HTTP/2 preface is handed to HTTP/2 (plain HTTP listeners: h2c with
    /// prior knowledge). The application handler gets ``HTTP2PrefaceEvent`` and makes the switch.
    public var acceptsHTTP2Preface: Bool

    public init(limits: StrictHTTPRequestDecoder.Limits, headerTimeout: TimeAmount, idleTimeout: @escaping () -> TimeAmount,
                acceptsHTTP2Preface: Bool = false) {
        self.limits = limits
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.acceptsHTTP2Preface = acceptsHTTP2Preface
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// The one place the client-side pipeline is assembled, from the socket inwards:
    ///
    /// 1. `HTTPResponseEncoder` without automatic framing (the proxy frames every response itself)
    /// 2. ``StrictHTTPRequestDecoder`` (400/431 decisions, head-started events)
    /// 3. ``ConnectionTimeoutHandler`` (header timeout: 408; idle timeout: close)
    /// 4. ``HTTPPipeliningHandler`` (one exchange at a time, graceful quiesce)
    /// 5. ``EdgeErrorHandler`` (writes 400/408/431 and closes)
    /// 6. `application`: the proxy
    public func configureEdgeHTTPPipeline(
        options: EdgePipelineOptions,
        application: some ChannelHandler
    ) throws {
        var encoderConfiguration = HTTPResponseEncoder.Configuration()
        encoderConfiguration.automaticallySetFramingHeaders = false
        try self.addHandler(HTTPResponseEncoder(configuration: encoderConfiguration))
        try self.addHandler(ByteToMessageHandler(StrictHTTPRequestDecoder(limits: options.limits,
                                                                          acceptsHTTP2Preface: options.acceptsHTTP2Preface)))
        try self.addHandler(ConnectionTimeoutHandler(headerTimeout: options.headerTimeout, idleTimeout: options.idleTimeout))
        try self.addHandler(HTTPPipeliningHandler())
        try self.addHandler(EdgeErrorHandler())
        try self.addHandler(application)
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// Ends HTTP/1 on a connection whose decoder handed off (an h2c preface; a WebSocket upgrade the backend
    /// accepted, after its `101` was written): takes out the handlers ``configureEdgeHTTPPipeline(options:application:)``
    /// added, lets `replacement` add what follows, and removes the decoder last, which passes the bytes it
    /// held, unread, to the replacement. Whatever sits before the HTTP/1 handlers (TLS) stays.
    public func leaveEdgeHTTPPipeline(
        application: some RemovableChannelHandler,
        replacement: () throws -> Void
    ) throws {
        self.removeHandler(application, promise: nil)
        self.removeHandler(try self.handler(type: EdgeErrorHandler.self), promise: nil)
        self.removeHandler(try self.handler(type: HTTPPipeliningHandler.self), promise: nil)
        self.removeHandler(try self.handler(type: ConnectionTimeoutHandler.self), promise: nil)
        self.removeHandler(try self.handler(type: HTTPResponseEncoder.self), promise: nil)
        try replacement()
        self.removeHandler(try self.handler(type: ByteToMessageHandler<StrictHTTPRequestDecoder>.self), promise: nil)
    }
}

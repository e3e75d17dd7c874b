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
    /// Response compression: nil leaves the handler out (a listener with `compression: false` when the
    /// connection was accepted); otherwise its settings and whether it is still on, asked per response.
    public var compression: ResponseCompressionOptions?
    /// What the event loop's HTTP/1 connections share (nil: each head and field text allocated anew).
    public var memory: HTTP1LoopMemory?
    /// Where an idle connection's socket waits off its channel (nil: a connection keeps its channel while
    /// it idles). Only for plain TCP: a TLS session lives in its channel.
    public var parking: IdleConnectionParking?

    public init(limits: StrictHTTPRequestDecoder.Limits, headerTimeout: TimeAmount, idleTimeout: @escaping () -> TimeAmount,
                acceptsHTTP2Preface: Bool = false, compression: ResponseCompressionOptions? = nil,
                memory: HTTP1LoopMemory? = nil, parking: IdleConnectionParking? = nil) {
        self.limits = limits
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.acceptsHTTP2Preface = acceptsHTTP2Preface
        self.compression = compression
        self.memory = memory
        self.parking = parking
    }
}

/// What a ``ResponseCompressionHandler`` is built from.
public struct ResponseCompressionOptions {
    public var settings: CompressionSettings
    /// Shared by the handlers of one listener on one event loop; nil: no limit.
    public var budget: CompressionBudget?
    /// Asked once per response: the listener's current `compression`.
    public var isEnabled: () -> Bool

    public init(settings: CompressionSettings = CompressionSettings(), budget: CompressionBudget? = nil,
                isEnabled: @escaping () -> Bool) {
        self.settings = settings
        self.budget = budget
        self.isEnabled = isEnabled
    }

    public func makeHandler() -> ResponseCompressionHandler {
        ResponseCompressionHandler(settings: self.settings, budget: self.budget, isEnabled: self.isEnabled)
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// The one place the client-side pipeline is assembled, from the socket inwards:
    ///
    /// 1. ``HTTP1ConnectionHandler`` (decodes with ``StrictHTTPRequestDecoder``: 400/431 decisions; header
    ///    timeout: 408; idle timeout: close; one exchange at a time, graceful quiesce; writes 400/408/431 and
    ///    closes; writes the response bytes, framed as the proxy said: it frames every response itself)
    /// 2. ``ResponseCompressionHandler``, only when `options.compression` is set: after the connection
    ///    handler it sees one exchange at a time, and the edge's own short error responses skip it
    /// 3. `application`: the proxy. When it is a ``DirectExchangeApplication`` and nothing sits between it
    ///    and the connection handler (no compressor), the two call each other directly.
    public func configureEdgeHTTPPipeline(
        options: EdgePipelineOptions,
        application: some ChannelHandler
    ) throws {
        let connection = HTTP1ConnectionHandler(
            decoder: StrictHTTPRequestDecoder(limits: options.limits, acceptsHTTP2Preface: options.acceptsHTTP2Preface,
                                              fieldTexts: options.memory?.fieldTexts),
            headerTimeout: options.headerTimeout, idleTimeout: options.idleTimeout, headBuffer: options.memory?.heads,
            parking: options.parking)
        // Named: an unnamed handler gets a name made by string interpolation ("handler0"), about 350
        // instructions each on every new connection (callgrind).
        try self.addHandler(connection, name: "http1")
        if let compression = options.compression {
            try self.addHandler(compression.makeHandler(), name: "compression")
        }
        try self.addHandler(application, name: "application")
        if options.compression == nil, let direct = application as? DirectExchangeApplication {
            connection.attachDirectly(direct)
        }
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// Ends HTTP/1 on a connection whose decoder handed off (an h2c preface; a WebSocket upgrade the backend
    /// accepted, after its `101` was written): takes out the handlers ``configureEdgeHTTPPipeline(options:application:)``
    /// added, lets `replacement` add what follows, and removes the connection handler last, which passes the
    /// bytes its decoder held, unread, to the replacement. Whatever sits before the HTTP/1 handlers (TLS) stays.
    public func leaveEdgeHTTPPipeline(
        application: some RemovableChannelHandler,
        replacement: () throws -> Void
    ) throws {
        self.removeHandler(application, promise: nil)
        if let compressor = try? self.handler(type: ResponseCompressionHandler.self) {
            self.removeHandler(compressor, promise: nil)
        }
        let connection = try self.handler(type: HTTP1ConnectionHandler.self)
        try replacement()
        self.removeHandler(connection, promise: nil)
    }
}

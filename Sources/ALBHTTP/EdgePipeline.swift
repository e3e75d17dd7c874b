import NIOCore
import NIOHTTP1

/// Settings of the client-side HTTP/1.1 pipeline.
public struct EdgePipelineOptions {
    public var limits: StrictHTTPRequestDecoder.Limits
    public var headerTimeout: TimeAmount
    /// Asked each time a connection goes idle.
    public var idleTimeout: () -> TimeAmount

    public init(limits: StrictHTTPRequestDecoder.Limits, headerTimeout: TimeAmount, idleTimeout: @escaping () -> TimeAmount) {
        self.limits = limits
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
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
        try self.addHandler(ByteToMessageHandler(StrictHTTPRequestDecoder(limits: options.limits)))
        try self.addHandler(ConnectionTimeoutHandler(headerTimeout: options.headerTimeout, idleTimeout: options.idleTimeout))
        try self.addHandler(HTTPPipeliningHandler())
        try self.addHandler(EdgeErrorHandler())
        try self.addHandler(application)
    }
}

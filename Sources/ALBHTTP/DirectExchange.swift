import NIOCore
import NIOHTTP1

// Direct calls between the handler that ends a client transport and the application right after it (the proxy),
// instead of request and response parts going through the pipeline: there each part is wrapped in a `NIOAny`,
// passed hop by hop and cast back at run time, about 800 instructions a part (callgrind), five parts a proxied
// request. The transport attaches the application (``HTTP1ConnectionHandler/attachDirectly(_:)``, the HTTP/2
// stream codec's likewise) only while nothing sits between the two; events other than parts (read-complete,
// errors, user events, reads, closes) still pass through the pipeline, and everything runs on the event loop in
// call order, so parts and events keep their order.

/// The handler that ends a client transport, as an attached application sees it: where its response parts go.
public protocol DirectExchangeTransport: AnyObject {
    /// A response part, as `write(context:data:promise:)` would have brought it.
    func write(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?)
    /// A response head whose backend fields come as the lines they arrived in (``HTTP1FieldLines``), before
    /// `head`'s own. Only an HTTP/1 transport writes them as they are: by default they become fields again.
    func write(head: HTTPResponseHead, fieldLines: HTTP1FieldLines, promise: EventLoopPromise<Void>?)
    /// A flush, as `flush(context:)` would have brought it.
    func flush()
    /// Ends the direct calls both ways: parts go through the pipeline again.
    func detachApplication()
}

extension DirectExchangeTransport {
    public func write(head: HTTPResponseHead, fieldLines: HTTP1FieldLines, promise: EventLoopPromise<Void>?) {
        var head = head
        head.headers = fieldLines.headers(followedBy: head.headers)
        self.write(.head(head), promise: promise)
    }
}

/// An application handler that takes request parts from the transport handler right before it by direct call,
/// and writes its response parts to it the same way. Both happen on the event loop, with the application's own
/// context where it needs one.
public protocol DirectExchangeApplication: AnyObject {
    /// A request part, where `channelRead` would have brought it.
    func requestPartArrived(_ part: HTTPServerRequestPart)
    /// Whether the next request head may come with its fields as the lines the client sent
    /// (``requestHeadArrived(_:summary:fieldLines:)``): asked by an HTTP/1 transport as each head starts.
    var takesRequestFieldLines: Bool { get }
    /// A request head whose fields are `fieldLines` (`head` has none): all of them as the client sent them, what
    /// the transport's decoder learnt of them in `summary`. By default they become the head's fields.
    func requestHeadArrived(_ head: HTTPRequestHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines)
    /// Response parts go to `transport` by direct call from now on; nil: through the pipeline again.
    func writesDirectly(to transport: (any DirectExchangeTransport)?)
}

extension DirectExchangeApplication {
    public var takesRequestFieldLines: Bool { false }

    public func requestHeadArrived(_ head: HTTPRequestHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines) {
        self.requestPartArrived(.head(head.withFields(of: fieldLines)))
    }
}

extension HTTPRequestHead {
    /// The head with `fieldLines` as its fields (a head whose fields came as lines, for a consumer that reads them).
    public func withFields(of fieldLines: HTTP1FieldLines) -> HTTPRequestHead {
        var head = self
        head.headers = fieldLines.headers
        return head
    }
}

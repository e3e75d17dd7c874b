import ALBHTTP
import Atomics
import ALBQUIC
import NIOCore
import NIOHTTP1

/// Where a QUIC listener's request streams go.
protocol HTTP3RequestRouter: AnyObject {
    /// One connection's stream events, in order (or the news that the connection is gone).
    func route(_ record: QUICStreamEvents, writer: QUICConnectionWriter)
    /// The listener stops: every exchange is abandoned.
    func closeAll()
}

/// The data plane's router: one ``HTTP3Exchange`` per request stream, kept per connection until nghttp3
/// closes the stream or the connection goes. New requests go to the instance that owns the socket now (a
/// replacement on the same address takes the socket over, ``DataPlane/handOver(from:to:)``); running ones
/// finish with theirs. On the listener's event loop only.
final class HTTP3ProxyRouter: HTTP3RequestRouter {
    private let socket: ListenerSocket
    private let eventLoop: EventLoop
    /// The socket's owner when last asked, and its state on this loop (looked up under a lock, so only
    /// when the owner changes).
    private var runtime: ListenerRuntime
    private var loopState: ListenerLoopState
    private var exchanges: [ObjectIdentifier: [Int64: HTTP3Exchange]] = [:]
    /// The connections counted in the socket's ``ListenerSocket/quicConnections`` (by their first ID).
    private var openConnections: Set<QUICConnectionID> = []

    init(socket: ListenerSocket, eventLoop: EventLoop) {
        self.socket = socket
        self.eventLoop = eventLoop
        self.runtime = socket.currentOwner
        self.loopState = runtime.loopState(for: eventLoop)
    }

    private func refreshOwner() {
        let owner = socket.currentOwner
        guard owner !== runtime else { return }
        runtime = owner
        loopState = owner.loopState(for: eventLoop)
    }

    func route(_ record: QUICStreamEvents, writer: QUICConnectionWriter) {
        let key = ObjectIdentifier(record.connection)
        if record.connectionClosed {
            let gone = exchanges.removeValue(forKey: key) ?? [:]
            for exchange in gone.values { exchange.streamGone() }
            return
        }
        for event in record.events {
            switch event {
            case .head(let streamID, let head):
                guard exchanges[key]?[streamID] == nil else { continue }  // trailers are not a new request
                refreshOwner()
                // A path as an HTTP/1 target may carry it (nghttp3 takes bytes of 0x80 and above).
                if head.hasMalformedAuthority || !HTTPRequestHead.isValidRequestTarget(head.path) {
                    refuse(streamID: streamID, head: head, with: .badRequest, on: record.connection, writer: writer)
                    continue
                }
                let exchange = HTTP3Exchange(connection: record.connection, streamID: streamID, head: head,
                                             writer: writer, runtime: runtime, loopState: loopState,
                                             listenerPort: runtime.boundPort.load(ordering: .relaxed))
                exchanges[key, default: [:]][streamID] = exchange
                exchange.start(bodyFollows: !head.endsStream)
            case .headTooLarge(let streamID):
                refreshOwner()
                refuse(streamID: streamID, head: nil, with: .requestHeaderFieldsTooLarge, on: record.connection,
                       writer: writer)
            case .body(let streamID, let bytes):
                exchanges[key]?[streamID]?.requestBody(bytes)
            case .end(let streamID):
                exchanges[key]?[streamID]?.requestEnd()
            case .reset(let streamID, _):
                exchanges[key]?[streamID]?.clientAbandoned()
            case .malformed(let streamID):
                exchanges[key]?[streamID]?.requestMalformed()
            case .writable(let streamID):
                exchanges[key]?[streamID]?.responseWritable()
            case .closed(let streamID):
                exchanges[key]?.removeValue(forKey: streamID)?.streamGone()
                if exchanges[key]?.isEmpty == true { exchanges[key] = nil }
            }
        }
    }

    /// The endpoint's connection events, for the listener's counters (the status file's `totalConnections`)
    /// and the open connections a drain waits for (`activeConnections`).
    func connectionEvent(_ event: QUICEndpointEvent) {
        switch event {
        case .connectionOpened(let id, _):
            refreshOwner()
            loopState.counters.totalConnections &+= 1
            if openConnections.insert(id).inserted {
                socket.quicConnections.wrappingIncrement(ordering: .relaxed)
            }
        case .connectionClosed(let id, _):
            if openConnections.remove(id) != nil {
                socket.quicConnections.wrappingDecrement(ordering: .relaxed)
            }
        case .connectionRefused, .handshakeCompleted:
            break
        }
    }

    /// A request the listener answers itself, with the usual short body, as the HTTP/1 edge answers; the rest of
    /// it is not read: 431 for a header section over the edge limits (`head` nil: its fields were not kept), 400 for
    /// a malformed one (its authority, ``HTTP3RequestHead/hasMalformedAuthority``, or its path).
    private func refuse(streamID: Int64, head: HTTP3RequestHead?, with status: HTTPResponseStatus,
                        on connection: QUICConnection, writer: QUICConnectionWriter) {
        loopState.counters.totalRequests &+= 1
        loopState.counters.countResponse(status: Int(status.code), clientProtocol: .http3)
        loopState.counters.countEdgeRefusal(status: Int(status.code))
        let body = EdgeResponse.body(for: status)
        connection.respond(streamID: streamID, status: Int(status.code),
                           fields: [HTTP3HeaderField(name: "content-type", value: "text/plain; charset=utf-8"),
                                    HTTP3HeaderField(name: "content-length", value: String(body.utf8.count))],
                           endStream: false)
        connection.sendBody(streamID: streamID, ByteBuffer(string: body))
        connection.endResponse(streamID: streamID)
        connection.stopReadingRequest(streamID: streamID)
        writer.connectionNeedsWrite(connection)
        loopState.accessLog?.append(AccessLogRecord(
            time: HTTP3Exchange.wallClock(), listener: runtime.name, protocol: "HTTP/3",
            clientIP: connection.remoteAddress.ipAddress ?? "", clientPort: connection.remoteAddress.port ?? 0,
            method: head?.method ?? "", host: head?.authority ?? "", path: head?.path ?? "",
            status: Int(status.code), requestBytes: 0, responseBytes: body.utf8.count, upstream: "",
            upstreamStatus: nil, durationMs: 0, tlsVersion: "TLSv1.3"))
    }

    func closeAll() {
        // The channel is gone, and every connection with it.
        socket.quicConnections.wrappingDecrement(by: openConnections.count, ordering: .relaxed)
        openConnections = []
        let all = exchanges
        exchanges = [:]
        for streams in all.values {
            for exchange in streams.values { exchange.streamGone() }
        }
    }
}

@available(*, unavailable)
extension HTTP3ProxyRouter: Sendable {}

extension HTTP3RequestHead {
    /// The request's authority is missing or malformed: neither `:authority` nor a `host` field names one (RFC 9114
    /// section 4.3.1: an `https` request has one of them, not empty), or it is not of ``HostSyntax``'s form (as an
    /// HTTP/1 request's `Host` is held to it), or a `host` field names another authority than `:authority` (section
    /// 4.3.1: both MUST hold the same value when both are present). nghttp3 checks each field's characters, not the
    /// two against each other.
    var hasMalformedAuthority: Bool {
        if self.authority.isEmpty {
            var hosts = 0
            for field in self.fields where field.name == "host" {
                guard !field.value.isEmpty, HostSyntax.isValid(field.value) else { return true }
                hosts += 1
            }
            return hosts == 0
        }
        return !HostSyntax.isValid(self.authority)
            || self.fields.contains { $0.name == "host" && !hostMatchesAuthority($0.value, self.authority) }
    }
}

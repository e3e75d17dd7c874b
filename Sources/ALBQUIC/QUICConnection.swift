import CNghttp3
import CNgtcp2
import NIOCore

/// Why creating or running a QUIC connection failed.
public enum QUICConnectionError: Error, Equatable, Sendable {
    /// A ``QUICConnectionConfiguration`` value out of the range ngtcp2 or the RFC allows.
    case invalidConfiguration(String)
    /// The packet cannot open a connection (not a QUIC v1 Initial with a source connection ID).
    case notAnInitial
    /// An address that is neither IPv4 nor IPv6.
    case unsupportedAddress
    /// An ngtcp2 call failed: the function and `ngtcp2_strerror`'s text.
    case ngtcp2(function: String, reason: String)
    /// A GnuTLS call failed: the function and `gnutls_strerror`'s text.
    case gnutls(function: String, reason: String)
}

/// What happened inside a connection during a call, for the listener to act on after the call returns
/// (ngtcp2's callbacks only record them: acting inside a callback would re-enter the `ngtcp2_conn`).
public enum QUICConnectionEvent: Equatable, Sendable {
    /// The TLS handshake completed (server side: the client's Finished was received and verified).
    case handshakeCompleted
    /// ngtcp2 issued a new connection ID (NEW_CONNECTION_ID): route it to this connection.
    case connectionIDIssued(QUICConnectionID)
    /// ngtcp2 retired a connection ID: stop routing it.
    case connectionIDRetired(QUICConnectionID)
}

/// How a connection ended.
public enum QUICConnectionEnd: Equatable, Sendable {
    /// `max_idle_timeout` passed without a packet: nothing is sent (RFC 9000 section 10.1).
    case idleTimeout
    /// The handshake did not complete within the handshake timeout.
    case handshakeTimeout
    /// The client sent CONNECTION_CLOSE; the draining period has passed.
    case closedByPeer
    /// We sent CONNECTION_CLOSE (the reason is for logs); the closing period has passed.
    case closedByUs(String)
    /// ngtcp2 asked to drop the connection without a word (`NGTCP2_ERR_DROP_CONN`, `NGTCP2_ERR_RETRY`), or
    /// the connection could not even write its CONNECTION_CLOSE (no keys yet).
    case dropped(String)
}

/// One server-side QUIC connection: the owner of an `ngtcp2_conn`, the GnuTLS session it drives, and the
/// `ngtcp2_crypto_conn_ref` through which ngtcp2's crypto helper finds the connection from the session.
/// It frees them in `deinit` (connection, session, reference, in that order), and keeps the credentials
/// alive as long as the session.
///
/// It performs no I/O: ``read(_:path:ecn:now:)`` takes one received datagram, ``write(now:)`` returns the
/// datagrams to send, ``expiry`` says when ``handleExpiry(now:)`` is due, and ``takeEvents()`` hands over
/// what happened (handshake, connection IDs). Time is ngtcp2's: nanoseconds of a monotonic clock
/// (`NIODeadline.uptimeNanoseconds`), passed in by the caller so tests control it.
///
/// HTTP/3 runs on it from the 1-RTT key on (``HTTP3Connection``, nghttp3): request streams come out of
/// ``takeStreamEvents()`` and responses go in through ``respond(streamID:status:fields:endStream:)``,
/// ``sendBody(streamID:_:)``, ``endResponse(streamID:)`` and ``reset(streamID:code:)``; then ``write(now:)``
/// sends them. It belongs to one event loop and is not `Sendable`.
public final class QUICConnection {
    /// Our first source connection ID, and the client's original destination connection ID (which keeps
    /// routing its retransmitted Initials here).
    public let initialConnectionID: QUICConnectionID
    public let originalDestinationConnectionID: QUICConnectionID
    /// The client's address as of its last datagram (it may migrate): the access log's client.
    public private(set) var remoteAddress: SocketAddress

    private let connection: OpaquePointer
    private let session: OpaquePointer
    private let connectionReference: UnsafeMutablePointer<ngtcp2_crypto_conn_ref>
    /// Where ngtcp2 writes the path of each packet it writes: self-referential (`ngtcp2_path_storage_zero`
    /// points the path at the buffers inside it), so it lives on the heap and never moves.
    private let writePath: UnsafeMutablePointer<ngtcp2_path_storage>
    private let callbackState: QUICConnectionCallbackState
    /// Where a packet is assembled: with `NGTCP2_WRITE_STREAM_FLAG_MORE`, ngtcp2 keeps writing into the
    /// buffer of the previous call, so it must not move between calls.
    private let packetBuffer: UnsafeMutablePointer<UInt8>
    private let packetBufferSize: Int
    private let credentials: QUICServerCredentials
    private let allocator: ByteBufferAllocator

    private enum State {
        case open
        /// We sent CONNECTION_CLOSE; each datagram received until `until` may get `packet` again, on an
        /// exponential backoff (`received` counts them) so that a flood is not answered one for one.
        case closing(packet: ByteBuffer, path: QUICPath, until: UInt64, received: Int, reason: String)
        /// The peer closed; nothing is sent until `until` (RFC 9000 section 10.2.2).
        case draining(until: UInt64)
        case closed(QUICConnectionEnd)
    }

    private var state = State.open
    /// A CONNECTION_CLOSE to (re)send on the next ``write(now:)``.
    private var closePacketOwed = false
    /// Where a graceful shutdown (``beginGracefulShutdown(now:)``) stands; `nil` while serving.
    private var gracefulShutdown: GracefulShutdown?

    /// RFC 9114 section 5.2: a GOAWAY that promises nothing yet, then after about a round trip (requests the
    /// client sent meanwhile are still accepted) the GOAWAY with the last stream served; then
    /// CONNECTION_CLOSE with H3_NO_ERROR once no request stream is left.
    private enum GracefulShutdown {
        case noticeSent(finalGoawayAt: UInt64)
        case finalGoawaySent
    }

    /// Creates the connection for a client's first Initial (the triage's `.newConnection`) on `path`; the
    /// caller then passes the same datagram to ``read(_:path:ecn:now:)``.
    ///
    /// `validatedRetry` is set for an Initial whose Retry token ``QUICRetryTokens/verify(_:header:remote:now:)``
    /// accepted: the client's original destination ID sealed in it, and the token. The transport parameters
    /// then name both IDs (RFC 9000 section 7.3), and the client's address counts as validated.
    public init(initial: QUICInitialPacket, path: QUICPath, credentials: QUICServerCredentials,
                configuration: QUICConnectionConfiguration, resetKey: QUICStatelessResetKey, now: UInt64,
                validatedRetry: (originalDestinationConnectionID: QUICConnectionID, token: [UInt8])? = nil,
                allocator: ByteBufferAllocator = ByteBufferAllocator()) throws {
        try configuration.validate()
        let header = initial.header
        guard header.form == .long, header.version == .v1, header.longPacketType == .initial,
              let clientSourceID = header.sourceConnectionID,
              clientSourceID.count <= QUICConnectionID.maxV1Length,
              header.destinationConnectionID.count <= QUICConnectionID.maxV1Length
        else { throw QUICConnectionError.notAnInitial }

        let sourceID = QUICConnectionID.random(count: configuration.connectionIDLength)
        guard let resetToken = resetKey.token(for: sourceID) else {
            throw QUICConnectionError.ngtcp2(function: "ngtcp2_crypto_generate_stateless_reset_token",
                                             reason: "failed")
        }
        initialConnectionID = sourceID
        originalDestinationConnectionID = header.destinationConnectionID
        remoteAddress = path.remote
        self.credentials = credentials
        self.allocator = allocator
        callbackState = QUICConnectionCallbackState(resetKey: resetKey, configuration: configuration)

        var settings = ngtcp2_settings()
        alb_ngtcp2_settings_default(&settings)
        settings.initial_ts = now
        settings.handshake_timeout = UInt64(configuration.handshakeTimeout.nanoseconds)
        settings.max_tx_udp_payload_size = configuration.maxSentUDPPayloadSize
        // `settings.token` (below) only for a verified Retry token: in 0.12.1 a token lifts the
        // anti-amplification limit (the path counts as validated).

        var params = ngtcp2_transport_params()
        alb_ngtcp2_transport_params_default(&params)
        params.initial_max_data = configuration.initialMaxData
        params.initial_max_stream_data_bidi_remote = configuration.initialMaxStreamDataBidiRemote
        params.initial_max_stream_data_uni = configuration.initialMaxStreamDataUni
        params.initial_max_streams_bidi = configuration.initialMaxStreamsBidi
        params.initial_max_streams_uni = configuration.initialMaxStreamsUni
        params.max_idle_timeout = UInt64(configuration.idleTimeout.nanoseconds)
        params.max_udp_payload_size = UInt64(configuration.maxReceivedUDPPayloadSize)
        params.active_connection_id_limit = configuration.activeConnectionIDLimit
        params.stateless_reset_token_present = 1
        withUnsafeMutableBytes(of: &params.stateless_reset_token) { destination in
            destination.copyBytes(from: resetToken.prefix(destination.count))
        }
        params.original_dcid = ngtcp2_cid(header.destinationConnectionID)
        if let validatedRetry {
            guard validatedRetry.originalDestinationConnectionID.count <= QUICConnectionID.maxV1Length else {
                throw QUICConnectionError.notAnInitial
            }
            params.original_dcid = ngtcp2_cid(validatedRetry.originalDestinationConnectionID)
            // The client's DCID now is the source ID of our Retry.
            params.retry_scid = ngtcp2_cid(header.destinationConnectionID)
            params.retry_scid_present = 1
        }

        var callbacks = QUICConnectionCallbackState.makeCallbacks()
        var clientID = ngtcp2_cid(clientSourceID)
        var ourID = ngtcp2_cid(sourceID)
        var created: OpaquePointer?
        let userData = Unmanaged.passUnretained(callbackState).toOpaque()
        // A verified token marks the path as validated (0.12.1); ngtcp2 copies it during the call.
        var token = validatedRetry?.token ?? []
        let code = token.withUnsafeMutableBufferPointer { tokenBuffer in
            settings.token = ngtcp2_vec(base: tokenBuffer.count > 0 ? tokenBuffer.baseAddress : nil, len: tokenBuffer.count)
            return path.withNgtcp2Path { ngtcp2Path in
                alb_ngtcp2_conn_server_new(&created, &clientID, &ourID, &ngtcp2Path, NGTCP2_PROTO_VER_V1, &callbacks,
                                           &settings, &params, nil, userData)
            }
        }
        guard let code else { throw QUICConnectionError.unsupportedAddress }
        guard code == 0, let created else {
            throw QUICConnectionError.ngtcp2(function: "ngtcp2_conn_server_new", reason: Self.reason(code))
        }

        let reference = UnsafeMutablePointer<ngtcp2_crypto_conn_ref>.allocate(capacity: 1)
        // The crypto helper asks the session for the connection through this; it needs no Swift object.
        reference.initialize(to: ngtcp2_crypto_conn_ref(
            get_conn: { reference in
                guard let connection = reference?.pointee.user_data else { return nil }
                return OpaquePointer(connection)
            },
            user_data: UnsafeMutableRawPointer(created)))
        let session: OpaquePointer
        do {
            session = try Self.makeTLSSession(credentials: credentials, connectionReference: reference)
        } catch {
            ngtcp2_conn_del(created)
            reference.deallocate()
            throw error
        }
        ngtcp2_conn_set_tls_native_handle(created, UnsafeMutableRawPointer(session))
        connection = created
        self.session = session
        connectionReference = reference
        writePath = .allocate(capacity: 1)
        writePath.initialize(to: ngtcp2_path_storage())
        packetBufferSize = configuration.maxSentUDPPayloadSize
        packetBuffer = .allocate(capacity: configuration.maxSentUDPPayloadSize)
    }

    deinit {
        // nghttp3 first: it points at the ngtcp2_conn but not the other way round.
        callbackState.http3 = nil
        ngtcp2_conn_del(connection)
        gnutls_deinit(session)
        connectionReference.deallocate()
        writePath.deallocate()
        packetBuffer.deallocate()
    }

    // MARK: State

    /// The connection has ended and may be removed with all its connection IDs.
    public var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    /// The peer closed the connection; we wait out the draining period in silence.
    public var isDraining: Bool {
        if case .draining = state { return true }
        return false
    }

    /// We closed the connection and wait out the closing period.
    public var isClosing: Bool {
        if case .closing = state { return true }
        return false
    }

    /// How the connection ended; `nil` until ``isClosed``.
    public var end: QUICConnectionEnd? {
        if case .closed(let end) = state { return end }
        return nil
    }

    /// When ``handleExpiry(now:)`` is due (ngtcp2's loss detection, ACK delay, idle and handshake timers, or
    /// the end of the closing or draining period); `nil` for none.
    public var expiry: UInt64? {
        switch state {
        case .open:
            let expiry = ngtcp2_conn_get_expiry(connection)
            if case .noticeSent(let finalGoawayAt) = gracefulShutdown { return min(expiry, finalGoawayAt) }
            return expiry == UInt64.max ? nil : expiry
        case .closing(_, _, let until, _, _), .draining(let until):
            return until
        case .closed:
            return nil
        }
    }

    /// Every source connection ID ngtcp2 currently has for this connection (`ngtcp2_conn_get_scid`): the IDs
    /// to route here, besides ``originalDestinationConnectionID``.
    public var connectionIDs: [QUICConnectionID] {
        let count = ngtcp2_conn_get_num_scid(connection)
        guard count > 0 else { return [] }
        var ids = [ngtcp2_cid](repeating: ngtcp2_cid(), count: count)
        let written = ids.withUnsafeMutableBufferPointer { ngtcp2_conn_get_scid(connection, $0.baseAddress) }
        return ids.prefix(min(written, count)).compactMap { QUICConnectionID($0) }
    }

    /// The events recorded since the last call, in order.
    public func takeEvents() -> [QUICConnectionEvent] {
        defer { callbackState.events.removeAll() }
        return callbackState.events
    }

    // MARK: Reading, writing, timers

    /// Feeds one received datagram to the connection. Afterwards call ``write(now:)`` (acknowledgements,
    /// handshake data, or a CONNECTION_CLOSE may be due) and look at ``isClosed``.
    public func read(_ datagram: ByteBuffer, path: QUICPath, ecn: UInt8 = 0, now: UInt64) {
        switch state {
        case .open:
            break
        case .closing(let packet, let closePath, let until, let received, let reason):
            // Answer the 1st, 2nd, 4th, 8th... datagram: the peer learns of the close even if a packet was
            // lost, and a flood is answered logarithmically.
            let count = received + 1
            state = .closing(packet: packet, path: closePath, until: until, received: count, reason: reason)
            if count & (count - 1) == 0 { closePacketOwed = true }
            return
        case .draining, .closed:
            return
        }
        // ngtcp2 returns NGTCP2_ERR_INVALID_ARGUMENT for an empty datagram; keep it from ngtcp2 anyway.
        guard datagram.readableBytes > 0 else { return }
        var info = ngtcp2_pkt_info(ecn: UInt32(ecn))
        let code = datagram.withUnsafeReadableBytes { bytes -> Int32? in
            guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return nil }
            return path.withNgtcp2Path { ngtcp2Path in
                alb_ngtcp2_conn_read_pkt(connection, &ngtcp2Path, &info, base, bytes.count, now)
            }
        }
        guard let code else { return }
        switch code {
        case 0:
            remoteAddress = path.remote
        case NGTCP2_ERR_DRAINING:
            state = .draining(until: now &+ 3 &* ngtcp2_conn_get_pto(connection))
        case NGTCP2_ERR_DROP_CONN, NGTCP2_ERR_RETRY:
            state = .closed(.dropped(Self.reason(code)))
        case NGTCP2_ERR_CRYPTO:
            var error = ngtcp2_connection_close_error()
            let alert = ngtcp2_conn_get_tls_alert(connection)
            ngtcp2_connection_close_error_set_transport_error_tls_alert(&error, alert, nil, 0)
            close(with: &error, log: "TLS handshake failed (alert \(alert))", now: now)
        default:
            if let fatal = callbackState.http3?.fatalError {
                closeWithApplicationError(fatal.code, reason: "", log: "HTTP/3: \(fatal.reason)", now: now)
                return
            }
            var error = ngtcp2_connection_close_error()
            ngtcp2_connection_close_error_set_transport_error_liberr(&error, code, nil, 0)
            close(with: &error, log: "ngtcp2_conn_read_pkt: \(Self.reason(code))", now: now)
        }
    }

    /// The datagrams due now: handshake and 1-RTT packets within ngtcp2's send quantum, or our
    /// CONNECTION_CLOSE when one is owed. Each goes to its own path.
    public func write(now: UInt64) -> [QUICOutgoingDatagram] {
        sendFinalGoawayIfDue(now: now)
        switch state {
        case .open:
            let datagrams = writePackets(now: now)
            // After the packets, so the final GOAWAY (if it just went) leaves before the close.
            guard case .finalGoawaySent = gracefulShutdown, openRequestStreams == 0 else { return datagrams }
            closeGracefully(now: now, log: "drained")
            return datagrams + write(now: now)
        case .closing(let packet, let path, _, _, _):
            guard closePacketOwed else { return [] }
            closePacketOwed = false
            return [QUICOutgoingDatagram(bytes: packet, path: path)]
        case .draining, .closed:
            return []
        }
    }

    /// Runs ngtcp2's timers (`ngtcp2_conn_handle_expiry`) or ends the closing or draining period; then call
    /// ``write(now:)``.
    public func handleExpiry(now: UInt64) {
        switch state {
        case .open:
            let code = ngtcp2_conn_handle_expiry(connection, now)
            switch code {
            case 0:
                break
            case NGTCP2_ERR_IDLE_CLOSE:
                state = .closed(.idleTimeout)
            case NGTCP2_ERR_HANDSHAKE_TIMEOUT:
                state = .closed(.handshakeTimeout)
            default:
                var error = ngtcp2_connection_close_error()
                ngtcp2_connection_close_error_set_transport_error_liberr(&error, code, nil, 0)
                close(with: &error, log: "ngtcp2_conn_handle_expiry: \(Self.reason(code))", now: now)
            }
        case .closing(_, _, let until, _, let reason):
            if now >= until { state = .closed(.closedByUs(reason)) }
        case .draining(let until):
            if now >= until { state = .closed(.closedByPeer) }
        case .closed:
            break
        }
    }

    /// Writes packets with HTTP/3 stream data (nghttp3's frames through `ngtcp2_conn_writev_stream`) and
    /// whatever else ngtcp2 has due, up to the send quantum. A packet is always finished before this returns:
    /// `read_pkt` and `handle_expiry` assert that no `NGTCP2_WRITE_STREAM_FLAG_MORE` write is pending.
    private func writePackets(now: UInt64) -> [QUICOutgoingDatagram] {
        let maxPayload = min(ngtcp2_conn_get_max_tx_udp_payload_size(connection), packetBufferSize)
        guard maxPayload > 0 else { return [] }
        // ngtcp2's pacing: at most a send quantum now, then `update_pkt_tx_time` sets the next expiry.
        let packetLimit = max(1, min(Self.maxPacketsPerWrite, ngtcp2_conn_get_send_quantum(connection) / maxPayload))
        let pathPointer = UnsafeMutableRawPointer(writePath).assumingMemoryBound(to: ngtcp2_path.self)
        var datagrams: [QUICOutgoingDatagram] = []
        var vectors = [nghttp3_vec](repeating: nghttp3_vec(), count: Self.vectorsPerWrite)
        var http3Failure: (code: UInt64, reason: String)?
        ngtcp2_path_storage_zero(writePath)
        while datagrams.count < packetLimit {
            var streamID: Int64 = -1
            var fin: Int32 = 0
            var vectorCount = 0
            if let http3 = callbackState.http3, http3Failure == nil, ngtcp2_conn_get_max_data_left(connection) > 0 {
                let count = vectors.withUnsafeMutableBufferPointer { buffer in
                    nghttp3_conn_writev_stream(http3.http3, &streamID, &fin, buffer.baseAddress, buffer.count)
                }
                if count < 0 {
                    // A packet may be pending: finish it without stream data, then close.
                    let code = Int32(truncatingIfNeeded: count)
                    http3Failure = (nghttp3_err_infer_quic_app_error_code(code), HTTP3Connection.reason(code))
                    streamID = -1
                    fin = 0
                } else {
                    vectorCount = count
                }
            }
            var flags = UInt32(NGTCP2_WRITE_STREAM_FLAG_MORE)
            if fin != 0 { flags |= UInt32(NGTCP2_WRITE_STREAM_FLAG_FIN) }
            var info = ngtcp2_pkt_info()
            var written: ngtcp2_ssize = -1
            let code = vectors.withUnsafeBufferPointer { buffer in
                // nghttp3_vec and ngtcp2_vec are the same {base, len} pair.
                let streamData = UnsafeRawPointer(buffer.baseAddress)?.assumingMemoryBound(to: ngtcp2_vec.self)
                return alb_ngtcp2_conn_writev_stream(connection, pathPointer, &info, packetBuffer, maxPayload, &written,
                                                     flags, streamID, streamData, vectorCount, now)
            }
            if code < 0 {
                let http3 = callbackState.http3
                switch Int32(truncatingIfNeeded: code) {
                case NGTCP2_ERR_STREAM_DATA_BLOCKED:
                    if let http3 { nghttp3_conn_block_stream(http3.http3, streamID) }
                    continue
                case NGTCP2_ERR_STREAM_SHUT_WR:
                    if let http3 { nghttp3_conn_shutdown_stream_write(http3.http3, streamID) }
                    continue
                case NGTCP2_ERR_WRITE_MORE:
                    // The packet has room for more: it stays pending until a later call finishes it.
                    if let http3, written >= 0 { _ = nghttp3_conn_add_write_offset(http3.http3, streamID, written) }
                    continue
                default:
                    break
                }
                let liberr = Int32(truncatingIfNeeded: code)
                var error = ngtcp2_connection_close_error()
                ngtcp2_connection_close_error_set_transport_error_liberr(&error, liberr, nil, 0)
                close(with: &error, log: "ngtcp2_conn_writev_stream: \(Self.reason(liberr))", now: now)
                return datagrams + write(now: now)
            }
            if written >= 0, let http3 = callbackState.http3 {
                _ = nghttp3_conn_add_write_offset(http3.http3, streamID, written)
            }
            guard code > 0 else { break }
            // ngtcp2 only writes paths we gave it, all IPv4 or IPv6.
            guard let path = QUICPath(pathPointer.pointee) else { continue }
            var bytes = allocator.buffer(capacity: code)
            bytes.writeBytes(UnsafeRawBufferPointer(start: packetBuffer, count: code))
            datagrams.append(QUICOutgoingDatagram(bytes: bytes, path: path, ecn: UInt8(truncatingIfNeeded: info.ecn)))
            ngtcp2_path_storage_zero(writePath)
        }
        ngtcp2_conn_update_pkt_tx_time(connection, now)
        if let http3Failure {
            closeWithApplicationError(http3Failure.code, reason: "",
                                      log: "nghttp3_conn_writev_stream: \(http3Failure.reason)", now: now)
            return datagrams + write(now: now)
        }
        return datagrams
    }

    // MARK: HTTP/3 streams

    /// The HTTP/3 stream events since the last call, in order.
    public func takeStreamEvents() -> [HTTP3StreamEvent] {
        guard let http3 = callbackState.http3, !http3.events.isEmpty else { return [] }
        defer { http3.events.removeAll() }
        return http3.events
    }

    /// Whether the stream can still get a response (open, and HTTP/3 is up).
    private func http3ForStreams() -> HTTP3Connection? {
        guard case .open = state else { return nil }
        return callbackState.http3
    }

    /// Submits the response head; `endStream` for a response without body. False when the stream is gone
    /// or already has a response.
    @discardableResult
    public func respond(streamID: Int64, status: Int, fields: [HTTP3HeaderField], endStream: Bool) -> Bool {
        http3ForStreams()?.respond(streamID: streamID, status: status, fields: fields, endStream: endStream) ?? false
    }

    /// Queues response body bytes; they are sent by the next ``write(now:)`` as flow control allows.
    public func sendBody(streamID: Int64, _ bytes: ByteBuffer) {
        http3ForStreams()?.sendBody(streamID: streamID, bytes)
    }

    public func endResponse(streamID: Int64) {
        http3ForStreams()?.endResponse(streamID: streamID)
    }

    /// Response bytes of the stream queued or sent but not yet acknowledged: what the adapter compares with
    /// its window before reading more from the backend.
    public func bufferedResponseBytes(streamID: Int64) -> Int {
        callbackState.http3?.bufferedResponseBytes(streamID: streamID) ?? 0
    }

    /// Abandons the stream both ways with an HTTP/3 error code (e.g. H3_INTERNAL_ERROR when the backend
    /// failed after the response head).
    public func reset(streamID: Int64, code: UInt64) {
        http3ForStreams()?.reset(streamID: streamID, code: code)
    }

    /// Gives the client flow-control credit back for request body bytes that were passed on.
    public func consumeRequestBody(streamID: Int64, bytes: Int) {
        http3ForStreams()?.consume(streamID: streamID, bytes: bytes)
    }

    /// The response is complete and the rest of the request is not wanted (STOP_SENDING, H3_NO_ERROR).
    public func stopReadingRequest(streamID: Int64) {
        http3ForStreams()?.stopReading(streamID: streamID)
    }

    /// H3_INTERNAL_ERROR (RFC 9114 section 8.1).
    public static let h3InternalError: UInt64 = 0x0102
    /// H3_REQUEST_CANCELLED: the response will not be completed (the listener stops).
    public static let h3RequestCancelled: UInt64 = 0x010c

    // MARK: Closing

    /// H3_NO_ERROR (RFC 9114 section 8.1): the close of a drained connection.
    public static let h3NoError: UInt64 = 0x0100

    /// The listener drains: sends the first GOAWAY (`nghttp3_conn_submit_shutdown_notice`, no limit yet);
    /// ``write(now:)`` then sends the final one after a PTO (about a round trip) and closes with
    /// H3_NO_ERROR when no request stream is left. A connection without HTTP/3 yet (mid-handshake) closes
    /// at once. Call ``write(now:)`` after this.
    public func beginGracefulShutdown(now: UInt64) {
        guard case .open = state, gracefulShutdown == nil else { return }
        guard let http3 = callbackState.http3, nghttp3_conn_submit_shutdown_notice(http3.http3) == 0 else {
            closeGracefully(now: now, log: "drained during the handshake")
            return
        }
        gracefulShutdown = .noticeSent(finalGoawayAt: now &+ ngtcp2_conn_get_pto(connection))
    }

    /// Whether ``beginGracefulShutdown(now:)`` was called (the connection may still serve its streams).
    public var isShuttingDown: Bool { gracefulShutdown != nil }

    /// Request streams still open (head received, not yet closed by both sides).
    public var openRequestStreams: Int { callbackState.http3?.streams.count ?? 0 }

    /// Closes the connection now with H3_NO_ERROR (a drain's timeout); call ``write(now:)`` after this.
    public func closeGracefully(now: UInt64, log: String = "closed by the listener") {
        closeWithApplicationError(Self.h3NoError, reason: "", log: log, now: now)
    }

    /// Called before each write: the final GOAWAY once its time has come. Only nghttp3 frames are queued
    /// here, so no ngtcp2 packet can be left pending.
    private func sendFinalGoawayIfDue(now: UInt64) {
        guard case .open = state, case .noticeSent(let finalGoawayAt) = gracefulShutdown, now >= finalGoawayAt
        else { return }
        guard let http3 = callbackState.http3, nghttp3_conn_shutdown(http3.http3) == 0 else {
            closeGracefully(now: now)
            return
        }
        gracefulShutdown = .finalGoawaySent
    }

    /// Closes the connection with an HTTP/3 (application) error code, e.g. when the listener stops.
    func closeWithApplicationError(_ code: UInt64, reason: String, log: String, now: UInt64) {
        var error = ngtcp2_connection_close_error()
        var reasonBytes = Array(reason.utf8)
        reasonBytes.withUnsafeMutableBufferPointer { reasonBuffer in
            ngtcp2_connection_close_error_set_application_error(&error, code, reasonBuffer.baseAddress,
                                                                reasonBuffer.count)
            close(with: &error, log: log, now: now)
        }
    }

    /// Writes CONNECTION_CLOSE and enters the closing period (3 x PTO, RFC 9000 section 10.2); when ngtcp2
    /// writes nothing (no keys yet, or already closing), the connection is simply dropped.
    private func close(with error: inout ngtcp2_connection_close_error, log: String, now: UInt64) {
        guard case .open = state else { return }
        let capacity = max(ngtcp2_conn_get_max_tx_udp_payload_size(connection),
                           QUICDatagramClassifier.minimumInitialDatagramSize)
        let pathPointer = UnsafeMutableRawPointer(writePath).assumingMemoryBound(to: ngtcp2_path.self)
        ngtcp2_path_storage_zero(writePath)
        var info = ngtcp2_pkt_info()
        var buffer = allocator.buffer(capacity: capacity)
        var code = 0
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: capacity) { destination in
            guard let base = destination.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return 0 }
            code = alb_ngtcp2_conn_write_connection_close(connection, pathPointer, &info, base, capacity, &error, now)
            return max(code, 0)
        }
        guard code > 0, let path = QUICPath(pathPointer.pointee) else {
            state = .closed(.dropped(log))
            return
        }
        state = .closing(packet: buffer, path: path, until: now &+ 3 &* ngtcp2_conn_get_pto(connection),
                         received: 0, reason: log)
        closePacketOwed = true
    }

    /// A bound on the packets one write produces, whatever the send quantum says.
    static let maxPacketsPerWrite = 64
    /// How many pieces of stream data nghttp3 may hand over per packet.
    static let vectorsPerWrite = 16

    static func reason(_ code: Int32) -> String {
        guard let text = ngtcp2_strerror(code) else { return "ngtcp2 error \(code)" }
        return String(cString: text)
    }
}

@available(*, unavailable)
extension QUICConnection: Sendable {}

extension ngtcp2_cid {
    /// An `ngtcp2_cid` holding `id`; the caller has checked that it has at most 20 bytes (`ngtcp2_cid_init`
    /// asserts on more).
    init(_ id: QUICConnectionID) {
        self.init()
        var cid = ngtcp2_cid()
        id.withUnsafeBytes { bytes in
            let count = min(bytes.count, QUICConnectionID.maxV1Length)
            ngtcp2_cid_init(&cid, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), count)
        }
        self = cid
    }
}

extension QUICConnectionID {
    /// The bytes of an `ngtcp2_cid`; `nil` for a length over 20.
    init?(_ cid: ngtcp2_cid) {
        var cid = cid
        guard cid.datalen <= QUICConnectionID.maxV1Length else { return nil }
        let count = cid.datalen
        let copied = Swift.withUnsafeBytes(of: &cid.data) { data in
            QUICConnectionID(UnsafeRawBufferPointer(rebasing: data.prefix(count)))
        }
        guard let id = copied else { return nil }
        self = id
    }

    /// `count` bytes from the system's random number generator (getrandom on Linux).
    static func random(count: Int) -> QUICConnectionID {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return QUICConnectionID(bytes) ?? QUICConnectionID()
    }
}

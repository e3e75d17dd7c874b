import CNghttp3
import CNgtcp2
import NIOCore

/// The owner of one server-side `nghttp3_conn` (nghttp3 0.8) on top of a QUIC connection's `ngtcp2_conn`:
/// created when the 1-RTT transmit key is installed (as ngtcp2's example server does), freed in `deinit`
/// before the `ngtcp2_conn` it points at.
///
/// It binds our control and QPACK streams, passes stream data in (`read`), hands nghttp3's frames out to
/// the connection's write loop, and turns nghttp3's callbacks into ``HTTP3StreamEvent``s. Response bodies
/// are `ByteBuffer`s that stay referenced until the client acknowledged them (nghttp3 sends from our
/// memory, `nghttp3_read_data_callback`). Flow-control credit for request body bytes is given back only
/// when the owner says they were consumed.
///
/// Every call happens on the connection's event loop, inside the owning ``QUICConnection``'s methods; the
/// nghttp3 callbacks only touch this object's Swift state, and the `ngtcp2_conn` for the calls ngtcp2's
/// example makes from the same places (stream offsets, stream shutdowns). Not `Sendable`.
final class HTTP3Connection {
    /// Per request stream: the head being collected, and the response's bytes.
    final class Stream {
        let id: Int64
        var method = ""
        var scheme = ""
        var authority = ""
        var path = ""
        var fields: [HTTP3HeaderField] = []
        /// The header section's size as SETTINGS_MAX_FIELD_SECTION_SIZE counts it, and its field count.
        var headerBytes = 0
        var headerCount = 0
        /// Over a limit: fields are no longer kept, and the head becomes ``HTTP3StreamEvent/headTooLarge(streamID:)``.
        var headTooLarge = false
        /// Request body bytes delivered but not yet given back as flow-control credit.
        var unconsumed = 0
        /// Response body bytes not yet given to nghttp3, then given but not yet acknowledged.
        var pending = CircularBuffer<ByteBuffer>()
        var inFlight = CircularBuffer<ByteBuffer>()
        var buffered = 0
        var responseEnded = false
        var responseSubmitted = false
        /// The data reader said WOULDBLOCK: new bytes must `nghttp3_conn_resume_stream`.
        var awaitingData = false
        /// Buffered bytes went over the high water mark: a ``HTTP3StreamEvent/writable(streamID:)`` is owed
        /// when they fall below the low one.
        var overHighWater = false

        init(id: Int64) { self.id = id }
    }

    let http3: OpaquePointer
    /// Not owned: the ``QUICConnection`` frees it after this object.
    let quic: OpaquePointer
    var streams: [Int64: Stream] = [:]
    var events: [HTTP3StreamEvent] = []
    /// A fatal nghttp3 error met inside a callback: the connection closes with this HTTP/3 error code.
    var fatalError: (code: UInt64, reason: String)?
    let highWater: Int
    let lowWater: Int
    let maxFieldSectionSize: Int
    let maxHeaderFields: Int
    let allocator = ByteBufferAllocator()

    /// `nil` when nghttp3 cannot allocate the connection or ngtcp2 refuses our unidirectional streams.
    ///
    /// `maxFieldSectionSize` is the largest header section a client may send (the listener's header limit);
    /// `maxClientBidirectionalStreams` must match the QUIC transport parameter `initial_max_streams_bidi`.
    /// `userData` is the ``QUICConnectionCallbackState`` the callbacks find this object through (it
    /// exists before this object, so nghttp3 gets a complete pointer at creation).
    init?(quic: OpaquePointer, userData: UnsafeMutableRawPointer, maxFieldSectionSize: UInt64,
          maxHeaderFields: Int, maxClientBidirectionalStreams: UInt64, highWater: Int, lowWater: Int) {
        self.quic = quic
        // nghttp3 0.8 only advertises SETTINGS_MAX_FIELD_SECTION_SIZE; the callbacks enforce it.
        self.maxFieldSectionSize = Int(clamping: maxFieldSectionSize)
        self.maxHeaderFields = maxHeaderFields
        self.highWater = highWater
        self.lowWater = lowWater
        var callbacks = Self.makeCallbacks()
        var settings = nghttp3_settings()
        alb_nghttp3_settings_default(&settings)
        settings.max_field_section_size = maxFieldSectionSize
        settings.qpack_max_dtable_capacity = 4096
        settings.qpack_blocked_streams = 100
        var created: OpaquePointer?
        guard alb_nghttp3_conn_server_new(&created, &callbacks, &settings, nghttp3_mem_default(), userData) == 0,
              let created
        else { return nil }
        nghttp3_conn_set_max_client_streams_bidi(created, maxClientBidirectionalStreams)
        // HTTP/3 needs our control stream and the QPACK encoder and decoder streams (RFC 9114 6.2, 9204 4.2).
        guard ngtcp2_conn_get_max_local_streams_uni(quic) >= 3 else {
            nghttp3_conn_del(created)
            return nil
        }
        var control: Int64 = -1
        var encoder: Int64 = -1
        var decoder: Int64 = -1
        guard ngtcp2_conn_open_uni_stream(quic, &control, nil) == 0,
              nghttp3_conn_bind_control_stream(created, control) == 0,
              ngtcp2_conn_open_uni_stream(quic, &encoder, nil) == 0,
              ngtcp2_conn_open_uni_stream(quic, &decoder, nil) == 0,
              nghttp3_conn_bind_qpack_streams(created, encoder, decoder) == 0
        else {
            nghttp3_conn_del(created)
            return nil
        }
        // Assigned last: a failed init must not reach `deinit` with the connection already freed.
        http3 = created
    }

    deinit {
        nghttp3_conn_del(http3)
    }

    // MARK: Stream data in

    /// Passes a stream's bytes to nghttp3 and gives back flow-control credit for what it consumed as
    /// framing (DATA payloads come back through ``consume(streamID:bytes:)``). Returns false on a fatal error
    /// (``fatalError`` says which).
    func read(streamID: Int64, data: UnsafePointer<UInt8>?, count: Int, fin: Bool) -> Bool {
        // The stream's record may be made during the read (its header section in the same packet as its body).
        let unconsumedBefore = streams[streamID]?.unconsumed ?? 0
        let consumed = nghttp3_conn_read_stream(http3, streamID, data, count, fin ? 1 : 0)
        guard consumed >= 0 else {
            let code = Int32(truncatingIfNeeded: consumed)
            if code == NGHTTP3_ERR_MALFORMED_HTTP_MESSAGING, let stream = streams[streamID] {
                refuseMalformedBody(stream, readBytes: count, delivered: stream.unconsumed - unconsumedBefore)
                return true
            }
            fatalError = (nghttp3_err_infer_quic_app_error_code(code), Self.reason(code))
            return false
        }
        ngtcp2_conn_extend_max_stream_offset(quic, streamID, UInt64(consumed))
        ngtcp2_conn_extend_max_offset(quic, UInt64(consumed))
        return true
    }

    /// nghttp3 resets a stream whose header section is malformed itself, but reports a body that disagrees with
    /// its `content-length` as an error of the whole read. RFC 9114 section 4.1.2 makes it a stream error: the
    /// stream is reset with H3_MESSAGE_ERROR and the connection's other requests go on (ngtcp2's example server
    /// closes the connection instead, which section 8 allows). nghttp3 ignores the stream's later bytes; the
    /// bytes of this read that were not delivered as body get their connection credit back now, those that were
    /// when the stream closes.
    private func refuseMalformedBody(_ stream: Stream, readBytes: Int, delivered: Int) {
        _ = nghttp3_conn_shutdown_stream_read(http3, stream.id)
        if readBytes > delivered { ngtcp2_conn_extend_max_offset(quic, UInt64(readBytes - delivered)) }
        reset(streamID: stream.id, code: UInt64(NGHTTP3_H3_MESSAGE_ERROR))
        events.append(.malformed(streamID: stream.id))
    }

    func consume(streamID: Int64, bytes: Int) {
        guard bytes > 0 else { return }
        let credit: Int
        if let stream = streams[streamID] {
            credit = min(bytes, stream.unconsumed)
            stream.unconsumed -= credit
        } else {
            credit = 0
        }
        guard credit > 0 else { return }
        ngtcp2_conn_extend_max_stream_offset(quic, streamID, UInt64(credit))
        ngtcp2_conn_extend_max_offset(quic, UInt64(credit))
    }

    // MARK: Responses

    /// Submits the response head; `endStream` for a response without body.
    func respond(streamID: Int64, status: Int, fields: [HTTP3HeaderField], endStream: Bool) -> Bool {
        guard let stream = streams[streamID], !stream.responseSubmitted else { return false }
        stream.responseSubmitted = true
        var names: [[UInt8]] = [Array(":status".utf8)]
        var values: [[UInt8]] = [Array(String(status).utf8)]
        for field in fields {
            names.append(Array(field.name.lowercased().utf8))
            values.append(Array(field.value.utf8))
        }
        // nghttp3 copies the fields (`nghttp3_nva_copy`), so the arrays only need to live for the call.
        var code: Int32 = 0
        withPinnedFields(names: names, values: values) { nva in
            if endStream {
                stream.responseEnded = true
                code = nghttp3_conn_submit_response(http3, streamID, nva.baseAddress, nva.count, nil)
            } else {
                var reader = nghttp3_data_reader(read_data: HTTP3Connection.readData)
                code = nghttp3_conn_submit_response(http3, streamID, nva.baseAddress, nva.count, &reader)
            }
        }
        return code == 0
    }

    func sendBody(streamID: Int64, _ buffer: ByteBuffer) {
        guard let stream = streams[streamID], !stream.responseEnded, buffer.readableBytes > 0 else { return }
        stream.pending.append(buffer)
        stream.buffered += buffer.readableBytes
        if stream.buffered > highWater { stream.overHighWater = true }
        resumeIfAwaiting(stream)
    }

    func endResponse(streamID: Int64) {
        guard let stream = streams[streamID], !stream.responseEnded else { return }
        stream.responseEnded = true
        resumeIfAwaiting(stream)
    }

    func bufferedResponseBytes(streamID: Int64) -> Int {
        streams[streamID]?.buffered ?? 0
    }

    private func resumeIfAwaiting(_ stream: Stream) {
        guard stream.awaitingData else { return }
        stream.awaitingData = false
        _ = nghttp3_conn_resume_stream(http3, stream.id)
    }

    /// Abandons the stream both ways with an HTTP/3 error code (RESET_STREAM and STOP_SENDING). The stream
    /// closes later, through ngtcp2's `stream_close`.
    func reset(streamID: Int64, code: UInt64) {
        if let stream = streams[streamID] {
            stream.responseEnded = true
            stream.pending.removeAll()
        }
        nghttp3_conn_shutdown_stream_write(http3, streamID)
        _ = ngtcp2_conn_shutdown_stream_write(quic, streamID, code)
        _ = ngtcp2_conn_shutdown_stream_read(quic, streamID, code)
    }

    /// The response is complete before the request: ask the client to stop sending (H3_NO_ERROR, RFC 9114
    /// section 4.1) and give back the credit of bytes we will never consume.
    func stopReading(streamID: Int64) {
        if let stream = streams[streamID], stream.unconsumed > 0 {
            ngtcp2_conn_extend_max_offset(quic, UInt64(stream.unconsumed))
            stream.unconsumed = 0
        }
        _ = ngtcp2_conn_shutdown_stream_read(quic, streamID, UInt64(NGHTTP3_H3_NO_ERROR))
    }

    // MARK: Events from ngtcp2

    func acked(streamID: Int64, bytes: UInt64) -> Bool {
        nghttp3_conn_add_ack_offset(http3, streamID, bytes) == 0
    }

    /// ngtcp2 closed the stream: nghttp3 closes its side (and calls `stream_close`). Our own request
    /// streams that nghttp3 never saw still count toward the client's stream limit.
    func streamClosed(streamID: Int64, code: UInt64) -> Bool {
        let result = nghttp3_conn_close_stream(http3, streamID, code)
        switch result {
        case 0:
            return true
        case NGHTTP3_ERR_STREAM_NOT_FOUND:
            if streamID & 0x3 == 0 { ngtcp2_conn_extend_max_streams_bidi(quic, 1) }
            return true
        default:
            fatalError = (nghttp3_err_infer_quic_app_error_code(result), Self.reason(result))
            return false
        }
    }

    func clientAbandoned(streamID: Int64, code: UInt64) {
        _ = nghttp3_conn_shutdown_stream_read(http3, streamID)
        if streams[streamID] != nil { events.append(.reset(streamID: streamID, code: code)) }
    }

    static func reason(_ code: Int32) -> String {
        guard let text = nghttp3_strerror(code) else { return "nghttp3 error \(code)" }
        return String(cString: text)
    }
}

@available(*, unavailable)
extension HTTP3Connection: Sendable {}

/// Calls `body` with an `nghttp3_nv` array whose pointers reach into one buffer holding every name and
/// value, valid for the call only.
private func withPinnedFields(names: [[UInt8]], values: [[UInt8]],
                              _ body: (UnsafeMutableBufferPointer<nghttp3_nv>) -> Void) {
    let total = names.reduce(0) { $0 + $1.count } + values.reduce(0) { $0 + $1.count }
    let storage = UnsafeMutablePointer<UInt8>.allocate(capacity: max(total, 1))
    let nva = UnsafeMutableBufferPointer<nghttp3_nv>.allocate(capacity: names.count)
    defer {
        storage.deallocate()
        nva.deallocate()
    }
    var offset = 0
    func place(_ bytes: [UInt8]) -> UnsafeMutablePointer<UInt8> {
        let start = storage + offset
        bytes.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { start.update(from: base, count: source.count) }
        }
        offset += bytes.count
        return start
    }
    for index in names.indices {
        let name = place(names[index])
        let value = place(values[index])
        nva.initializeElement(at: index, to: nghttp3_nv(name: name, value: value, namelen: names[index].count,
                                                        valuelen: values[index].count,
                                                        flags: UInt8(NGHTTP3_NV_FLAG_NONE)))
    }
    body(nva)
}

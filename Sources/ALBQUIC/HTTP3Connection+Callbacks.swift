import CNghttp3
import CNgtcp2
import NIOCore

extension HTTP3Connection {
    /// nghttp3 0.8's callback table for a server. `conn_user_data` is the connection's
    /// ``QUICConnectionCallbackState``, whose `http3` is this object. The callbacks record Swift events and
    /// make the `ngtcp2_conn` calls ngtcp2's example server makes from them (flow-control credit, stream
    /// shutdowns): ngtcp2 is inside `read_pkt` or `writev_stream` then, where those calls are allowed.
    static func makeCallbacks() -> nghttp3_callbacks {
        var callbacks = nghttp3_callbacks()
        callbacks.acked_stream_data = { _, streamID, bytes, userData, _ in
            guard let h3 = QUICConnectionCallbackState.from(userData)?.http3 else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            h3.responseBytesAcknowledged(streamID: streamID, bytes: bytes)
            return 0
        }
        callbacks.stream_close = { _, streamID, _, userData, _ in
            guard let h3 = QUICConnectionCallbackState.from(userData)?.http3 else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            if let stream = h3.streams.removeValue(forKey: streamID) {
                // Credit for request bytes nobody will consume goes back to the connection's window.
                if stream.unconsumed > 0 { ngtcp2_conn_extend_max_offset(h3.quic, UInt64(stream.unconsumed)) }
                h3.events.append(.closed(streamID: streamID))
            }
            // A closed request stream lets the client open another (as the example server does).
            if streamID & 0x3 == 0 { ngtcp2_conn_extend_max_streams_bidi(h3.quic, 1) }
            return 0
        }
        callbacks.recv_data = { _, streamID, data, count, userData, _ in
            guard let h3 = QUICConnectionCallbackState.from(userData)?.http3 else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            guard let stream = h3.streams[streamID] else {
                // Not a stream we track: nobody will consume the bytes, so give the credit back now.
                ngtcp2_conn_extend_max_stream_offset(h3.quic, streamID, UInt64(count))
                ngtcp2_conn_extend_max_offset(h3.quic, UInt64(count))
                return 0
            }
            guard count > 0, let data else { return 0 }
            var buffer = h3.allocator.buffer(capacity: count)
            buffer.writeBytes(UnsafeRawBufferPointer(start: data, count: count))
            stream.unconsumed += count
            h3.events.append(.body(streamID: streamID, buffer))
            return 0
        }
        callbacks.deferred_consume = { _, streamID, consumed, userData, _ in
            guard let h3 = QUICConnectionCallbackState.from(userData)?.http3 else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            ngtcp2_conn_extend_max_stream_offset(h3.quic, streamID, UInt64(consumed))
            ngtcp2_conn_extend_max_offset(h3.quic, UInt64(consumed))
            return 0
        }
        callbacks.begin_headers = { _, streamID, userData, _ in
            guard let h3 = QUICConnectionCallbackState.from(userData)?.http3 else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            if h3.streams[streamID] == nil { h3.streams[streamID] = Stream(id: streamID) }
            return 0
        }
        callbacks.recv_header = { _, streamID, _, name, value, _, userData, _ in
            guard let h3 = QUICConnectionCallbackState.from(userData)?.http3 else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            guard let stream = h3.streams[streamID], let name, let value, !stream.headTooLarge else { return 0 }
            let nameBytes = nghttp3_rcbuf_get_buf(name).len
            let valueBytes = nghttp3_rcbuf_get_buf(value).len
            // RFC 9114 section 4.2.2: each field counts its name and value plus 32 bytes.
            stream.headerBytes += nameBytes + valueBytes + 32
            stream.headerCount += 1
            guard stream.headerBytes <= h3.maxFieldSectionSize, stream.headerCount <= h3.maxHeaderFields else {
                stream.headTooLarge = true
                stream.fields = []
                return 0
            }
            let nameText = HTTP3Connection.text(of: name)
            let valueText = HTTP3Connection.text(of: value)
            switch nameText {
            case ":method": stream.method = valueText
            case ":scheme": stream.scheme = valueText
            case ":authority": stream.authority = valueText
            case ":path": stream.path = valueText
            default:
                if !nameText.hasPrefix(":") { stream.fields.append(HTTP3HeaderField(name: nameText, value: valueText)) }
            }
            return 0
        }
        callbacks.end_headers = { _, streamID, fin, userData, _ in
            guard let h3 = QUICConnectionCallbackState.from(userData)?.http3 else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            guard let stream = h3.streams[streamID] else { return 0 }
            if stream.headTooLarge {
                h3.events.append(.headTooLarge(streamID: streamID))
                return 0
            }
            h3.events.append(.head(streamID: streamID, HTTP3RequestHead(
                method: stream.method, scheme: stream.scheme, authority: stream.authority, path: stream.path,
                fields: stream.fields, endsStream: fin != 0)))
            stream.fields = []
            return 0
        }
        callbacks.stop_sending = { _, streamID, code, userData, _ in
            guard let h3 = QUICConnectionCallbackState.from(userData)?.http3 else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            _ = ngtcp2_conn_shutdown_stream_read(h3.quic, streamID, code)
            return 0
        }
        callbacks.end_stream = { _, streamID, userData, _ in
            guard let h3 = QUICConnectionCallbackState.from(userData)?.http3 else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            if h3.streams[streamID] != nil { h3.events.append(.end(streamID: streamID)) }
            return 0
        }
        callbacks.reset_stream = { _, streamID, code, userData, _ in
            guard let h3 = QUICConnectionCallbackState.from(userData)?.http3 else { return NGHTTP3_ERR_CALLBACK_FAILURE }
            _ = ngtcp2_conn_shutdown_stream_write(h3.quic, streamID, code)
            return 0
        }
        return callbacks
    }

    /// nghttp3 asks for response body: the pending buffers, which move to the in-flight list and stay
    /// referenced until acknowledged (nghttp3 sends from this memory and may resend it).
    static let readData: nghttp3_read_data_callback = { _, streamID, vec, vecCount, flags, userData, _ in
        guard let h3 = QUICConnectionCallbackState.from(userData)?.http3, let stream = h3.streams[streamID],
              let vec, let flags
        else { return nghttp3_ssize(NGHTTP3_ERR_CALLBACK_FAILURE) }
        var filled = 0
        while filled < vecCount, let buffer = stream.pending.popFirst() {
            // The pointer stays valid: the buffer's storage is kept alive (and never written) in `inFlight`.
            buffer.withUnsafeReadableBytes { bytes in
                vec[filled] = nghttp3_vec(
                    base: UnsafeMutablePointer(mutating: bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)),
                    len: bytes.count)
            }
            stream.inFlight.append(buffer)
            filled += 1
        }
        if stream.pending.isEmpty && stream.responseEnded {
            flags.pointee |= UInt32(NGHTTP3_DATA_FLAG_EOF)
        } else if filled == 0 {
            stream.awaitingData = true
            return nghttp3_ssize(NGHTTP3_ERR_WOULDBLOCK)
        }
        return nghttp3_ssize(filled)
    }

    /// Drops acknowledged response bytes from the front of the in-flight list; owes a `writable` event
    /// when the stream's buffered bytes fall below the low water mark after having passed the high one.
    func responseBytesAcknowledged(streamID: Int64, bytes: UInt64) {
        guard let stream = streams[streamID] else { return }
        var remaining = Int(clamping: bytes)
        stream.buffered = max(0, stream.buffered - remaining)
        while remaining > 0, var first = stream.inFlight.first {
            if first.readableBytes <= remaining {
                remaining -= first.readableBytes
                stream.inFlight.removeFirst()
            } else {
                first.moveReaderIndex(forwardBy: remaining)
                stream.inFlight[stream.inFlight.startIndex] = first
                remaining = 0
            }
        }
        if stream.overHighWater && stream.buffered < lowWater {
            stream.overHighWater = false
            events.append(.writable(streamID: streamID))
        }
    }

    static func text(of buffer: OpaquePointer) -> String {
        let vector = nghttp3_rcbuf_get_buf(buffer)
        guard let base = vector.base, vector.len > 0 else { return "" }
        return String(decoding: UnsafeBufferPointer(start: base, count: vector.len), as: UTF8.self)
    }
}

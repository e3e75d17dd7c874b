import CNghttp3

/// The owner of one server-side `nghttp3_conn` (nghttp3 0.8): creates it through the shim for the
/// `nghttp3_conn_server_new` macro and frees it in `deinit`, so that nothing above ALBQUIC holds the C
/// object or can leak it.
///
/// Today it is the skeleton the HTTP/3 slice fills (docs/quic.md, slice 3): no callbacks, no streams
/// bound, nothing read or written. It belongs to the event loop of its QUIC connection and is not
/// `Sendable`.
final class HTTP3Connection {
    private let connection: OpaquePointer

    /// `nil` when nghttp3 cannot allocate the connection.
    ///
    /// `maxFieldSectionSize` is the largest header section a client may send (the listener's header limit);
    /// `maxClientBidirectionalStreams` must match the QUIC transport parameter `initial_max_streams_bidi`.
    init?(maxFieldSectionSize: UInt64, maxClientBidirectionalStreams: UInt64) {
        var callbacks = nghttp3_callbacks()
        var settings = nghttp3_settings()
        alb_nghttp3_settings_default(&settings)
        settings.max_field_section_size = maxFieldSectionSize
        var created: OpaquePointer?
        guard alb_nghttp3_conn_server_new(&created, &callbacks, &settings, nghttp3_mem_default(), nil) == 0,
              let created
        else { return nil }
        connection = created
        nghttp3_conn_set_max_client_streams_bidi(connection, maxClientBidirectionalStreams)
    }

    deinit {
        nghttp3_conn_del(connection)
    }
}

@available(*, unavailable)
extension HTTP3Connection: Sendable {}

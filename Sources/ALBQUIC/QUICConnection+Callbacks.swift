import CNghttp3
import CNgtcp2

/// What ngtcp2's callbacks may touch: a small object of its own that `user_data` points at, so that the
/// callbacks find it without the `QUICConnection` being fully initialized (ngtcp2 gets `user_data` in
/// `ngtcp2_conn_server_new`) and without capturing anything.
///
/// The callbacks record events (connection IDs, the handshake; HTTP/3 stream events in ``http3``). ngtcp2
/// calls them inside the owner's own `read`/`write`/`handleExpiry`, on its event loop, so the owner acts on
/// what they recorded after the C call returns. The only calls back into C are those ngtcp2's example
/// server makes from the same callbacks: into nghttp3 (a separate object), and ngtcp2's stream
/// flow-control and shutdown functions, which only queue frames.
final class QUICConnectionCallbackState {
    let resetKey: QUICStatelessResetKey
    let configuration: QUICConnectionConfiguration
    var events: [QUICConnectionEvent] = []
    /// HTTP/3 on this connection, from the moment the 1-RTT transmit key is installed.
    var http3: HTTP3Connection?
    /// The client's request stream limit last told to nghttp3 (it asserts the limit never decreases).
    var maxClientStreamsBidi: UInt64 = 0

    init(resetKey: QUICStatelessResetKey, configuration: QUICConnectionConfiguration) {
        self.resetKey = resetKey
        self.configuration = configuration
        self.maxClientStreamsBidi = configuration.initialMaxStreamsBidi
    }

    static func from(_ userData: UnsafeMutableRawPointer?) -> QUICConnectionCallbackState? {
        guard let userData else { return nil }
        return Unmanaged<QUICConnectionCallbackState>.fromOpaque(userData).takeUnretainedValue()
    }

    /// The server's callback table for ngtcp2 0.12.1. ngtcp2 asserts that `recv_client_initial`,
    /// `recv_crypto_data`, `encrypt`, `decrypt`, `hp_mask`, `rand`, `get_new_connection_id`, `update_key`,
    /// `delete_crypto_aead_ctx`, `delete_crypto_cipher_ctx` and `get_path_challenge_data` are set: the
    /// crypto helper provides all but `rand` and `get_new_connection_id`.
    static func makeCallbacks() -> ngtcp2_callbacks {
        var callbacks = ngtcp2_callbacks()
        callbacks.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb
        callbacks.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb
        callbacks.encrypt = ngtcp2_crypto_encrypt_cb
        callbacks.decrypt = ngtcp2_crypto_decrypt_cb
        callbacks.hp_mask = ngtcp2_crypto_hp_mask_cb
        callbacks.update_key = ngtcp2_crypto_update_key_cb
        callbacks.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb
        callbacks.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb
        callbacks.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb
        callbacks.version_negotiation = ngtcp2_crypto_version_negotiation_cb

        callbacks.rand = { destination, length, _ in
            guard let destination else { return }
            var generator = SystemRandomNumberGenerator()
            for index in 0..<length { destination[index] = UInt8.random(in: .min ... .max, using: &generator) }
        }
        // ngtcp2 asks for IDs as long as the first one we gave it (the configured length, which is also the
        // triage's short-header length).
        callbacks.get_new_connection_id = { _, cid, token, length, userData in
            guard let cid, let token, let state = QUICConnectionCallbackState.from(userData),
                  length <= QUICConnectionID.maxV1Length
            else { return NGTCP2_ERR_CALLBACK_FAILURE }
            let id = QUICConnectionID.random(count: length)
            guard let resetToken = state.resetKey.token(for: id), resetToken.count == QUICStatelessResetKey.tokenLength
            else { return NGTCP2_ERR_CALLBACK_FAILURE }
            cid.pointee = ngtcp2_cid(id)
            token.update(from: resetToken, count: resetToken.count)
            state.events.append(.connectionIDIssued(id))
            return 0
        }
        callbacks.remove_connection_id = { _, cid, userData in
            guard let cid, let state = QUICConnectionCallbackState.from(userData),
                  let id = QUICConnectionID(cid.pointee)
            else { return NGTCP2_ERR_CALLBACK_FAILURE }
            state.events.append(.connectionIDRetired(id))
            return 0
        }
        callbacks.handshake_completed = { _, userData in
            guard let state = QUICConnectionCallbackState.from(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            state.events.append(.handshakeCompleted)
            return 0
        }
        // HTTP/3 starts with the 1-RTT transmit key, as in ngtcp2's example server: our control and QPACK
        // streams can be opened from then on.
        callbacks.recv_tx_key = { connection, level, userData in
            guard level == NGTCP2_CRYPTO_LEVEL_APPLICATION else { return 0 }
            guard let connection, let userData, let state = QUICConnectionCallbackState.from(userData)
            else { return NGTCP2_ERR_CALLBACK_FAILURE }
            guard state.http3 == nil else { return 0 }
            let configuration = state.configuration
            guard let http3 = HTTP3Connection(
                quic: connection, userData: userData,
                maxFieldSectionSize: UInt64(configuration.maxFieldSectionSize),
                maxHeaderFields: configuration.maxHeaderFields,
                maxClientBidirectionalStreams: configuration.initialMaxStreamsBidi,
                highWater: configuration.responseBufferHighWater, lowWater: configuration.responseBufferLowWater)
            else { return NGTCP2_ERR_CALLBACK_FAILURE }
            state.http3 = http3
            return 0
        }
        callbacks.recv_stream_data = { _, flags, streamID, _, data, count, userData, _ in
            guard let state = QUICConnectionCallbackState.from(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            guard let http3 = state.http3 else { return 0 }
            let fin = flags & NGTCP2_STREAM_DATA_FLAG_FIN != 0
            return http3.read(streamID: streamID, data: data, count: count, fin: fin) ? 0 : NGTCP2_ERR_CALLBACK_FAILURE
        }
        callbacks.acked_stream_data_offset = { _, streamID, _, count, userData, _ in
            guard let state = QUICConnectionCallbackState.from(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            guard let http3 = state.http3 else { return 0 }
            return http3.acked(streamID: streamID, bytes: count) ? 0 : NGTCP2_ERR_CALLBACK_FAILURE
        }
        callbacks.stream_close = { _, flags, streamID, code, userData, _ in
            guard let state = QUICConnectionCallbackState.from(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            guard let http3 = state.http3 else { return 0 }
            let appCode = flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET != 0 ? code : UInt64(NGHTTP3_H3_NO_ERROR)
            return http3.streamClosed(streamID: streamID, code: appCode) ? 0 : NGTCP2_ERR_CALLBACK_FAILURE
        }
        callbacks.stream_reset = { _, streamID, _, code, userData, _ in
            guard let state = QUICConnectionCallbackState.from(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            state.http3?.clientAbandoned(streamID: streamID, code: code)
            return 0
        }
        callbacks.stream_stop_sending = { _, streamID, code, userData, _ in
            guard let state = QUICConnectionCallbackState.from(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            state.http3?.clientAbandoned(streamID: streamID, code: code)
            return 0
        }
        callbacks.extend_max_remote_streams_bidi = { _, maxStreams, userData in
            guard let state = QUICConnectionCallbackState.from(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            guard let http3 = state.http3, maxStreams > state.maxClientStreamsBidi else { return 0 }
            state.maxClientStreamsBidi = maxStreams
            nghttp3_conn_set_max_client_streams_bidi(http3.http3, maxStreams)
            return 0
        }
        callbacks.extend_max_stream_data = { _, streamID, _, userData, _ in
            guard let state = QUICConnectionCallbackState.from(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            guard let http3 = state.http3 else { return 0 }
            return nghttp3_conn_unblock_stream(http3.http3, streamID) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE
        }
        return callbacks
    }
}

extension QUICConnection {
    /// GnuTLS's priority string: TLS 1.3 only (QUIC requires it), without the middlebox compatibility mode
    /// (RFC 9001 section 8.4), with the ciphers and groups of ngtcp2's example server.
    static let tlsPriority = "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:"
        + "+AES-256-GCM:+CHACHA20-POLY1305:+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:"
        + "+GROUP-SECP384R1:+GROUP-SECP521R1"
    /// The ALPN protocol ID of HTTP/3 (RFC 9114 section 3.1).
    static let h3ALPN: [UInt8] = Array("h3".utf8)

    /// A GnuTLS server session set up for QUIC: TLS 1.3 only, ALPN "h3" mandatory (GNUTLS_ALPN_MANDATORY,
    /// and a client-hello hook that checks the choice), the crypto
    /// helper's QUIC hooks, and `connectionReference` as the session pointer, which is how the helper
    /// finds the `ngtcp2_conn`. No session tickets and no early data yet (slice 4). The caller owns the
    /// session (`gnutls_deinit`).
    static func makeTLSSession(
        credentials: QUICServerCredentials, connectionReference: UnsafeMutablePointer<ngtcp2_crypto_conn_ref>
    ) throws -> OpaquePointer {
        var created: gnutls_session_t?
        let flags = UInt32(GNUTLS_SERVER) | GNUTLS_NO_AUTO_SEND_TICKET.rawValue | GNUTLS_NO_END_OF_EARLY_DATA.rawValue
        let code = gnutls_init(&created, flags)
        guard code == GNUTLS_E_SUCCESS, let session = created else {
            throw QUICConnectionError.gnutls(function: "gnutls_init", reason: QUICServerCredentials.reason(code))
        }
        func check(_ code: Int32, _ function: String) throws {
            guard code >= 0 else {
                gnutls_deinit(session)
                throw QUICConnectionError.gnutls(function: function, reason: QUICServerCredentials.reason(code))
            }
        }
        try check(gnutls_priority_set_direct(session, tlsPriority, nil), "gnutls_priority_set_direct")
        // After GnuTLS has parsed the ClientHello: refuse the handshake unless "h3" was selected, whatever
        // GNUTLS_ALPN_MANDATORY lets through (ngtcp2's example server checks the same way).
        gnutls_handshake_set_hook_function(session, GNUTLS_HANDSHAKE_CLIENT_HELLO.rawValue, GNUTLS_HOOK_POST) {
            session, _, _, _, _ in
            var selected = gnutls_datum_t()
            guard gnutls_alpn_get_selected_protocol(session, &selected) == GNUTLS_E_SUCCESS,
                  let data = selected.data, Int(selected.size) == QUICConnection.h3ALPN.count,
                  Array(UnsafeBufferPointer(start: data, count: Int(selected.size))) == QUICConnection.h3ALPN
            else { return GNUTLS_E_NO_APPLICATION_PROTOCOL }
            return 0
        }
        try check(ngtcp2_crypto_gnutls_configure_server_session(session),
                  "ngtcp2_crypto_gnutls_configure_server_session")
        gnutls_session_set_ptr(session, connectionReference)
        let credentialsPointer = UnsafeMutableRawPointer(credentials.credentials)
        try check(gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, credentialsPointer), "gnutls_credentials_set")
        var alpn = h3ALPN
        let alpnCode = alpn.withUnsafeMutableBufferPointer { protocolBuffer in
            // GnuTLS copies the protocol names.
            var datum = gnutls_datum_t(data: protocolBuffer.baseAddress, size: UInt32(protocolBuffer.count))
            return gnutls_alpn_set_protocols(session, &datum, 1,
                                             GNUTLS_ALPN_MANDATORY.rawValue | GNUTLS_ALPN_SERVER_PRECEDENCE.rawValue)
        }
        try check(alpnCode, "gnutls_alpn_set_protocols")
        return session
    }
}

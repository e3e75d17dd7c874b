import CNgtcp2

/// What ngtcp2's callbacks may touch: a small object of its own that `user_data` points at, so that the
/// callbacks find it without the `QUICConnection` being fully initialized (ngtcp2 gets `user_data` in
/// `ngtcp2_conn_server_new`) and without capturing anything.
///
/// The callbacks only record: an event, a refused stream. ngtcp2 calls them inside the owner's own
/// `read`/`write`/`handleExpiry`, on its event loop, so the owner acts on what they recorded after the C
/// call returns; nothing here calls back into the `ngtcp2_conn`.
final class QUICConnectionCallbackState {
    let resetKey: QUICStatelessResetKey
    var events: [QUICConnectionEvent] = []
    /// The first request stream the client opened since the last read, which the owner refuses.
    var refusedRequestStream: Int64?

    init(resetKey: QUICStatelessResetKey) {
        self.resetKey = resetKey
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
        callbacks.stream_open = { _, streamID, userData in
            guard let state = QUICConnectionCallbackState.from(userData) else { return NGTCP2_ERR_CALLBACK_FAILURE }
            // Bit 0: initiator (0 client); bit 1: direction (0 bidirectional). Client bidirectional streams
            // are HTTP/3 requests; its unidirectional ones (control, QPACK) are let be until slice 3.
            if streamID & 0x3 == 0 {
                state.events.append(.requestStreamRefused(streamID: streamID))
                if state.refusedRequestStream == nil { state.refusedRequestStream = streamID }
            }
            return 0
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

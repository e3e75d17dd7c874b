import CNgtcp2
import NIOCore

/// The transport settings of a listener's QUIC connections, checked before they reach ngtcp2: ngtcp2 0.12.1
/// `assert`s on several of them in `ngtcp2_conn_server_new` (Debian builds it with assertions on, so a value
/// out of range would abort the process instead of failing one connection).
public struct QUICConnectionConfiguration: Sendable, Equatable {
    /// The length of the connection IDs this listener issues (``QUICDatagramClassifier`` must use the same).
    /// 18, as ngtcp2's example server: long enough to be unguessable, short of the 20-byte maximum.
    public var connectionIDLength = 18
    /// `max_idle_timeout`: the connection ends silently after this long without a packet either way.
    public var idleTimeout: TimeAmount = .seconds(30)
    /// ngtcp2's handshake timeout: a client that has not completed the handshake by then is forgotten.
    public var handshakeTimeout: TimeAmount = .seconds(10)
    /// The largest UDP payload ngtcp2 writes (`max_tx_udp_payload_size`); PMTUD may probe up to it.
    public var maxSentUDPPayloadSize = 1452
    /// The largest UDP payload we accept (`max_udp_payload_size` transport parameter); the listener's
    /// receive buffer must hold at least this much.
    public var maxReceivedUDPPayloadSize = 1472
    /// Connection-level flow-control window (`initial_max_data`).
    public var initialMaxData: UInt64 = 1 << 20
    /// Per-stream window for the client's bidirectional (request) streams.
    public var initialMaxStreamDataBidiRemote: UInt64 = 256 << 10
    /// Per-stream window for the client's unidirectional streams (HTTP/3 control and QPACK).
    public var initialMaxStreamDataUni: UInt64 = 256 << 10
    /// Concurrent request streams per connection (the edge limit of 100).
    public var initialMaxStreamsBidi: UInt64 = 100
    /// HTTP/3's control, QPACK encoder and QPACK decoder streams.
    public var initialMaxStreamsUni: UInt64 = 3
    /// How many of our connection IDs the client may hold at once: spare ones let it migrate. At least 2
    /// (RFC 9000 section 18.2); at most 8, where ngtcp2 0.12.1 asserts.
    public var activeConnectionIDLimit: UInt64 = 7

    /// The largest request header section (HTTP/3 `SETTINGS_MAX_FIELD_SECTION_SIZE`): the edge limit.
    public var maxFieldSectionSize = 65536
    /// The most header fields a request may have (the edge limit; pseudo-header fields count too).
    public var maxHeaderFields = 100
    /// Response bytes one stream may hold unacknowledged before its backend is no longer read, and the mark
    /// under which reading resumes (``HTTP3StreamEvent/writable(streamID:)``).
    public var responseBufferHighWater = 256 << 10
    public var responseBufferLowWater = 64 << 10

    public init() {}

    static let maxVarint: UInt64 = (1 << 62) - 1
    /// `NGTCP2_MAX_DCID_POOL_SIZE` in lib/ngtcp2_conn.h (not in the public header).
    static let maxActiveConnectionIDLimit: UInt64 = 8
    /// `NGTCP2_DEFAULT_MAX_RECV_UDP_PAYLOAD_SIZE`, the largest payload the transport parameter may name.
    static let maxUDPPayloadSize = Int(NGTCP2_DEFAULT_MAX_RECV_UDP_PAYLOAD_SIZE)

    /// Every range ngtcp2 0.12.1 asserts on or the RFC requires; the message names the field.
    func validate() throws(QUICConnectionError) {
        func refuse(_ text: String) -> QUICConnectionError { .invalidConfiguration(text) }
        guard (QUICDatagramClassifier.minimumInitialConnectionIDLength...QUICConnectionID.maxV1Length)
            .contains(connectionIDLength)
        else { throw refuse("connectionIDLength must be 8 to 20 bytes") }
        guard idleTimeout.nanoseconds >= 0 else { throw refuse("idleTimeout must not be negative") }
        guard handshakeTimeout.nanoseconds > 0 else { throw refuse("handshakeTimeout must be positive") }
        let payloadRange = QUICDatagramClassifier.minimumInitialDatagramSize...Self.maxUDPPayloadSize
        guard payloadRange.contains(maxSentUDPPayloadSize) else {
            throw refuse("maxSentUDPPayloadSize must be 1200 to 65527")
        }
        guard payloadRange.contains(maxReceivedUDPPayloadSize) else {
            throw refuse("maxReceivedUDPPayloadSize must be 1200 to 65527")
        }
        for (name, value) in [("initialMaxData", initialMaxData),
                              ("initialMaxStreamDataBidiRemote", initialMaxStreamDataBidiRemote),
                              ("initialMaxStreamDataUni", initialMaxStreamDataUni),
                              ("initialMaxStreamsBidi", initialMaxStreamsBidi),
                              ("initialMaxStreamsUni", initialMaxStreamsUni)]
        where value > Self.maxVarint {
            throw refuse("\(name) must be under 2^62")
        }
        guard (2...Self.maxActiveConnectionIDLimit).contains(activeConnectionIDLimit) else {
            throw refuse("activeConnectionIDLimit must be 2 to 8")
        }
        guard maxFieldSectionSize > 0 else { throw refuse("maxFieldSectionSize must be positive") }
        guard maxHeaderFields > 0 else { throw refuse("maxHeaderFields must be positive") }
        guard responseBufferLowWater >= 0, responseBufferHighWater > responseBufferLowWater else {
            throw refuse("responseBufferHighWater must exceed responseBufferLowWater")
        }
    }
}

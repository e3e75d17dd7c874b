import NIOCore

/// What happened at a QUIC listener, for logs and tests. Connections are named by their first source
/// connection ID (``QUICConnection/initialConnectionID``), which the client echoes as its destination.
public enum QUICEndpointEvent: Equatable, Sendable {
    case connectionOpened(QUICConnectionID, remote: SocketAddress)
    /// A new connection could not be created (the table is full, or ngtcp2 or GnuTLS refused).
    case connectionRefused(String)
    case handshakeCompleted(QUICConnectionID)
    /// The connection was removed from the table with all its connection IDs.
    case connectionClosed(QUICConnectionID, QUICConnectionEnd)
}

extension QUICDropReason: Hashable {}

/// A connection's HTTP/3 stream events, or the news that it has gone (then every stream of it is gone,
/// without further events), for the listener's exchange adapters.
public struct QUICStreamEvents {
    public let connection: QUICConnection
    public let events: [HTTP3StreamEvent]
    public let connectionClosed: Bool
}

@available(*, unavailable)
extension QUICStreamEvents: Sendable {}

/// One QUIC listener's connections without the socket: the datagram triage, the table from connection ID
/// to ``QUICConnection``, and the timers. The listener's channel handler feeds it each received datagram with
/// its path and sends what it returns; it asks ``nextDeadline`` when to call ``handleTimers(now:)``.
///
/// A connection is registered under the client's original destination connection ID (its retransmitted
/// Initials) and every source connection ID ngtcp2 has for it; the registration follows ngtcp2's list after
/// every call and is removed whole when the connection ends. It belongs to one event loop and is not
/// `Sendable`.
///
/// Not yet here (docs/quic.md): NEW_TOKEN tokens; ``nextDeadline`` scans every connection (a timer heap is
/// due when tables grow).
public final class QUICEndpoint {
    public let configuration: QUICConnectionConfiguration
    /// The credentials new connections use; replacing them leaves established connections on theirs.
    public var credentials: QUICServerCredentials
    /// Beyond this many connections, a new client's Initial is dropped (the edge limit).
    public var maxConnections = 20_000
    /// Set by ``drain(now:)``: new clients' Initials are dropped (counted as
    /// ``refusedWhileDraining``), established connections finish their requests.
    public private(set) var isDraining = false
    /// Initials dropped because the listener drains.
    public private(set) var refusedWhileDraining = 0
    /// Stateless resets (RFC 9000 section 10.3) for short headers of unknown connections: at most this many
    /// per second after a burst, so that a flood of datagrams with forged addresses is not reflected one for
    /// one. The tokens come from the same key as those our connections advertise.
    public var statelessResetLimit = QUICTokenBucket(ratePerSecond: 100, burst: 100)
    /// Stateless resets sent, and those the rate limit held back.
    public private(set) var statelessResetsSent = 0
    public private(set) var statelessResetsLimited = 0
    /// New handshakes per second above which a client's first Initial gets a Retry (address validation,
    /// RFC 9000 section 8.1.2) instead of a connection: it protects handshake CPU and the table from
    /// floods with forged addresses, at the cost of a round trip, so it is off below the rate.
    public var handshakeLimit = QUICTokenBucket(ratePerSecond: 1_000, burst: 1_000)
    /// Every new client gets a Retry, whatever the rate (a test and operations switch:
    /// `ALB_QUIC_RETRY_ALWAYS=1`, read by the data plane).
    public var retryAlways = false
    /// Retry packets sent; Initials whose Retry token failed (answered with INVALID_TOKEN).
    public private(set) var retriesSent = 0
    public private(set) var invalidRetryTokens = 0
    private let retryTokens: QUICRetryTokens

    private let classifier: QUICDatagramClassifier
    private let resetKey: QUICStatelessResetKey
    private let allocator: ByteBufferAllocator
    private var table: [QUICConnectionID: QUICConnection] = [:]
    private var registrations: [ObjectIdentifier: Registration] = [:]
    private var events: [QUICEndpointEvent] = []
    private var streamEvents: [QUICStreamEvents] = []
    /// Datagrams the triage dropped, per reason (counted, never answered). A new connection refused for a
    /// full table is an event instead.
    public private(set) var droppedDatagrams: [QUICDropReason: Int] = [:]

    private struct Registration {
        let connection: QUICConnection
        var ids: Set<QUICConnectionID>
    }

    public init(configuration: QUICConnectionConfiguration, credentials: QUICServerCredentials,
                resetKey: QUICStatelessResetKey = .random(),
                allocator: ByteBufferAllocator = ByteBufferAllocator()) throws {
        try configuration.validate()
        guard let classifier = QUICDatagramClassifier(connectionIDLength: configuration.connectionIDLength) else {
            throw QUICConnectionError.invalidConfiguration("connectionIDLength must be 8 to 20 bytes")
        }
        self.configuration = configuration
        self.credentials = credentials
        self.classifier = classifier
        self.resetKey = resetKey
        self.retryTokens = .random()
        self.allocator = allocator
    }

    /// The connections in the table (each once, however many IDs it has).
    public var connectionCount: Int { registrations.count }

    /// The events since the last call, in order.
    public func takeEvents() -> [QUICEndpointEvent] {
        defer { events.removeAll() }
        return events
    }

    /// The HTTP/3 stream events since the last call, per connection in order.
    public func takeStreamEvents() -> [QUICStreamEvents] {
        defer { streamEvents.removeAll() }
        return streamEvents
    }

    /// Writes what `connection` has due (after an exchange adapter gave it response data, or consumed
    /// request bytes) and returns the datagrams; nothing for a connection no longer in the table.
    public func write(_ connection: QUICConnection, now: UInt64) -> [QUICOutgoingDatagram] {
        guard registrations[ObjectIdentifier(connection)] != nil else { return [] }
        let outgoing = connection.write(now: now)
        update(connection)
        return outgoing
    }

    /// Handles one received datagram and returns the datagrams to send in answer.
    public func receive(_ datagram: ByteBuffer, path: QUICPath, ecn: UInt8 = 0, now: UInt64) -> [QUICOutgoingDatagram] {
        var random = SystemRandomNumberGenerator()
        let decision = classifier.triage(datagram, isKnownConnection: { table[$0] != nil }, random: &random,
                                         allocator: allocator)
        switch decision {
        case .drop(let reason):
            droppedDatagrams[reason, default: 0] += 1
            guard reason == .unknownConnection, let reset = statelessReset(answering: datagram, now: now) else {
                return []
            }
            return [QUICOutgoingDatagram(bytes: reset, path: path)]
        case .sendVersionNegotiation(let packet):
            return [QUICOutgoingDatagram(bytes: packet, path: path)]
        case .route(let id):
            guard let connection = table[id] else { return [] }
            connection.read(datagram, path: path, ecn: ecn, now: now)
            let outgoing = connection.write(now: now)
            update(connection)
            return outgoing
        case .newConnection(let initial):
            // Dropped without a word: the client tries again (or another address) after its timeout, and a
            // draining process may be gone by then. An event per datagram would grow with a flood.
            guard !isDraining else {
                refusedWhileDraining += 1
                return []
            }
            guard registrations.count < maxConnections else {
                events.append(.connectionRefused("the listener has \(maxConnections) connections"))
                return []
            }
            var validatedRetry: (originalDestinationConnectionID: QUICConnectionID, token: [UInt8])?
            if case .retry(let token) = initial.token {
                // Checked whatever the rate says: the client already paid the round trip.
                guard let original = retryTokens.verify(token, header: initial.header, remote: path.remote, now: now)
                else {
                    invalidRetryTokens += 1
                    guard let close = retryTokens.invalidTokenClose(for: initial.header, allocator: allocator) else {
                        return []
                    }
                    return [QUICOutgoingDatagram(bytes: close, path: path)]
                }
                validatedRetry = (original, token)
            } else if retryAlways || !handshakeLimit.take(now: now) {
                guard let retry = retryTokens.retryPacket(for: initial.header, remote: path.remote,
                                                          idLength: configuration.connectionIDLength, now: now,
                                                          allocator: allocator)
                else { return [] }
                retriesSent += 1
                return [QUICOutgoingDatagram(bytes: retry, path: path)]
            }
            let connection: QUICConnection
            do {
                connection = try QUICConnection(initial: initial, path: path, credentials: credentials,
                                                configuration: configuration, resetKey: resetKey, now: now,
                                                validatedRetry: validatedRetry, allocator: allocator)
            } catch {
                events.append(.connectionRefused("\(error)"))
                return []
            }
            registrations[ObjectIdentifier(connection)] = Registration(connection: connection, ids: [])
            events.append(.connectionOpened(connection.initialConnectionID, remote: path.remote))
            connection.read(datagram, path: path, ecn: ecn, now: now)
            let outgoing = connection.write(now: now)
            update(connection)
            return outgoing
        }
    }

    /// A stateless reset for a short header (its first bit clear) of at least
    /// ``QUICStatelessResetKey/minimumTriggeringDatagramSize`` bytes, while the rate limit allows: a client
    /// whose connection this process no longer has (ended, or before a restart with the same key) gives up
    /// at once instead of at its idle timeout. Long headers for unknown connections are never answered.
    private func statelessReset(answering datagram: ByteBuffer, now: UInt64) -> ByteBuffer? {
        let idLength = configuration.connectionIDLength
        guard datagram.readableBytes >= QUICStatelessResetKey.minimumTriggeringDatagramSize,
              let firstByte = datagram.getInteger(at: datagram.readerIndex, as: UInt8.self), firstByte & 0x80 == 0,
              let idBytes = datagram.getBytes(at: datagram.readerIndex + 1, length: idLength),
              let id = QUICConnectionID(idBytes)
        else { return nil }
        guard statelessResetLimit.take(now: now) else {
            statelessResetsLimited += 1
            return nil
        }
        var random = SystemRandomNumberGenerator()
        guard let packet = resetKey.statelessReset(for: id, triggeringSize: datagram.readableBytes, random: &random)
        else { return nil }
        statelessResetsSent += 1
        return allocator.buffer(bytes: packet)
    }

    /// Starts the graceful shutdown of every connection (GOAWAY, the requests in flight finish, then
    /// CONNECTION_CLOSE with H3_NO_ERROR: ``QUICConnection/beginGracefulShutdown(now:)``) and refuses new
    /// ones from now on. Returns what the connections send now.
    public func drain(now: UInt64) -> [QUICOutgoingDatagram] {
        endEveryConnection(now: now) { $0.beginGracefulShutdown(now: now) }
    }

    /// Closes every connection at once with H3_NO_ERROR (a drain's timeout, or the listener stops) and
    /// returns their CONNECTION_CLOSE datagrams; the connections leave the table after their closing period.
    public func closeAll(now: UInt64) -> [QUICOutgoingDatagram] {
        endEveryConnection(now: now) { $0.closeGracefully(now: now) }
    }

    /// Refuses new connections from now on, applies `end` to every connection and returns what they send.
    private func endEveryConnection(now: UInt64, _ end: (QUICConnection) -> Void) -> [QUICOutgoingDatagram] {
        isDraining = true
        var outgoing: [QUICOutgoingDatagram] = []
        for connection in registrations.values.map(\.connection) {
            end(connection)
            outgoing += connection.write(now: now)
            update(connection)
        }
        return outgoing
    }

    /// The earliest time a connection's timer is due; `nil` when no connection has one.
    public var nextDeadline: UInt64? {
        registrations.values.lazy.compactMap { $0.connection.expiry }.min()
    }

    /// Runs every connection whose timer is due at `now` and returns what they send.
    public func handleTimers(now: UInt64) -> [QUICOutgoingDatagram] {
        let due = registrations.values.map(\.connection).filter { ($0.expiry ?? .max) <= now }
        var outgoing: [QUICOutgoingDatagram] = []
        for connection in due {
            connection.handleExpiry(now: now)
            outgoing += connection.write(now: now)
            update(connection)
        }
        return outgoing
    }

    /// Turns the connection's events into the endpoint's and makes the table match ngtcp2's list of IDs,
    /// or removes the connection when it has ended.
    private func update(_ connection: QUICConnection) {
        let key = ObjectIdentifier(connection)
        for event in connection.takeEvents() {
            switch event {
            case .handshakeCompleted:
                events.append(.handshakeCompleted(connection.initialConnectionID))
            case .connectionIDIssued, .connectionIDRetired:
                // The table follows ngtcp2's own list below, which these events only foretell.
                break
            }
        }
        let http3Events = connection.takeStreamEvents()
        if !http3Events.isEmpty {
            streamEvents.append(QUICStreamEvents(connection: connection, events: http3Events, connectionClosed: false))
        }
        guard var registration = registrations[key] else { return }
        if let end = connection.end {
            streamEvents.append(QUICStreamEvents(connection: connection, events: [], connectionClosed: true))
            for id in registration.ids where table[id] === connection { table[id] = nil }
            registrations[key] = nil
            events.append(.connectionClosed(connection.initialConnectionID, end))
            return
        }
        let current = Set(connection.connectionIDs).union([connection.originalDestinationConnectionID])
        for id in registration.ids.subtracting(current) where table[id] === connection { table[id] = nil }
        // An ID another connection already holds stays with it (a client chose a colliding original DCID).
        for id in current.subtracting(registration.ids) where table[id] == nil { table[id] = connection }
        registration.ids = current
        registrations[key] = registration
    }
}

@available(*, unavailable)
extension QUICEndpoint: Sendable {}

import ALBQUIC
import Foundation
import NIOCore
import NIOPosix

extension DataPlane {
    /// A QUIC listener: one UDP socket on one event loop (docs/quic.md), its ``QUICEndpoint`` and
    /// ``QUICListenerHandler``, and request streams proxied by ``HTTP3ProxyRouter`` with the same runtime
    /// (snapshot, counters, access log, server groups) as a TCP listener. A drain (reload, removal, SIGTERM)
    /// keeps the socket open: each connection gets GOAWAY, finishes its requests and closes with
    /// H3_NO_ERROR, no new one is created, and the connections count in `activeConnections` until they are
    /// gone; at the drain timeout the rest are closed with H3_NO_ERROR, then the socket. A replacement on the
    /// same address takes the socket over (``handOver(from:to:)``: new requests go to it). A takeover passes a
    /// copy of the socket to a successor that asks for it (docs/takeover.md).
    /// Does not retire unused server groups: its caller (``start(_:)``) does.
    func startQUIC(_ config: ListenerConfig, certificate: QUICListenerCertificate) async throws -> String {
        let runtime = try ListenerRuntime(config: config, accessLog: self.accessLog, groups: self.serverGroups,
                                          detailedMetrics: self.detailedMetrics)
        let credentials: QUICServerCredentials
        do {
            credentials = try QUICServerCredentials(chainPEM: certificate.chainPEM, keyPEM: certificate.keyPEM)
        } catch {
            throw DataPlaneError.invalidConfig(listener: config.name, reason: "GnuTLS: \(error)")
        }
        let configuration = {
            var configuration = QUICConnectionConfiguration()
            configuration.idleTimeout = config.idleTimeout
            configuration.maxFieldSectionSize = config.limits.maxHeaderBytes
            configuration.maxHeaderFields = config.limits.maxHeaderCount
            return configuration
        }()
        // The edge's connection cap, as the table's size (the socket counts the open ones for `activeConnections`).
        let maxConnections = config.limits.maxConnections
        let retryAlways = Self.quicRetryAlways
        let socket = ListenerSocket(address: Self.format(host: config.bindHost, port: config.port), owner: runtime,
                                    datagram: true)
        let held = self.acceptingHeld.withLockedValue { $0 }
        let inherited = self.inherited.withLockedValue {
            $0.claim(address: socket.address, listener: config.name, datagram: true)
        }
        let channel: Channel
        let raw: Int32
        do {
            let address = try Self.socketAddress(host: config.bindHost, port: config.port)
            // Made here rather than by the bootstrap, so that a takeover can pass a copy (docs/takeover.md). An
            // inherited one is read only once the process that passed it has exited.
            let descriptor = try inherited?.descriptor ?? OwnedDescriptor.boundUDP(on: address)
            guard let taken = descriptor.take() else { throw IOError(errnoCode: EBADF, reason: "UDP socket") }
            raw = taken
            // With UDP_GRO the kernel may coalesce a burst of one client's datagrams into one read, and says their
            // size (UDPOffload cuts them back): room for the most it coalesces. Without it, room for the largest
            // datagram we accept (QUICConnectionConfiguration.maxReceivedUDPPayloadSize).
            let receiveOffload = System.supportsUDPReceiveOffload
            var bootstrap = DatagramBootstrap(group: self.group.next())
                .channelOption(.autoRead, value: inherited == nil && !held)
            if receiveOffload {
                bootstrap = bootstrap.channelOption(.datagramReceiveOffload, value: true)
                    .channelOption(.datagramReceiveSegmentSize, value: true)
            }
            channel = try await bootstrap
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: receiveOffload ? 65_536 : 2048))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let endpoint = try QUICEndpoint(configuration: configuration, credentials: credentials)
                        endpoint.maxConnections = maxConnections
                        endpoint.retryAlways = retryAlways
                        let router = HTTP3ProxyRouter(socket: socket, eventLoop: channel.eventLoop)
                        let handler = QUICListenerHandler(endpoint: endpoint, router: router) { event in
                            router.connectionEvent(event)
                        }
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .withBoundSocket(raw).get()
        } catch {
            throw DataPlaneError.bindFailed(address: socket.address, reason: Self.reason(error))
        }
        socket.setChannel(channel, descriptor: raw)
        runtime.attach(socket)
        self.listeners.withLockedValue { $0[config.key] = runtime }
        if inherited != nil {
            self.datagramSocketsOfPredecessor.withLockedValue { $0.append(socket) }
        } else if held && !self.acceptingHeld.withLockedValue({ $0 }) {
            await socket.startAccepting()  // released while this one was being set up
        }
        return Self.describe(runtime.boundAddress, fallback: config)
    }

    /// `ALB_QUIC_RETRY_ALWAYS=1`: every new QUIC client gets a Retry (address validation) whatever the
    /// handshake rate, a test and operations switch (docs/quic.md); read when a listener starts.
    static var quicRetryAlways: Bool {
        ProcessInfo.processInfo.environment["ALB_QUIC_RETRY_ALWAYS"] == "1"
    }

    /// A QUIC listener's certificate changed in place (an update, or a replacement that took the socket
    /// over): new connections use the new one from the next datagram on; established ones keep theirs.
    /// - Throws: ``DataPlaneError/invalidConfig(listener:reason:)`` when GnuTLS refuses the PEM files.
    func rotateQUICCertificate(of runtime: ListenerRuntime, to certificate: QUICListenerCertificate,
                               listener: String) throws {
        let credentials: QUICServerCredentials
        do {
            credentials = try QUICServerCredentials(chainPEM: certificate.chainPEM, keyPEM: certificate.keyPEM)
        } catch {
            throw DataPlaneError.invalidConfig(listener: listener, reason: "GnuTLS: \(error)")
        }
        guard let channel = runtime.listeningSocket?.channel else { return }
        channel.eventLoop.execute {
            (try? channel.pipeline.syncOperations.handler(type: QUICListenerHandler.self))?
                .replaceCredentials(credentials)
        }
    }
}

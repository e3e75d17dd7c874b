import ALBQUIC
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import XCTest

@testable import ALBDataPlane

/// The QUIC listener handler on a real UDP socket with a real QUIC client: Debian's ngtcp2 example client
/// (`gtlsclient`, package ngtcp2-client, installed by `make deps`), built on the same ngtcp2 0.12.1 and
/// GnuTLS as the server.
final class QUICListenerTests: XCTestCase {
    static let gtlsclient = "/usr/bin/gtlsclient"

    /// A QUIC listener on 127.0.0.1 with a fresh self-signed certificate; its endpoint's events are
    /// collected in `events`.
    private struct Listener {
        let group: MultiThreadedEventLoopGroup
        let channel: Channel
        let events: NIOLockedValueBox<[QUICEndpointEvent]>

        var port: Int { channel.localAddress?.port ?? 0 }

        func stop() async throws {
            try await channel.close()
            try await group.shutdownGracefully()
        }

        /// Waits up to `timeout` for an event that `matches`.
        func waitForEvent(timeout: TimeInterval, _ matches: (QUICEndpointEvent) -> Bool) async throws -> Bool {
            let end = Date().addingTimeInterval(timeout)
            while Date() < end {
                if events.withLockedValue({ $0.contains(where: matches) }) { return true }
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            return events.withLockedValue { $0.contains(where: matches) }
        }
    }

    private func startListener(router: RespondingRouter? = nil) async throws -> Listener {
        let pem = try QUICTestCertificate.make()
        let credentials = try QUICServerCredentials(chainPEM: pem.chain, keyPEM: pem.key)
        let events = NIOLockedValueBox<[QUICEndpointEvent]>([])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel = try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            // Room for the largest payload we accept (QUICConnectionConfiguration.maxReceivedUDPPayloadSize).
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 2048))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let endpoint = try QUICEndpoint(configuration: QUICConnectionConfiguration(),
                                                    credentials: credentials)
                    let handler = QUICListenerHandler(endpoint: endpoint, router: router) { event in
                        events.withLockedValue { $0.append(event) }
                    }
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return Listener(group: group, channel: channel, events: events)
    }

    /// gtlsclient with a URI: after the handshake it opens request stream 0 with GET; the router sees the
    /// stream's events as Swift values (head with the pseudo-header fields, end) and answers 200 with a body,
    /// which the client saves; it exits when its stream closes.
    func testGtlsclientRequestReachesTheRouterAsStreamEventsAndGetsItsResponse() async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.gtlsclient) else {
            throw XCTSkip("\(Self.gtlsclient) is not installed (Debian package ngtcp2-client; `make deps`)")
        }
        let router = RespondingRouter()
        let listener = try await startListener(router: router)
        let port = listener.port
        let download = FileManager.default.temporaryDirectory.appendingPathComponent("alb-quic-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: download, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: download) }
        let client = try QUICTestProcess.run(
            Self.gtlsclient, ["--timeout=5s", "--exit-on-all-streams-close", "--download=\(download.path)",
                              "127.0.0.1", "\(port)", "https://127.0.0.1:\(port)/hello"], timeout: 20)

        XCTAssertFalse(client.timedOut, "gtlsclient did not exit within 20 s:\n\(client.output.suffix(4000))")
        XCTAssertTrue(client.output.contains("Negotiated ALPN is h3"), client.output.suffix(4000).description)
        XCTAssertEqual(client.status, 0, client.output.suffix(4000).description)
        let body = try String(contentsOf: download.appendingPathComponent("hello"), encoding: .utf8)
        XCTAssertEqual(body, RespondingRouter.body)

        let events = router.recorded.withLockedValue { $0 }
        XCTAssertEqual(events.count, 2, "\(events)")
        guard case .head(let streamID, let head)? = events.first else { return XCTFail("\(events)") }
        XCTAssertEqual(streamID, 0)
        XCTAssertEqual(head.method, "GET")
        XCTAssertEqual(head.scheme, "https")
        XCTAssertEqual(head.authority, "127.0.0.1:\(port)")
        XCTAssertEqual(head.path, "/hello")
        XCTAssertTrue(head.endsStream)
        XCTAssertEqual(events.last, .end(streamID: 0))
        // The stream is released: closed once the client acknowledged the response, or with its connection
        // (the client closes it as soon as it has the response, possibly before acknowledging).
        let end = Date().addingTimeInterval(10)
        while Date() < end, !router.released(streamID: 0) {
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        XCTAssertTrue(router.released(streamID: 0), "stream 0 released after the response")
        try await listener.stop()
    }

    /// gtlsclient sends a 1 MiB request body (`--data`), four times the stream's flow-control window:
    /// it arrives as `.body` events, and only because the router gives the credit back
    /// (`consumeRequestBody`) can the client send it all; the router answers with the byte count it got.
    func testARequestBodyLargerThanTheStreamWindowArrivesAsBodyEventsWhileCreditIsGivenBack() async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.gtlsclient) else {
            throw XCTSkip("\(Self.gtlsclient) is not installed (Debian package ngtcp2-client; `make deps`)")
        }
        let router = RespondingRouter()
        let listener = try await startListener(router: router)
        let port = listener.port
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("alb-quic-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let upload = folder.appendingPathComponent("upload")
        let size = 1 << 20
        try Data(repeating: 0x61, count: size).write(to: upload)
        let download = folder.appendingPathComponent("download")
        try FileManager.default.createDirectory(at: download, withIntermediateDirectories: true)
        let client = try QUICTestProcess.run(
            Self.gtlsclient, ["--timeout=5s", "--exit-on-all-streams-close", "--download=\(download.path)",
                              "--data=\(upload.path)", "127.0.0.1", "\(port)", "https://127.0.0.1:\(port)/upload"],
            timeout: 30)

        XCTAssertFalse(client.timedOut, "gtlsclient did not exit within 30 s:\n\(client.output.suffix(4000))")
        XCTAssertEqual(client.status, 0, client.output.suffix(4000).description)
        let events = router.recorded.withLockedValue { $0 }
        guard case .head(0, let head)? = events.first else { return XCTFail("\(events.prefix(3))") }
        XCTAssertFalse(head.endsStream, "a body follows (gtlsclient sends it with its GET)")
        let received = events.reduce(0) { total, event in
            if case .body(0, let bytes) = event { return total + bytes.readableBytes }
            return total
        }
        XCTAssertEqual(received, size)
        XCTAssertEqual(events.last, .end(streamID: 0))
        let answer = try String(contentsOf: download.appendingPathComponent("upload"), encoding: .utf8)
        XCTAssertEqual(answer, "\(size) bytes\n")
        try await listener.stop()
    }

    /// While a connection is established and idle (the client sends no request), datagrams from another
    /// socket: garbage, an unknown version (answered with Version Negotiation), a short header and an
    /// Initial carrying the connection's ID but no valid protection. None opens a connection or disturbs
    /// the established one, which ends by the client's idle timeout.
    func testStrayDatagramsDoNotDisturbAnEstablishedConnection() async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.gtlsclient) else {
            throw XCTSkip("\(Self.gtlsclient) is not installed (Debian package ngtcp2-client; `make deps`)")
        }
        let listener = try await startListener()
        let port = listener.port
        let client = try QUICTestProcess.Running(Self.gtlsclient, ["--timeout=3s", "127.0.0.1", "\(port)"])
        let handshake = try await listener.waitForEvent(timeout: 10) { event in
            if case .handshakeCompleted = event { return true }
            return false
        }
        XCTAssertTrue(handshake, "\(listener.events.withLockedValue { $0 })")
        let id = try XCTUnwrap(listener.events.withLockedValue { events in
            events.lazy.compactMap { event -> QUICConnectionID? in
                if case .handshakeCompleted(let id) = event { return id }
                return nil
            }.first
        })

        let received = NIOLockedValueBox<[ByteBuffer]>([])
        let prober = try await DatagramBootstrap(group: listener.group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DatagramCollector(received: received))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let target = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        // Long headers: version 0x1a2a3a4a, DCID of 8 bytes, SCID of 4; an Initial for our ID, token length 0
        // and a length field, its payload not protected with any key.
        var unknownVersion: [UInt8] = [0xc0, 0x1a, 0x2a, 0x3a, 0x4a, 8] + Array(repeating: 0x11, count: 8)
        unknownVersion += [4, 1, 2, 3, 4]
        unknownVersion += Array(repeating: 0, count: 1200 - unknownVersion.count)
        var forgedInitial: [UInt8] = [0xc0, 0, 0, 0, 1, UInt8(id.count)] + id.bytes + [4, 1, 2, 3, 4, 0, 0x44, 0x9e]
        forgedInitial += Array(repeating: 0x33, count: 1200 - forgedInitial.count)
        let strays: [[UInt8]] = [
            Array("garbage".utf8), [0xff], unknownVersion, [0x41] + id.bytes + Array(repeating: 0x5a, count: 40),
            forgedInitial,
        ]
        for stray in strays {
            try await prober.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: ByteBuffer(bytes: stray)))
        }

        let result = try client.finish(timeout: 20)
        XCTAssertFalse(result.timedOut, "gtlsclient did not exit:\n\(result.output.suffix(4000))")
        XCTAssertTrue(result.output.contains("QUIC handshake has completed"), result.output.suffix(4000).description)
        XCTAssertEqual(result.status, 0, result.output.suffix(4000).description)
        // The server's idle timer is the smaller of both sides' (3 s) and passes about when the client's does.
        let idle = try await listener.waitForEvent(timeout: 10) { event in
            if case .connectionClosed(id, .idleTimeout) = event { return true }
            return false
        }
        XCTAssertTrue(idle, "\(listener.events.withLockedValue { $0 })")
        let opened = listener.events.withLockedValue { events in
            events.filter { event in
                if case .connectionOpened = event { return true }
                return false
            }
        }
        XCTAssertEqual(opened.count, 1, "\(listener.events.withLockedValue { $0 })")
        let answers = received.withLockedValue { $0 }
        XCTAssertEqual(answers.count, 1, "only the unknown version is answered")
        XCTAssertEqual(answers.first?.getInteger(at: 1, as: UInt32.self), 0, "Version Negotiation")
        try await prober.close()
        try await listener.stop()
    }

    /// A client that starts with a version we do not serve gets our Version Negotiation packet (from the
    /// triage, no state kept), picks v1 from it and connects again.
    func testAClientStartingWithAnotherVersionIsNegotiatedToV1() async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.gtlsclient) else {
            throw XCTSkip("\(Self.gtlsclient) is not installed (Debian package ngtcp2-client; `make deps`)")
        }
        let listener = try await startListener()
        let port = listener.port
        let client = try QUICTestProcess.run(
            Self.gtlsclient,
            ["--timeout=5s", "-v", "0x1a2a3a4a", "--preferred-versions=v1", "127.0.0.1", "\(port)",
             "https://127.0.0.1:\(port)/"],
            timeout: 20)
        XCTAssertFalse(client.timedOut, "gtlsclient did not exit:\n\(client.output.suffix(4000))")
        XCTAssertEqual(client.status, 0, client.output.suffix(4000).description)
        XCTAssertTrue(client.output.contains("Client selected version 0x1"), client.output.suffix(4000).description)
        XCTAssertTrue(client.output.contains("QUIC handshake has completed"), client.output.suffix(4000).description)
        let events = listener.events.withLockedValue { $0 }
        XCTAssertEqual(events.filter { if case .connectionOpened = $0 { return true } else { return false } }.count, 1,
                       "only the v1 attempt opens a connection: \(events)")
        XCTAssertTrue(events.contains { if case .handshakeCompleted = $0 { return true } else { return false } })
        try await listener.stop()
    }

    /// The client moves to a new local port and updates its keys: its packets on the new path carry one of
    /// the connection IDs we issued (NEW_CONNECTION_ID), which the table routes, and ngtcp2 validates the
    /// path through the packets we send to the path it names. The connection then lives on until the idle
    /// timeout.
    ///
    /// gtlsclient 0.12.1 does not write after its `--change-local-addr` and `--key-update` timers fire (only
    /// after a read or its own timer), so the test wakes it with one stray datagram to its first port.
    func testAClientMigratesAndUpdatesKeysOnAnEstablishedConnection() async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.gtlsclient) else {
            throw XCTSkip("\(Self.gtlsclient) is not installed (Debian package ngtcp2-client; `make deps`)")
        }
        let listener = try await startListener()
        let port = listener.port
        let client = try QUICTestProcess.Running(
            Self.gtlsclient,
            ["--timeout=3s", "--change-local-addr=200ms", "--key-update=300ms", "127.0.0.1", "\(port)"])
        let handshake = try await listener.waitForEvent(timeout: 10) { event in
            if case .handshakeCompleted = event { return true }
            return false
        }
        XCTAssertTrue(handshake, "\(listener.events.withLockedValue { $0 })")
        let clientAddress = try XCTUnwrap(listener.events.withLockedValue { events in
            events.lazy.compactMap { event -> SocketAddress? in
                if case .connectionOpened(_, let remote) = event { return remote }
                return nil
            }.first
        })
        try await Task.sleep(nanoseconds: 700_000_000)
        let waker = try await DatagramBootstrap(group: listener.group).bind(host: "127.0.0.1", port: 0).get()
        try await waker.writeAndFlush(AddressedEnvelope(remoteAddress: clientAddress, data: ByteBuffer(bytes: [0])))

        let result = try client.finish(timeout: 20)
        let output = result.output
        XCTAssertFalse(result.timedOut, "gtlsclient did not exit:\n\(output.suffix(4000))")
        XCTAssertEqual(result.status, 0, output.suffix(4000).description)
        XCTAssertTrue(output.contains("Changing local address"), output.suffix(4000).description)
        XCTAssertTrue(output.contains("Initiate key update"), output.suffix(4000).description)
        let validations = output.split(separator: "\n").filter { $0.hasPrefix("Path validation against path") }
        XCTAssertFalse(validations.isEmpty, output.suffix(4000).description)
        XCTAssertTrue(validations.allSatisfy { $0.hasSuffix("succeeded") }, "\(validations)")
        XCTAssertFalse(output.contains("CONNECTION_CLOSE"), output.suffix(4000).description)

        let idle = try await listener.waitForEvent(timeout: 10) { event in
            if case .connectionClosed(_, .idleTimeout) = event { return true }
            return false
        }
        XCTAssertTrue(idle, "\(listener.events.withLockedValue { $0 })")
        try await waker.close()
        try await listener.stop()
    }
}

/// Keeps every datagram its channel receives.
final class DatagramCollector: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let received: NIOLockedValueBox<[ByteBuffer]>

    init(received: NIOLockedValueBox<[ByteBuffer]>) { self.received = received }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        received.withLockedValue { $0.append(envelope.data) }
    }
}

/// A self-signed ECDSA P-256 certificate made by the `openssl` command line, as an operator would.
enum QUICTestCertificate {
    static func make(name: String = "localhost") throws -> (chain: [UInt8], key: [UInt8]) {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("alb-quic-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let cert = folder.appendingPathComponent("cert.pem").path
        let key = folder.appendingPathComponent("key.pem").path
        let result = try QUICTestProcess.run("/usr/bin/openssl", [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
            "-out", cert, "-days", "30", "-subj", "/CN=\(name)", "-addext", "subjectAltName=DNS:\(name),IP:127.0.0.1",
        ], timeout: 30)
        guard result.status == 0 else { throw QUICTestProcess.Failure("openssl req failed: \(result.output)") }
        return (try Array(Data(contentsOf: URL(fileURLWithPath: cert))),
                try Array(Data(contentsOf: URL(fileURLWithPath: key))))
    }
}

/// Runs a command with its output in a file (the QUIC client's debug output is larger than a pipe holds)
/// and kills it after `timeout` seconds.
enum QUICTestProcess {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    struct Result {
        let status: Int32
        let output: String
        let timedOut: Bool
    }

    /// A started process whose output goes to a file.
    final class Running {
        let process = Process()
        let outputFile = FileManager.default.temporaryDirectory
            .appendingPathComponent("alb-quic-out-\(UUID().uuidString)")
        private var output: FileHandle?

        init(_ executable: String, _ arguments: [String]) throws {
            guard FileManager.default.createFile(atPath: outputFile.path, contents: nil) else {
                throw Failure("cannot create \(outputFile.path)")
            }
            let output = try FileHandle(forWritingTo: outputFile)
            self.output = output
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.standardOutput = output
            process.standardError = output
            try process.run()
        }

        deinit {
            if process.isRunning { process.terminate() }
            try? FileManager.default.removeItem(at: outputFile)
        }

        /// Waits up to `timeout` seconds for the process to exit, then kills it.
        func finish(timeout: TimeInterval) throws -> Result {
            let end = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < end { usleep(20_000) }
            let timedOut = process.isRunning
            if timedOut { process.terminate() }
            process.waitUntilExit()
            try output?.close()
            output = nil
            let text = String(decoding: try Data(contentsOf: outputFile), as: UTF8.self)
            return Result(status: process.terminationStatus, output: text, timedOut: timedOut)
        }
    }

    static func run(_ executable: String, _ arguments: [String], timeout: TimeInterval) throws -> Result {
        try Running(executable, arguments).finish(timeout: timeout)
    }
}

/// Answers every request with 200 once its end has arrived: a fixed body, or the count of request body
/// bytes it got (giving their flow-control credit back as they come); records the stream events (except
/// `closed`, kept apart) as the listener hands them over.
private final class RespondingRouter: HTTP3RequestRouter, @unchecked Sendable {
    // @unchecked: touched on the listener's event loop, read by the test after the client exited.
    static let body = "served by the test router\n"
    let recorded = NIOLockedValueBox<[HTTP3StreamEvent]>([])
    let closedStreams = NIOLockedValueBox<[Int64]>([])
    let connectionsGone = NIOLockedValueBox(0)
    /// Request body bytes per stream (on the event loop only).
    private var bodyBytes: [Int64: Int] = [:]

    func released(streamID: Int64) -> Bool {
        closedStreams.withLockedValue { $0.contains(streamID) } || connectionsGone.withLockedValue { $0 > 0 }
    }

    func route(_ record: QUICStreamEvents, writer: QUICConnectionWriter) {
        if record.connectionClosed { connectionsGone.withLockedValue { $0 += 1 } }
        for event in record.events {
            if case .closed(let streamID) = event {
                closedStreams.withLockedValue { $0.append(streamID) }
                continue
            }
            recorded.withLockedValue { $0.append(event) }
            let connection = record.connection
            if case .body(let streamID, let bytes) = event {
                // Passed on at once: the client may send as much again.
                bodyBytes[streamID, default: 0] += bytes.readableBytes
                connection.consumeRequestBody(streamID: streamID, bytes: bytes.readableBytes)
                writer.connectionNeedsWrite(connection)
            }
            guard case .end(let streamID) = event else { continue }
            let text = bodyBytes[streamID].map { "\($0) bytes\n" } ?? Self.body
            connection.respond(streamID: streamID, status: 200,
                               fields: [HTTP3HeaderField(name: "content-type", value: "text/plain")], endStream: false)
            connection.sendBody(streamID: streamID, ByteBuffer(string: text))
            connection.endResponse(streamID: streamID)
            writer.connectionNeedsWrite(connection)
        }
    }

    func closeAll() {}
}

import ALBDataPlane
import Foundation
import Logging
import NIOPosix
import XCTest

@testable import ALBReconciler

final class TakeoverMessageTests: XCTestCase {
    func testEveryMessageSurvivesTheWire() throws {
        let messages: [TakeoverMessage] = [
            .hello(version: 1, pid: 42), .hello(version: 1, pid: 42, datagrams: true),
            .offer(version: 1, pid: 7, statusDirectory: "/var/lib/alb/status", sockets: 2),
            .sockets([TakeoverMessage.Socket(listener: "web", address: "0.0.0.0:80", boundAddress: "0.0.0.0:80"),
                      TakeoverMessage.Socket(listener: "v6", address: "[::]:0", boundAddress: "[::]:41234"),
                      TakeoverMessage.Socket(listener: "h3", address: "0.0.0.0:443", boundAddress: "0.0.0.0:443",
                                             datagram: true)]),
            .ready, .done, .abort(reason: "a reason with \"quotes\""),
        ]
        for message in messages {
            XCTAssertEqual(try TakeoverMessage(decoding: message.encoded()), message)
        }
    }

    func testTheWireFormIsTheDocumentedOne() {
        // docs/takeover.md shows these; a peer built from another commit must read them the same way.
        XCTAssertEqual(String(decoding: TakeoverMessage.hello(version: 1, pid: 42).encoded(), as: UTF8.self),
                       #"{"pid":42,"type":"hello","version":1}"#)
        XCTAssertEqual(String(decoding: TakeoverMessage.ready.encoded(), as: UTF8.self), #"{"type":"ready"}"#)
        // A successor that takes QUIC sockets says so; a TCP socket's entry reads as before, a UDP one is marked.
        XCTAssertEqual(String(decoding: TakeoverMessage.hello(version: 1, pid: 42, datagrams: true).encoded(), as: UTF8.self),
                       #"{"datagrams":true,"pid":42,"type":"hello","version":1}"#)
        XCTAssertEqual(String(decoding: TakeoverMessage.sockets([
            TakeoverMessage.Socket(listener: "web", address: "a:1", boundAddress: "a:1"),
            TakeoverMessage.Socket(listener: "h3", address: "a:1", boundAddress: "a:1", datagram: true),
        ]).encoded(), as: UTF8.self),
                       #"{"sockets":[{"address":"a:1","boundAddress":"a:1","listener":"web"},"#
                           + #"{"address":"a:1","boundAddress":"a:1","datagram":true,"listener":"h3"}],"type":"sockets"}"#)
        XCTAssertEqual(String(decoding: TakeoverMessage.offer(version: 1, pid: 7, statusDirectory: "/s", sockets: 1).encoded(),
                              as: UTF8.self),
                       #"{"count":1,"pid":7,"statusDirectory":"\/s","type":"offer","version":1}"#)
    }

    func testMalformedMessagesAreRefused() {
        for text in ["", "{", "[]", #"{"type":"hello"}"#, #"{"type":"offer","version":1,"pid":1,"count":1}"#,
                     #"{"type":"offer","version":1,"pid":1,"statusDirectory":"/s","count":-1}"#,
                     #"{"type":"sockets"}"#, #"{"type":"surprise"}"#, #"{"version":1}"#] {
            XCTAssertThrowsError(try TakeoverMessage(decoding: Array(text.utf8)), text) { error in
                guard case .malformed = error as? TakeoverProtocolError else {
                    return XCTFail("\(text): \(error)")
                }
            }
        }
    }
}

/// Both sides of the protocol in one process, over a real socket file: what the old side passes, and
/// what each side does when the other fails.
final class TakeoverHandshakeTests: XCTestCase {
    private var group: MultiThreadedEventLoopGroup?
    private var directory = ""

    override func setUp() async throws {
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.directory = NSTemporaryDirectory() + "alb-takeover-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
    }

    override func tearDown() async throws {
        try await self.group?.shutdownGracefully()
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    private var status: String { self.directory + "/status" }
    private var socketPath: String { self.directory + "/alb.sock" }

    /// A data plane serving one listener, its status lock, and the takeover listener; the connections
    /// that arrive come out of the returned stream.
    private func oldProcess() async throws -> (DataPlane, String, StatusDirectoryLock, TakeoverListener, AsyncStream<DescriptorChannel>) {
        let plane = try DataPlane(group: try XCTUnwrap(self.group), accessLog: nil, drainTimeout: .milliseconds(200))
        let address = try await plane.start(ListenerConfig(name: "web", bindHost: "127.0.0.1", port: 0, groups: []))
        let lock = try StatusDirectoryLock(directory: self.status)
        let (connections, continuation) = AsyncStream.makeStream(of: DescriptorChannel.self)
        let listener = try TakeoverListener.start(path: self.socketPath) { continuation.yield($0) }
        return (plane, address, lock, listener, connections)
    }

    private func handOver(_ connections: AsyncStream<DescriptorChannel>, _ plane: DataPlane, _ lock: StatusDirectoryLock,
                          readyTimeout: Duration = .seconds(5)) async -> Takeover.HandOverOutcome? {
        for await channel in connections {
            return await Takeover.handOver(over: channel, dataPlane: plane, lock: lock, statusDirectory: self.status,
                                           readyTimeout: readyTimeout, log: Logger.alb(level: .error))
        }
        return nil
    }

    func testAHandOverPassesTheLockAndTheSocketsAndEndsWithDone() async throws {
        let (plane, address, lock, listener, connections) = try await oldProcess()
        defer { listener.stop() }
        let status = self.status, path = self.socketPath
        let newSide = Task { () throws -> (TakeoverClient.Offer, TakeoverClient.Confirmation) in
            let client = try XCTUnwrap(try TakeoverClient.connect(path: path))
            let offer = try await client.receiveOffer(statusDirectory: status)
            return (offer, await client.confirm(previousPID: offer.previousPID))
        }
        let outcome = await handOver(connections, plane, lock)
        let (offer, confirmation) = try await newSide.value
        XCTAssertEqual(outcome, .handedOver(pid: getpid()))
        XCTAssertEqual(confirmation, .confirmed)
        XCTAssertEqual(offer.previousPID, getpid())
        XCTAssertEqual(offer.sockets.map(\.listener), ["web"])
        XCTAssertEqual(offer.sockets.map(\.boundAddress), [address])
        let port = try XCTUnwrap(Int(address.split(separator: ":").last ?? ""))
        XCTAssertEqual(offer.sockets.first?.descriptor.localAddress?.port, port)
        XCTAssertEqual(offer.lock.descriptor.identity, lock.descriptor.identity)
        await plane.drainAfterHandOff(lastRequestWindow: .zero)
    }

    func testAnotherStatusDirectoryIsRefusedAndTheOldSideKeepsEverything() async throws {
        let (plane, _, lock, listener, connections) = try await oldProcess()
        defer { listener.stop() }
        let elsewhere = self.directory + "/elsewhere", path = self.socketPath
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        let newSide = Task { () -> String in
            do {
                let client = try XCTUnwrap(try TakeoverClient.connect(path: path))
                _ = try await client.receiveOffer(statusDirectory: elsewhere)
                return "accepted"
            } catch {
                return String(describing: error)
            }
        }
        let outcome = await handOver(connections, plane, lock)
        let refusal = await newSide.value
        XCTAssertTrue(refusal.contains("keeps its status files in"), refusal)
        guard case .failed(let reason)? = outcome else { return XCTFail("\(String(describing: outcome))") }
        XCTAssertTrue(reason.contains("another status directory"), reason)
        XCTAssertEqual(plane.listenerKeys, ["web"])
    }

    func testASuccessorThatNeverSaysReadyIsGivenUpOn() async throws {
        let (plane, address, lock, listener, connections) = try await oldProcess()
        defer { listener.stop() }
        let status = self.status, path = self.socketPath
        let newSide = Task { () throws -> TakeoverClient in
            let client = try XCTUnwrap(try TakeoverClient.connect(path: path))
            _ = try await client.receiveOffer(statusDirectory: status)
            return client  // and never confirms
        }
        let outcome = await handOver(connections, plane, lock, readyTimeout: .milliseconds(300))
        let client = try await newSide.value
        guard case .failed(let reason)? = outcome else { return XCTFail("\(String(describing: outcome))") }
        XCTAssertTrue(reason.contains("did not answer in time"), reason)
        // Too late now: the old side said abort, and it is alive, so the successor must step back.
        guard case .refused = await client.confirm(previousPID: getpid()) else { return XCTFail("not refused") }
        // The old side still accepts.
        let (host, port) = (String(address.split(separator: ":")[0]), Int(address.split(separator: ":")[1]) ?? 0)
        let probe = try await ClientBootstrap(group: try XCTUnwrap(self.group)).connect(host: host, port: port).get()
        try await probe.close()
    }

    func testASuccessorWithNothingToTakeOverStartsAsUsual() throws {
        XCTAssertNil(try TakeoverClient.connect(path: self.socketPath))
    }
}

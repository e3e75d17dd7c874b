import Foundation
import NIOCore
import XCTest

@testable import ALBDataPlane

/// The descriptor-passing wrapper, in one process: what arrives is the same open socket, not a lookalike.
final class DescriptorChannelTests: XCTestCase {
    private func listeningSocket() throws -> OwnedDescriptor {
        try OwnedDescriptor.listeningTCP(on: try SocketAddress(ipAddress: "127.0.0.1", port: 0), backlog: 16)
    }

    private func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "alb-descriptors-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func testAPassedListeningSocketIsTheSameSocket() throws {
        let (sender, receiver) = try DescriptorChannel.pair()
        let original = try listeningSocket()
        try sender.send(Array("here".utf8), descriptors: [original])
        let message = try receiver.receive(timeout: .seconds(5))
        XCTAssertEqual(String(decoding: message.bytes, as: UTF8.self), "here")
        XCTAssertEqual(message.descriptors.count, 1)
        let copy = try XCTUnwrap(message.descriptors.first)
        // Another descriptor number for the same socket: same inode, same address, still listening.
        XCTAssertNotEqual(copy.withRawValue { $0 }, original.withRawValue { $0 })
        XCTAssertEqual(copy.identity, original.identity)
        XCTAssertNotNil(copy.identity)
        let address = try XCTUnwrap(original.localAddress)
        XCTAssertEqual(copy.localAddress, address)
        XCTAssertNotEqual(address.port, 0)
        XCTAssertTrue(copy.isListeningSocket)
        // The sender's descriptor stays open; closing it leaves the copy listening.
        XCTAssertTrue(original.isOpen)
        original.close()
        XCTAssertTrue(copy.isListeningSocket)
    }

    func testAConnectionQueuedBeforeTheOriginalClosesIsAcceptedFromTheCopy() throws {
        let (sender, receiver) = try DescriptorChannel.pair()
        let original = try listeningSocket()
        let port = try XCTUnwrap(original.localAddress?.port)
        try sender.send(Array("socket".utf8), descriptors: [original])
        let copy = try XCTUnwrap(try receiver.receive(timeout: .seconds(5)).descriptors.first)
        // The kernel completes the handshake into the shared accept queue; nobody has accepted yet.
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(client) }
        let target = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        XCTAssertEqual(target.withSockAddr { connect(client, $0, socklen_t($1)) }, 0)
        original.close()
        let accepted = try XCTUnwrap(copy.withRawValue { raw -> Int32 in
            var entry = pollfd(fd: raw, events: Int16(POLLIN), revents: 0)
            _ = poll(&entry, 1, 5000)
            return accept(raw, nil, nil)
        })
        XCTAssertGreaterThanOrEqual(accepted, 0, "the queued connection was lost with the original descriptor")
        close(accepted)
    }

    func testMessagesKeepTheirBoundariesAndTheirDescriptors() throws {
        let (sender, receiver) = try DescriptorChannel.pair()
        let socket = try listeningSocket()
        let many = try (0..<DescriptorChannel.maximumDescriptors).map { _ in try socket.duplicate() }
        try sender.send(Array("first".utf8))
        try sender.send(Array("second".utf8), descriptors: many)
        try sender.send(Array("third".utf8), descriptors: [socket])
        let first = try receiver.receive(timeout: .seconds(5))
        let second = try receiver.receive(timeout: .seconds(5))
        let third = try receiver.receive(timeout: .seconds(5))
        XCTAssertEqual([first, second, third].map { String(decoding: $0.bytes, as: UTF8.self) }, ["first", "second", "third"])
        XCTAssertEqual([first, second, third].map(\.descriptors.count), [0, DescriptorChannel.maximumDescriptors, 1])
        XCTAssertTrue(second.descriptors.allSatisfy { $0.identity == socket.identity })
    }

    func testTimeoutsLimitsAndAPeerThatGoes() throws {
        let (sender, receiver) = try DescriptorChannel.pair()
        XCTAssertThrowsError(try receiver.receive(timeout: .milliseconds(50))) { error in
            XCTAssertEqual(error as? DescriptorChannelError, .timedOut)
        }
        XCTAssertThrowsError(try sender.send([]))
        XCTAssertThrowsError(try sender.send([UInt8](repeating: 0, count: DescriptorChannel.maximumMessageBytes + 1)))
        let socket = try listeningSocket()
        let tooMany = [OwnedDescriptor](repeating: socket, count: DescriptorChannel.maximumDescriptors + 1)
        XCTAssertThrowsError(try sender.send(Array("x".utf8), descriptors: tooMany))
        sender.close()
        XCTAssertThrowsError(try receiver.receive(timeout: .seconds(5))) { error in
            XCTAssertEqual(error as? DescriptorChannelError, .closed)
        }
        XCTAssertThrowsError(try receiver.send(Array("anyone?".utf8))) { error in
            XCTAssertEqual(error as? DescriptorChannelError, .closed)
        }
    }

    func testListenerConnectAndTheSocketFile() throws {
        let directory = try temporaryDirectory()
        let path = directory + "/alb.sock"
        XCTAssertNil(try DescriptorChannel.connect(path: path), "no file: nobody listens")

        let first = try DescriptorChannelListener.listen(path: path)
        XCTAssertTrue(first.holdsPath)
        let client = try XCTUnwrap(try DescriptorChannel.connect(path: path))
        let server = try XCTUnwrap(try first.accept(timeout: .seconds(5)))
        try client.send(Array("hello".utf8))
        XCTAssertEqual(try server.receive(timeout: .seconds(5)).bytes, Array("hello".utf8))
        XCTAssertEqual(server.peer?.processID, getpid())
        XCTAssertEqual(server.peer?.userID, geteuid())
        XCTAssertNil(try first.accept(timeout: .milliseconds(20)))

        // A successor renames its own socket over the path; the first one then leaves the file alone.
        let second = try DescriptorChannelListener.listen(path: path)
        XCTAssertFalse(first.holdsPath)
        XCTAssertTrue(second.holdsPath)
        first.close()
        XCTAssertTrue(FileManager.default.fileExists(atPath: path))
        XCTAssertNotNil(try DescriptorChannel.connect(path: path))
        // A socket file nobody listens on any more counts as nobody.
        second.close(removingPath: false)
        XCTAssertTrue(FileManager.default.fileExists(atPath: path))
        XCTAssertNil(try DescriptorChannel.connect(path: path))
        let third = try DescriptorChannelListener.listen(path: path)
        third.close()
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
    }

    func testAListenerRefusesToReplaceSomethingThatIsNoSocket() throws {
        let path = try temporaryDirectory() + "/not-a-socket"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data("keep me".utf8)))
        XCTAssertThrowsError(try DescriptorChannelListener.listen(path: path))
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "keep me")
    }
}

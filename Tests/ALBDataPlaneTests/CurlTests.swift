import Foundation
import NIOCore
import NIOPosix
import XCTest

@testable import ALBDataPlane

/// End to end with a real client: curl, when it is installed.
final class CurlTests: XCTestCase {
    private func curl(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func testCurlGetAndChunkedUpload() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/curl") else {
            throw XCTSkip("curl is not installed")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let backend = try await TestBackend.start(name: "curl-backend", group: group)
        let dataPlane = try DataPlane(group: group, accessLog: nil)
        let address = try await dataPlane.start(
            ListenerConfig(
                name: "curl",
                bindHost: "127.0.0.1",
                port: 0,
                groups: [BackendGroup(name: "g", servers: [BackendServer(host: "127.0.0.1", port: backend.port)])]
            )
        )
        let get = try curl(["-s", "-w", " %{http_code}", "http://\(address)/", "http://\(address)/"])
        XCTAssertEqual(get.output, "curl-backend 200curl-backend 200")

        let file = NSTemporaryDirectory() + "alb-upload-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try Data(repeating: 0x61, count: 3 * 1024 * 1024 + 7).write(to: URL(fileURLWithPath: file))
        let upload = try curl([
            "-s", "-H", "Transfer-Encoding: chunked", "--data-binary", "@\(file)", "http://\(address)/count",
        ])
        XCTAssertEqual(upload.output, "\(3 * 1024 * 1024 + 7)")
        let expect = try curl(["-s", "-H", "Expect: 100-continue", "--data-binary", "@\(file)", "http://\(address)/count"])
        XCTAssertEqual(expect.output, "\(3 * 1024 * 1024 + 7)")
        let head = try curl(["-s", "-I", "http://\(address)/"])
        XCTAssertTrue(head.output.hasPrefix("HTTP/1.1 200 OK"), head.output)

        await dataPlane.shutdown(drainTimeout: .seconds(1))
        await backend.stop()
        try await group.shutdownGracefully()
    }
}

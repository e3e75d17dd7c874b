import ALBHTTP
import NIOCore
import NIOHTTP1
import NIOPosix
import XCTest

@testable import ALBDataPlane

/// A backend pool's connections over real sockets on 127.0.0.1.
final class BackendPoolTests: XCTestCase {
    /// Tells of the close, as the exchange hears it.
    private final class CloseWaiter: BackendConnectionDelegate {
        let closed: EventLoopPromise<Void>
        init(_ closed: EventLoopPromise<Void>) { self.closed = closed }
        func backendRead(_ part: HTTPClientResponsePart, summary: HTTP1HeadSummary?) {}
        func backendReadComplete() {}
        func backendWritabilityChanged(isWritable: Bool) {}
        func backendClosed() { self.closed.succeed(()) }
    }

    private struct NeverTold: Error {}

    /// A head refused as it is written from the connect's completion closes the connection before NIO has fired
    /// `channelActive`, so NIO fires no `channelInactive` either: the exchange must hear of the close all the same
    /// (it waited for its timeout before).
    func testAConnectionClosedFromItsConnectCompletionTellsItsExchange() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let backend = try await TestBackend.start(name: "b", group: group)
        let loop = group.next()
        let closed = loop.makePromise(of: Void.self)
        try await loop.submit {
            let pool = BackendPool(server: BackendServer(host: "127.0.0.1", port: backend.port), eventLoop: loop)
            pool.connect(connectTimeout: .seconds(5)) { result in
                guard case .success(let connection) = result else {
                    closed.fail(NeverTold())
                    return
                }
                connection.delegate = CloseWaiter(closed)
                // A method that is no token: refused as it is written, and the connection closed.
                connection.write(.head(HTTPRequestHead(version: .http1_1, method: .RAW(value: "GE T"), uri: "/")))
            }
        }.get()
        let timeout = loop.scheduleTask(in: .seconds(10)) { closed.fail(NeverTold()) }
        try await closed.futureResult.get()
        timeout.cancel()
        XCTAssertEqual(backend.requests.value, 0, "nothing of the request reached the backend")
        await backend.stop()
        try await group.shutdownGracefully()
    }
}

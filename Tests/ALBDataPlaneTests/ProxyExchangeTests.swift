import NIOCore
import NIOHTTP1
import XCTest

@testable import ALBDataPlane

/// The exchange state machine alone: events in, decisions out, time from a manual clock.
final class ProxyExchangeTests: XCTestCase {
    private let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    private func exchange(_ method: HTTPMethod = .GET, version: HTTPVersion = .http1_1, headers: HTTPHeaders = [:],
                          timeout: TimeAmount = .seconds(60)) -> ProxyExchange {
        ProxyExchange(head: HTTPRequestHead(version: version, method: method, uri: "/", headers: headers),
                      started: t0, requestTimeout: timeout, requestBytes: 0)
    }

    /// A GET that reached a backend and whose request is complete.
    private func forwardingGet(reused: Bool = false) -> ProxyExchange {
        var machine = exchange()
        XCTAssertEqual(machine.receiveHead(serverAvailable: true, hasBody: false, expectsContinue: false,
                                           upgradeRequested: false), .acquire(sendContinue: false))
        XCTAssertEqual(machine.receiveEnd(), .none, "queued until a backend is there")
        XCTAssertEqual(machine.backendAcquired(success: true, reused: reused, fromCallback: false).flushNow, true)
        return machine
    }

    func testConnectIsRefusedWithoutABackendAndCloses() {
        var machine = exchange(.CONNECT)
        XCTAssertFalse(machine.mayReachBackend)
        XCTAssertEqual(machine.receiveHead(serverAvailable: false, hasBody: false, expectsContinue: false,
                                           upgradeRequested: false), .respond(.notImplemented, close: true))
    }

    func testNoServerAnswersABodylessRequestAtItsEndAndKeepsTheConnection() {
        var machine = exchange()
        XCTAssertEqual(machine.receiveHead(serverAvailable: false, hasBody: false, expectsContinue: false,
                                           upgradeRequested: false), .respondAtEnd(.serviceUnavailable))
        XCTAssertEqual(machine.receiveEnd(), .respond(.serviceUnavailable))
        XCTAssertTrue(machine.respondWithError(.serviceUnavailable, close: false), "keep-alive")
        XCTAssertEqual(machine.status, 503)
    }

    func testNoServerForARequestWithABodyClosesAtOnce() {
        var machine = exchange(.POST)
        XCTAssertEqual(machine.receiveHead(serverAvailable: false, hasBody: true, expectsContinue: false,
                                           upgradeRequested: false), .respond(.serviceUnavailable, close: true))
        XCTAssertFalse(machine.respondWithError(.serviceUnavailable, close: true))
    }

    func testExpectContinueIsAnsweredByTheProxy() {
        var machine = exchange(.POST)
        XCTAssertEqual(machine.receiveHead(serverAvailable: true, hasBody: true, expectsContinue: true,
                                           upgradeRequested: false), .acquire(sendContinue: true))
    }

    func testBodyPartsQueueWhileAcquiringAndFlowOnceForwarding() {
        var machine = exchange(.POST)
        _ = machine.receiveHead(serverAvailable: true, hasBody: true, expectsContinue: false, upgradeRequested: false)
        XCTAssertTrue(machine.queuesRequestParts)
        XCTAssertEqual(machine.receiveBody(bytes: 10, now: t0), .none)
        let acquired = machine.backendAcquired(success: true, reused: false, fromCallback: true)
        XCTAssertNil(acquired.respond)
        XCTAssertTrue(acquired.flushNow, "a connect callback is outside the client's read: flush now")
        XCTAssertFalse(machine.queuesRequestParts)
        XCTAssertEqual(machine.receiveBody(bytes: 5, now: t0), .forward(flush: false))
        XCTAssertEqual(machine.receiveEnd(), .forward(flush: true))
        XCTAssertEqual(machine.bodyBytes, 15)
    }

    func testAFailedConnectMayTryAnotherServerOnceThenIsA502() {
        var machine = exchange(.POST)
        _ = machine.receiveHead(serverAvailable: true, hasBody: true, expectsContinue: false, upgradeRequested: false)
        XCTAssertEqual(machine.receiveBody(bytes: 10, now: t0), .none, "queued: nothing reached a backend")
        XCTAssertTrue(machine.mayTryAnotherServer())
        XCTAssertTrue(machine.queuesRequestParts, "still acquiring")
        XCTAssertFalse(machine.mayTryAnotherServer(), "one retry per exchange")
        XCTAssertEqual(machine.backendAcquired(success: false, reused: false, fromCallback: true).respond, .badGateway)
        var sent = forwardingGet()
        XCTAssertFalse(sent.mayTryAnotherServer(), "never once the request went to a backend")
    }

    func testAFailedConnectIsA502() {
        var machine = exchange()
        _ = machine.receiveHead(serverAvailable: true, hasBody: false, expectsContinue: false, upgradeRequested: false)
        XCTAssertEqual(machine.backendAcquired(success: false, reused: false, fromCallback: true).respond, .badGateway)
    }

    func testTheRequestTimeoutIsExtendedWhileTheBodyFlowsThenIsA504() {
        var machine = exchange(.POST, timeout: .seconds(10))
        _ = machine.receiveHead(serverAvailable: true, hasBody: true, expectsContinue: false, upgradeRequested: false)
        _ = machine.backendAcquired(success: true, reused: false, fromCallback: true)
        _ = machine.receiveBody(bytes: 1, now: t0 + .seconds(8))
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(10)), .rearm(t0 + .seconds(18)))
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(18)), .respond(.gatewayTimeout))
        XCTAssertEqual(machine.upstreamError, .noResponseInTime)
    }

    /// After the head the timeout measures the backend's silence between reads (nginx's `proxy_read_timeout`): a
    /// slow response that keeps coming is not cut, one that stops for the timeout is ended.
    func testOnceTheResponseHeadIsSentTheTimeoutBoundsTheBackendsSilence() {
        var machine = forwardingGet()  // a 60 s request timeout from t0
        XCTAssertEqual(machine.receiveResponseHead(status: .ok, isKeepAlive: true, headersValid: true),
                       .relay(keepAlive: true))
        machine.backendReadComplete(now: t0 + .seconds(59))
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(60)), .rearm(t0 + .seconds(119)), "measured from the head")
        machine.receiveResponseBody(bytes: 100)
        machine.backendReadComplete(now: t0 + .seconds(118))
        machine.backendReadComplete(now: t0 + .seconds(119))  // a read without response bytes is no progress
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(119)), .rearm(t0 + .seconds(178)))
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(178)), .abortResponse)
        XCTAssertEqual(machine.upstreamError, .silentMidResponse)
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(3600)), .none)
        XCTAssertEqual(machine.backendClosed(), .none, "ended: the backend's close is no news")
        XCTAssertEqual(machine.status, 200, "logged with the status that went out")
    }

    func testAnUnsolicited101AndInvalidHeadersAre502() {
        var unsolicited = forwardingGet()
        XCTAssertEqual(unsolicited.receiveResponseHead(status: .switchingProtocols, isKeepAlive: true, headersValid: true),
                       .refuse(.badGateway))
        XCTAssertEqual(unsolicited.upstreamStatus, 101, "logged as what the backend sent")
        var invalid = forwardingGet()
        XCTAssertEqual(invalid.receiveResponseHead(status: .ok, isKeepAlive: true, headersValid: false), .refuse(.badGateway))
    }

    /// A WebSocket upgrade whose request has ended and reached a backend.
    private func forwardingUpgrade() -> ProxyExchange {
        var machine = exchange()
        XCTAssertEqual(machine.receiveHead(serverAvailable: true, hasBody: false, expectsContinue: false,
                                           upgradeRequested: true), .acquire(sendContinue: false))
        _ = machine.receiveEnd()
        _ = machine.backendAcquired(success: true, reused: false, fromCallback: true)
        return machine
    }

    func testAnAcceptedUpgradeBecomesATunnelOnceThe101Ends() {
        var machine = forwardingUpgrade()
        XCTAssertEqual(machine.receiveResponseHead(status: .switchingProtocols, isKeepAlive: true, headersValid: true,
                                                   acceptsWebSocket: true), .switchProtocols)
        XCTAssertEqual(machine.status, 101)
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(3600)), .none, "no request timeout in a tunnel")
        XCTAssertEqual(machine.receiveResponseEnd(), .init(reuseBackend: false, closeClient: false, tunnel: true))
    }

    func testA101NotNamingWebSocketIsA502() {
        var machine = forwardingUpgrade()
        XCTAssertEqual(machine.receiveResponseHead(status: .switchingProtocols, isKeepAlive: true, headersValid: true,
                                                   acceptsWebSocket: false), .refuse(.badGateway))
    }

    func testARefusedUpgradeIsRelayedAndTheClientConnectionCloses() {
        // Nothing behind the upgrade request was read as HTTP: the connection cannot go on.
        var machine = forwardingUpgrade()
        XCTAssertEqual(machine.receiveResponseHead(status: .forbidden, isKeepAlive: true, headersValid: true),
                       .relay(keepAlive: false))
        XCTAssertEqual(machine.receiveResponseEnd(), .init(reuseBackend: true, closeClient: true))
        var failed = forwardingUpgrade()
        XCTAssertFalse(failed.respondWithError(.badGateway, close: false))
        var noServer = exchange()
        XCTAssertEqual(noServer.receiveHead(serverAvailable: false, hasBody: false, expectsContinue: false,
                                            upgradeRequested: true), .respondAtEnd(.serviceUnavailable))
        XCTAssertFalse(noServer.respondWithError(.serviceUnavailable, close: false))
    }

    func testACompleteKeepAliveExchangeReusesBothConnections() {
        var machine = forwardingGet()
        _ = machine.receiveResponseHead(status: .ok, isKeepAlive: true, headersValid: true)
        machine.receiveResponseBody(bytes: 100)
        XCTAssertEqual(machine.receiveResponseEnd(), .init(reuseBackend: true, closeClient: false))
        XCTAssertEqual(machine.responseBytes, 100)
    }

    func testAnEarlyResponseClosesTheClientAndDropsTheBackendConnection() {
        var machine = exchange(.POST)
        _ = machine.receiveHead(serverAvailable: true, hasBody: true, expectsContinue: false, upgradeRequested: false)
        _ = machine.backendAcquired(success: true, reused: false, fromCallback: true)
        XCTAssertEqual(machine.receiveResponseHead(status: .payloadTooLarge, isKeepAlive: true, headersValid: true),
                       .relay(keepAlive: false))
        XCTAssertEqual(machine.receiveResponseEnd(), .init(reuseBackend: false, closeClient: true))
        XCTAssertEqual(machine.receiveBody(bytes: 10, now: t0), .none, "nothing more is forwarded")
    }

    func testAnHTTP10ClientWithoutKeepAliveIsClosedAfterTheResponse() {
        var machine = exchange(version: .http1_0)
        _ = machine.receiveHead(serverAvailable: true, hasBody: false, expectsContinue: false, upgradeRequested: false)
        _ = machine.receiveEnd()
        _ = machine.backendAcquired(success: true, reused: false, fromCallback: false)
        XCTAssertEqual(machine.receiveResponseHead(status: .ok, isKeepAlive: true, headersValid: true),
                       .relay(keepAlive: false))
    }

    func testAReusedConnectionClosingFirstIsRetriedOnceForABodylessRequest() {
        var machine = forwardingGet(reused: true)
        XCTAssertEqual(machine.backendClosed(), .retryOnFreshConnection)
        XCTAssertTrue(machine.queuesRequestParts)
        _ = machine.backendAcquired(success: true, reused: true, fromCallback: true)
        XCTAssertEqual(machine.backendClosed(), .respond(.badGateway), "only once")
    }

    func testNothingIsRetriedOnceBodyBytesWentOutOrOnAFreshConnection() {
        var fresh = forwardingGet(reused: false)
        XCTAssertEqual(fresh.backendClosed(), .respond(.badGateway))

        var withBody = exchange(.POST)
        _ = withBody.receiveHead(serverAvailable: true, hasBody: true, expectsContinue: false, upgradeRequested: false)
        _ = withBody.backendAcquired(success: true, reused: true, fromCallback: false)
        _ = withBody.receiveBody(bytes: 3, now: t0)
        _ = withBody.receiveEnd()
        XCTAssertEqual(withBody.backendClosed(), .respond(.badGateway))
    }

    func testABackendClosingMidResponseClosesTheClient() {
        var machine = forwardingGet()
        _ = machine.receiveResponseHead(status: .ok, isKeepAlive: true, headersValid: true)
        XCTAssertEqual(machine.backendClosed(), .closeClient)
        XCTAssertEqual(machine.backendClosed(), .none)
    }
}

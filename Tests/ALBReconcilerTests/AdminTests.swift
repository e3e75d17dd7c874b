import ALBManifest
import Foundation
import NIOHTTP1
import XCTest

@testable import ALBReconciler

final class AdminTests: XCTestCase {
    private let now = Date(timeIntervalSince1970: 1_000_000)

    private func listener(_ name: String, _ phase: ListenerLifecycle.Phase, synced: Bool = true,
                          reason: String = "Applied", message: String = "") -> ResourceStatus {
        var status = ResourceStatus(id: ResourceID(kind: .listener, name: name), source: "\(name).yaml:1")
        status.state = phase
        status.setCondition("Valid", true, reason: "Validated", message: "", now: now)
        status.setCondition("Synced", synced, reason: reason, message: message, now: now)
        return status
    }

    func testReadyOnlyAfterTheFirstPassAndWhenEveryListenerServesAsAsked() {
        var state = AdminState()
        XCTAssertFalse(state.readiness.ready)
        XCTAssertEqual(state.readiness.reasons, ["the first reconcile pass has not finished"])
        state.firstPassDone = true
        state.statuses = [listener("web", .running), listener("paused", .stopped)]
        XCTAssertTrue(state.readiness.ready, "a listener its manifest stops is as asked")
        state.statuses.append(listener("api", .failed, synced: false, reason: "BindFailed", message: "address in use"))
        XCTAssertEqual(state.readiness.ready, false)
        XCTAssertEqual(state.readiness.reasons, ["listener api: Failed (BindFailed): address in use"])
        state.draining = true
        XCTAssertEqual(state.readiness.reasons, ["draining: the reconciler is stopping"])
    }

    func testAnswers() {
        var state = AdminState()
        state.firstPassDone = true
        state.statuses = [listener("web", .running)]
        XCTAssertEqual(AdminHandler.answer(method: .GET, path: "/healthz", state: state).0, .ok)
        XCTAssertEqual(AdminHandler.answer(method: .GET, path: "/readyz", state: state).0, .ok)
        let status = AdminHandler.answer(method: .GET, path: "/status?pretty", state: state)
        XCTAssertEqual(status.1, "application/json")
        let documents = (try? JSONSerialization.jsonObject(with: status.2)) as? [[String: Any]]
        XCTAssertEqual(documents?.first?["name"] as? String, "web")
        XCTAssertEqual(AdminHandler.answer(method: .POST, path: "/readyz", state: state).0, .methodNotAllowed)
        XCTAssertEqual(AdminHandler.answer(method: .GET, path: "/", state: state).0, .notFound)
        state.statuses = [listener("web", .configuring, synced: false, reason: "BindFailed", message: "in use")]
        let notReady = AdminHandler.answer(method: .GET, path: "/readyz", state: state)
        XCTAssertEqual(notReady.0, .serviceUnavailable)
        XCTAssertEqual(String(decoding: notReady.2, as: UTF8.self), "not ready\nlistener web: Configuring (BindFailed): in use\n")
    }

    func testAdminAddresses() throws {
        XCTAssertEqual(try AdminAddress.parse("127.0.0.1:9901").get(), AdminAddress(host: "127.0.0.1", port: 9901))
        XCTAssertEqual(try AdminAddress.parse("[::1]:9901").get(), AdminAddress(host: "::1", port: 9901))
        XCTAssertTrue(try AdminAddress.parse("localhost:1").get().isLoopback)
        XCTAssertTrue(try AdminAddress.parse("127.9.9.9:1").get().isLoopback)
        XCTAssertFalse(try AdminAddress.parse("0.0.0.0:9901").get().isLoopback)
        XCTAssertFalse(try AdminAddress.parse("[::]:9901").get().isLoopback)
        for bad in ["9901", "127.0.0.1", "127.0.0.1:x", "127.0.0.1:70000", ":9901", "::1:9901", "[::1]9901"] {
            if case .success = AdminAddress.parse(bad) { XCTFail("accepted \(bad)") }
        }
    }
}

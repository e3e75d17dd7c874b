@testable import ALBDataPlane
import ALBManifest
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import XCTest

@testable import ALBReconciler

/// The `/metrics` text (families, labels, histograms), the admin port's reservation and the log lines.
final class MetricsExpositionTests: XCTestCase {
    func testDataPlaneFamiliesInTheTextFormat() {
        var counters = ListenerLoopCounters()
        counters.totalConnections = 3
        counters.countResponse(status: 200)
        counters.countResponse(status: 204, framing: .http2)
        counters.countEdgeRefusal(status: 431)
        counters.countEdgeRefusal(status: 502)  // not an edge refusal
        var metrics = DataPlane.Metrics()
        metrics.listeners = [ListenerMetrics(name: "we\"b", activeConnections: 2, counters: counters)]
        let text = MetricsText.render(metrics)
        XCTAssertTrue(text.contains("# TYPE alb_listener_requests_total counter\n"))
        XCTAssertTrue(text.contains(#"alb_listener_requests_total{listener="we\"b",protocol="HTTP/1.1",code_class="2xx"} 1"#))
        XCTAssertTrue(text.contains(#"alb_listener_requests_total{listener="we\"b",protocol="HTTP/2",code_class="2xx"} 1"#))
        XCTAssertTrue(text.contains(#"alb_listener_active_connections{listener="we\"b"} 2"#))
        XCTAssertTrue(text.contains(#"alb_listener_connections_total{listener="we\"b"} 3"#))
        XCTAssertTrue(text.contains(#"alb_listener_rejected_connections_total{listener="we\"b",reason="headers_too_large"} 1"#))
        XCTAssertTrue(text.contains(#"alb_listener_rejected_connections_total{listener="we\"b",reason="bad_gateway"}"#) == false)
        XCTAssertTrue(text.contains(#"alb_listener_request_duration_seconds_bucket{listener="we\"b",le="+Inf"} 0"#))
        // Every family has its HELP and TYPE once, before its samples.
        for line in text.split(separator: "\n") where line.hasPrefix("# TYPE ") {
            let name = line.split(separator: " ")[2]
            XCTAssertEqual(text.components(separatedBy: "# TYPE \(name) ").count, 2, String(name))
            XCTAssertTrue(text.contains("# HELP \(name) "), String(name))
        }
    }

    func testHistogramLinesAreCumulativeWithSumAndCount() {
        var writer = MetricsText.Writer()
        var counters = ListenerLoopCounters()
        counters.observeUpstream(UpstreamKey(group: "g", server: "10.0.0.1:80"), .milliseconds(7))
        counters.observeUpstream(UpstreamKey(group: "g", server: "10.0.0.1:80"), .milliseconds(300))
        let histogram = counters.upstreams[UpstreamKey(group: "g", server: "10.0.0.1:80")]?.duration ?? FixedBucketHistogram()
        writer.histogram("h", [("group", "g")], histogram)
        let lines = writer.text.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, #"h_bucket{group="g",le="0.005"} 0"#)
        XCTAssertTrue(lines.contains(#"h_bucket{group="g",le="0.01"} 1"#))
        XCTAssertTrue(lines.contains(#"h_bucket{group="g",le="0.25"} 1"#))
        XCTAssertTrue(lines.contains(#"h_bucket{group="g",le="0.5"} 2"#))
        XCTAssertTrue(lines.contains(#"h_bucket{group="g",le="+Inf"} 2"#))
        XCTAssertTrue(lines.contains(#"h_sum{group="g"} 0.307"#))
        XCTAssertEqual(lines.last, #"h_count{group="g"} 2"#)
        XCTAssertEqual(MetricsText.Writer.escape("a\\b\"c\nd"), #"a\\b\"c\nd"#)
    }

    func testMetricsRouteAndItsContentType() {
        var state = AdminState()
        state.firstPassDone = true
        let answer = AdminHandler.answer(method: .GET, path: "/metrics", state: state)
        XCTAssertEqual(answer.0, .ok)
        XCTAssertEqual(answer.1, "text/plain; version=0.0.4; charset=utf-8")
        XCTAssertEqual(AdminHandler.answer(method: .POST, path: "/metrics", state: state).0, .methodNotAllowed)
    }

    func testTheAdminAddressOverlapsListenersOnItsPort() {
        let admin = ReservedAddress(host: "127.0.0.1", port: 9901)
        XCTAssertTrue(admin.overlaps(host: "127.0.0.1", port: 9901))
        XCTAssertTrue(admin.overlaps(host: "0.0.0.0", port: 9901), "a wildcard listener would take the admin port too")
        XCTAssertTrue(admin.overlaps(host: "::", port: 9901))
        XCTAssertFalse(admin.overlaps(host: "127.0.0.1", port: 9902))
        XCTAssertFalse(admin.overlaps(host: "10.0.0.1", port: 9901))
        XCTAssertTrue(ReservedAddress(host: "localhost", port: 1).overlaps(host: "127.0.0.1", port: 1))
        XCTAssertTrue(ReservedAddress(host: "0.0.0.0", port: 1).overlaps(host: "192.168.1.1", port: 1))
        XCTAssertFalse(ReservedAddress(host: "127.0.0.1", port: 0).overlaps(host: "127.0.0.1", port: 0))
        XCTAssertEqual(ReservedAddress(host: "::1", port: 9).description, "[::1]:9")
    }

    func testReconcilerMetricsGoThroughSwiftMetricsIntoTheRegistry() {
        let metrics = MetricsEndpoint()
        var ready = ResourceStatus(id: ResourceID(kind: .listener, name: "web"), source: "web.yaml:1")
        ready.setCondition("Ready", true, reason: "Listening", message: "", now: Date())
        metrics.recordPass(duration: .milliseconds(12), manifestErrors: 2, statuses: [ready])
        var text = metrics.registry.emitToString()
        XCTAssertTrue(text.contains("alb_reconciler_passes_total 1\n"), text)
        XCTAssertTrue(text.contains("alb_reconciler_pass_duration_seconds_count 1\n"), text)
        XCTAssertTrue(text.contains("alb_reconciler_manifest_errors 2.0\n"), text)
        XCTAssertTrue(text.contains(#"alb_reconciler_resources{kind="Listener",condition="Ready",status="True"} 1.0"#), text)
        XCTAssertFalse(text.contains("alb_reconciler_last_success_timestamp_seconds 1"), "not a success: manifests have errors")
        // A label set that disappears reads 0 rather than its last value.
        metrics.recordPass(duration: .milliseconds(1), manifestErrors: 0, statuses: [])
        text = metrics.registry.emitToString()
        XCTAssertTrue(text.contains(#"alb_reconciler_resources{kind="Listener",condition="Ready",status="True"} 0.0"#), text)
        XCTAssertTrue(text.contains("alb_reconciler_last_success_timestamp_seconds 1"), text)
    }

    func testLogLinesKeepTheirFormatsAndFieldOrder() {
        let lines = NIOLockedLines()
        var logger = Logger(label: "test") { _ in ALBLogHandler(format: .text, write: { lines.append($0) }) }
        logger.logLevel = .info
        logger.info("listener running", ["listener": "web", "address": "127.0.0.1:8080"])
        logger.debug("hidden", ["a": "b"])
        logger.warning("two words")
        logger.error("quoted", ["error": "say \"no\"\nnow"])
        let text = lines.all
        XCTAssertEqual(text.count, 3)
        XCTAssertTrue(text[0].hasSuffix(" level=info msg=\"listener running\" listener=web address=127.0.0.1:8080\n"), text[0])
        XCTAssertTrue(text[1].hasSuffix(" level=warning msg=\"two words\"\n"), text[1])
        XCTAssertTrue(text[2].hasSuffix(#" level=error msg=quoted error="say \"no\"\nnow""# + "\n"), text[2])
        let json = ALBLogHandler.line(level: .info, message: "m", fields: [("z", "1"), ("a", "2")], format: .json,
                                      time: Date(timeIntervalSince1970: 0))
        XCTAssertEqual(json, #"{"a":"2","level":"info","msg":"m","time":"1970-01-01T00:00:00Z","z":"1"}"#)
        XCTAssertEqual(Logger.Level(name: "WARNING"), .warning)
        XCTAssertNil(Logger.Level(name: "trace"))
    }
}

/// Lines a log handler wrote, from any thread.
private final class NIOLockedLines: Sendable {
    private let lines = NIOLockedValueBox<[String]>([])
    func append(_ line: String) { self.lines.withLockedValue { $0.append(line) } }
    var all: [String] { self.lines.withLockedValue { $0 } }
}

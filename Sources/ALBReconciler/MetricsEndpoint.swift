import ALBDataPlane
import ALBManifest
import CoreMetrics
import Foundation
import NIOConcurrencyHelpers
import Prometheus

/// `/metrics` (docs/operations.md lists every family): the reconciler's own metrics, recorded through
/// swift-metrics' API into a swift-prometheus registry, and the data plane's, summed from its per-loop
/// counters at each scrape and written in the same exposition format.
///
/// Why the data plane does not record into the registry too: its counters are plain Ints per event loop
/// (no lock, no shared atomic per request); the registry's counters and histograms only take increments
/// and observations, so totals summed elsewhere (and fixed-bucket counts) cannot be set into them.
public final class MetricsEndpoint: Sendable {
    /// The reconciler's families: passes, pass duration, resources by condition, last successful pass,
    /// manifest errors.
    public let registry = PrometheusCollectorRegistry()
    private let passes: CoreMetrics.Counter
    private let passDuration: CoreMetrics.Timer
    private let lastSuccess: CoreMetrics.Meter
    private let manifestErrors: CoreMetrics.Meter
    /// `alb_reconciler_resources` per "kind|condition|status", created as label sets first appear.
    private let resources = NIOLockedValueBox<[String: CoreMetrics.Meter]>([:])
    private let factory: PrometheusMetricsFactory

    public init() {
        var factory = PrometheusMetricsFactory(registry: self.registry)
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5),
        ]
        self.factory = factory
        // The handlers are made by the registry with their help text (the factory would register them
        // without one); the swift-metrics objects around them are what the reconciler records through.
        self.passes = CoreMetrics.Counter(
            label: "alb_reconciler_passes_total", dimensions: [],
            handler: self.registry.makeCounter(descriptor: Self.name(
                "passes", unit: "total", help: "Reconcile passes run (start, changes, SIGHUP, retries, rescans).")),
            factory: factory)
        self.passDuration = CoreMetrics.Timer(
            label: "alb_reconciler_pass_duration_seconds", dimensions: [],
            handler: self.registry.makeDurationHistogram(
                descriptor: Self.name("pass_duration", unit: "seconds",
                                      help: "Duration of a reconcile pass: read, decode, act on the data plane, write status."),
                buckets: factory.defaultDurationHistogramBuckets),
            factory: factory)
        self.lastSuccess = CoreMetrics.Meter(
            label: "alb_reconciler_last_success_timestamp_seconds", dimensions: [],
            handler: self.registry.makeGauge(descriptor: Self.name(
                "last_success_timestamp", unit: "seconds",
                help: "Unix time of the last pass that finished with every manifest valid.")),
            factory: factory)
        self.manifestErrors = CoreMetrics.Meter(
            label: "alb_reconciler_manifest_errors", dimensions: [],
            handler: self.registry.makeGauge(descriptor: Self.name(
                "manifest_errors", unit: "",
                help: "Errors in the manifest tree at the last pass (each as `alb validate` prints it).")),
            factory: factory)
        // Constant 1, labelled with the release: a dashboard or alert can tell which build a target runs.
        self.registry.makeGauge(
            descriptor: MetricNameDescriptor(namespace: "alb", metricName: "build_info", unitName: "",
                                             helpText: "Always 1; the label says which release of alb this is."),
            labels: [("version", AlbatrossVersion.current)]
        ).set(to: 1.0)
    }

    /// After each pass (not the empty-tree wait, which acts on nothing).
    func recordPass(duration: Duration, manifestErrors: Int, statuses: some Collection<ResourceStatus>) {
        self.passes.increment()
        self.passDuration.recordNanoseconds(
            duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
        self.manifestErrors.set(manifestErrors)
        if manifestErrors == 0 {
            self.lastSuccess.set(Date().timeIntervalSince1970)
        }
        var counts: [String: Int] = [:]
        for status in statuses {
            for condition in status.conditions {
                counts["\(status.id.kind.rawValue)|\(condition.type)|\(condition.status ? "True" : "False")", default: 0] += 1
            }
        }
        self.resources.withLockedValue { meters in
            for key in Set(meters.keys).union(counts.keys) {
                let meter = meters[key] ?? self.makeResourceMeter(key)
                meters[key] = meter
                meter.set(counts[key] ?? 0)
            }
        }
    }

    private func makeResourceMeter(_ key: String) -> CoreMetrics.Meter {
        let parts = key.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
        let labels = [("kind", parts[0]), ("condition", parts.count > 1 ? parts[1] : ""),
                      ("status", parts.count > 2 ? parts[2] : "")]
        return CoreMetrics.Meter(
            label: "alb_reconciler_resources", dimensions: labels,
            handler: self.registry.makeGauge(
                descriptor: Self.name("resources", unit: "", help: "Resources by kind and condition (Valid, Synced, Ready) status."),
                labels: labels),
            factory: self.factory)
    }

    /// `alb_reconciler_NAME_UNIT`, Prometheus' naming: a namespace, a subsystem, base units last.
    private static func name(_ name: String, unit: String, help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "alb", subsystem: "reconciler", metricName: name, unitName: unit, helpText: help)
    }

    /// The whole `/metrics` text: the registry's families, then the data plane's.
    public func exposition(dataPlane: DataPlane) async -> String {
        let data = await dataPlane.metrics()
        return self.registry.emitToString() + MetricsText.render(data)
    }
}

/// The data plane's families in the Prometheus text format (version 0.0.4). Label values are bounded:
/// listener names, group names and server addresses from the manifests, protocol, status class and
/// rejection reason; never a client, a path or a header.
enum MetricsText {
    static func render(_ metrics: DataPlane.Metrics) -> String {
        var out = Writer()
        let listeners = metrics.listeners
        out.family("alb_listener_requests_total", "counter",
                   "Requests answered, by client protocol and status class (the response's, or the edge's refusal).")
        for listener in listeners {
            for clientProtocol in ClientProtocol.allCases {
                for statusClass in 1...5 {
                    out.sample("alb_listener_requests_total",
                               [("listener", listener.name), ("protocol", clientProtocol.label), ("code_class", "\(statusClass)xx")],
                               listener.counters.responses(protocol: clientProtocol, statusClass: statusClass))
                }
            }
        }
        out.family("alb_listener_request_duration_seconds", "histogram",
                   "Answered requests, from the request head to the end of the response.")
        for listener in listeners {
            out.histogram("alb_listener_request_duration_seconds", [("listener", listener.name)],
                          listener.counters.requestDuration)
        }
        out.family("alb_listener_active_connections", "gauge", "Client connections open now.")
        for listener in listeners {
            out.sample("alb_listener_active_connections", [("listener", listener.name)], listener.activeConnections)
        }
        out.family("alb_listener_parked_connections", "gauge",
                   "Of the open client connections, the idle ones whose sockets wait off their channels (--park-idle-after).")
        for listener in listeners {
            out.sample("alb_listener_parked_connections", [("listener", listener.name)], listener.parkedConnections)
        }
        out.family("alb_listener_connections_total", "counter", "Client connections accepted (not counting those over the cap).")
        for listener in listeners {
            out.sample("alb_listener_connections_total", [("listener", listener.name)], listener.counters.totalConnections)
        }
        out.family("alb_listener_received_bytes_total", "counter",
                   "Bytes read from client connections (TLS records on HTTPS listeners).")
        for listener in listeners {
            out.sample("alb_listener_received_bytes_total", [("listener", listener.name)], listener.counters.receivedBytes)
        }
        out.family("alb_listener_sent_bytes_total", "counter",
                   "Bytes written to client connections (TLS records on HTTPS listeners).")
        for listener in listeners {
            out.sample("alb_listener_sent_bytes_total", [("listener", listener.name)], listener.counters.sentBytes)
        }
        out.family("alb_listener_rejected_connections_total", "counter",
                   "Connections refused at the edge: over the connection cap, or closed after a 400, 408 or 431.")
        for listener in listeners {
            for rejection in EdgeRejection.allCases {
                out.sample("alb_listener_rejected_connections_total",
                           [("listener", listener.name), ("reason", rejection.label)],
                           listener.counters.rejections(rejection))
            }
        }

        let servers = metrics.servers
        out.family("alb_server_health", "gauge",
                   "1 for the server's health state now (Healthy, Unhealthy, Unchecked), 0 for the others.")
        for server in servers {
            for state in ["Healthy", "Unhealthy", "Unchecked"] {
                out.sample("alb_server_health", [("group", server.group), ("server", server.server), ("state", state)],
                           server.health == state ? 1 : 0)
            }
        }
        out.family("alb_server_active_requests", "gauge",
                   "Requests in flight to the server (groups with the Wlc scheduler, which counts them).")
        for server in servers {
            guard let active = server.activeRequests else { continue }
            out.sample("alb_server_active_requests", [("group", server.group), ("server", server.server)], active)
        }
        out.family("alb_server_connect_failures_total", "counter",
                   "Connects to the server that failed or timed out (a retry on another server may follow).")
        for server in servers {
            out.sample("alb_server_connect_failures_total", [("group", server.group), ("server", server.server)],
                       server.upstream.connectFailures)
        }
        out.family("alb_server_request_duration_seconds", "histogram",
                   "Requests the server answered, from the request head (connect included) to the end of its response.")
        for server in servers {
            out.histogram("alb_server_request_duration_seconds", [("group", server.group), ("server", server.server)],
                          server.upstream.duration)
        }
        return out.text
    }

    struct Writer {
        var text = ""

        mutating func family(_ name: String, _ type: String, _ help: String) {
            self.text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }

        mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Int) {
            self.sample(name, labels, String(value))
        }

        mutating func sample(_ name: String, _ labels: [(String, String)], _ value: String) {
            self.text += name
            if !labels.isEmpty {
                self.text += "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
            }
            self.text += " \(value)\n"
        }

        mutating func histogram(_ name: String, _ labels: [(String, String)], _ histogram: FixedBucketHistogram) {
            let cumulative = histogram.cumulative
            for (index, bound) in FixedBucketHistogram.boundsSeconds.enumerated() {
                self.sample(name + "_bucket", labels + [("le", "\(bound)")], cumulative[index])
            }
            self.sample(name + "_bucket", labels + [("le", "+Inf")], histogram.count)
            self.sample(name + "_sum", labels, "\(Double(histogram.sumNanoseconds) / 1_000_000_000)")
            self.sample(name + "_count", labels, histogram.count)
        }

        /// The exposition format's escapes for label values: backslash, double quote, line feed.
        static func escape(_ value: String) -> String {
            guard value.contains(where: { $0 == "\\" || $0 == "\"" || $0 == "\n" }) else { return value }
            return value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
        }
    }
}

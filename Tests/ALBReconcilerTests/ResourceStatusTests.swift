import ALBDataPlane
import ALBManifest
@testable import ALBReconciler
import Foundation
import XCTest
import Yams

final class ResourceStatusTests: XCTestCase {
    private let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func testYAMLRoundTrip() {
        var status = ResourceStatus(id: ResourceID(kind: .listener, name: "web"), source: "web.yaml:12")
        status.generation = 3
        status.observedGeneration = 3
        status.state = .running
        status.setCondition("Valid", true, reason: "Validated", message: "", now: t0)
        status.setCondition("Ready", true, reason: "Listening", message: "listening on 127.0.0.1:8080", now: t0)
        status.live = CanonicalFields(entries: [(path: "port", value: "8080"), (path: "tags.team", value: "web")])
        status.lastAttempt = LastAttempt(generation: 3, error: "bad: \"quoted\"", at: t0)
        status.transitions = [.init(from: .configuring, to: .running, at: t0, reason: "Listening")]
        status.stats = ListenerStats()
        status.desiredDigest = "abc"
        let text = status.yaml()
        XCTAssertTrue(text.hasPrefix("kind: Listener\nname: web\nsource: web.yaml:12\ngeneration: 3\n"), text)
        XCTAssertEqual(ResourceStatus.parse(yaml: text), status)
    }

    func testStatusYAMLIsBlockStyleAndEveryTextReadsBackAsItself() throws {
        let tricky = ["plain words (here); too", "web.yaml:12", "a: b", "ends:", "#comment", "x #y", "- item", "8080",
                      "1e3", "true", "No", "null", "~", "", " leading", "trailing ", "line\nbreak", "tab\there",
                      "quote \" and \\ back", "{flow}", "[list]", "a, b", "&anchor", "*alias", "!tag", "|", ">",
                      "'single'", "%directive", "@at", "`tick`", "caf\u{e9}", "\u{1F600}", "bell\u{07}", "http://x/y?z=1"]
        let document = StatusValue.map([
            ("texts", .list(tricky.map(StatusValue.text))),
            ("nested", .map([("empty", .map([])), ("none", .list([])), ("number", .integer(-3)), ("flag", .boolean(false))])),
            ("rows", .list([.map([("a", .text("x")), ("b", .list([.integer(1), .integer(2)]))]), .list([.text("p"), .text("q r")])])),
        ])
        let text = document.yaml
        XCTAssertTrue(text.hasPrefix("texts:\n- plain words (here); too\n- web.yaml:12\n- \"a: b\"\n"), text)
        XCTAssertTrue(text.contains("\nnested:\n  empty: {}\n  none: []\n  number: -3\n  flag: false\nrows:\n- a: x\n  b:\n  - 1\n  - 2\n- [p, q r]\n"), text)
        let loaded = try XCTUnwrap(try Yams.load(yaml: text) as? [String: Any])
        XCTAssertEqual(loaded["texts"] as? [String], tricky)
        let nested = try XCTUnwrap(loaded["nested"] as? [String: Any])
        XCTAssertEqual((nested["empty"] as? [String: Any])?.count, 0)
        XCTAssertEqual((nested["none"] as? [Any])?.count, 0)
        XCTAssertEqual(nested["number"] as? Int, -3)
        XCTAssertEqual(nested["flag"] as? Bool, false)
        let rows = try XCTUnwrap(loaded["rows"] as? [Any])
        XCTAssertEqual((rows[0] as? [String: Any])?["b"] as? [Int], [1, 2])
        XCTAssertEqual(rows[1] as? [String], ["p", "q r"])
    }

    func testLiveValuesKeepTheirTypesAndTextThatLooksLikeANumberStaysText() {
        var status = ResourceStatus(id: ResourceID(kind: .listener, name: "web"), source: "web.yaml:1")
        status.createdAt = t0
        status.address = "127.0.0.1:8080"
        status.live = CanonicalFields(
            entries: [(path: "port", value: "8080"), (path: "http2", value: "true"), (path: "tags.build", value: "1234"),
                      (path: "description", value: "null")],
            scalarTypes: ["port": .integer, "http2": .boolean])
        let text = status.yaml()
        XCTAssertTrue(text.contains("  port: 8080\n"), text)
        XCTAssertTrue(text.contains("  http2: true\n"), text)
        XCTAssertTrue(text.contains("    build: \"1234\"\n"), text)
        XCTAssertTrue(text.contains("  description: \"null\"\n"), text)
        let parsed = ResourceStatus.parse(yaml: text)
        XCTAssertEqual(parsed, status)
        XCTAssertEqual(parsed?.live?.scalarTypes, ["port": .integer, "http2": .boolean])
        XCTAssertEqual(parsed?.yaml(), text, "a status file reads back to the same text")
    }

    func testConditionTimeMovesOnlyOnFlip() {
        var status = ResourceStatus(id: ResourceID(kind: .serverGroup, name: "g"), source: "")
        status.setCondition("Synced", true, reason: "Applied", message: "", now: t0)
        status.setCondition("Synced", true, reason: "Applied", message: "again", now: t0.addingTimeInterval(60))
        XCTAssertEqual(status.condition("Synced")?.lastTransitionTime, t0)
        status.setCondition("Synced", false, reason: "InvalidSpec", message: "x", now: t0.addingTimeInterval(90))
        XCTAssertEqual(status.condition("Synced")?.lastTransitionTime, t0.addingTimeInterval(90))
    }

    func testForeignFilesAreIgnored() {
        XCTAssertNil(ResourceStatus.parse(yaml: "just: text"))
        XCTAssertNil(ResourceStatus.parse(yaml: "kind: Nope\nname: x"))
        XCTAssertNil(ResourceStatus.parse(yaml: "{{{"))
    }

    func testStatusStoreSkipsIdenticalWritesAndWritesAtomically() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("alb-status-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = StatusStore(directory: folder.path)
        var status = ResourceStatus(id: ResourceID(kind: .listener, name: "web"), source: "a.yaml:1")
        XCTAssertTrue(try store.write(status))
        XCTAssertFalse(try store.write(status))
        status.generation = 2
        XCTAssertTrue(try store.write(status))
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("listeners").path)
        XCTAssertEqual(files, ["web.yaml"], "no temporary file is left behind")
        XCTAssertEqual(StatusStore(directory: folder.path).loadAll()[status.id]?.generation, 2)
        store.remove(status.id)
        XCTAssertTrue(StatusStore(directory: folder.path).loadAll().isEmpty)
    }

    /// A FIFO named like a status file is skipped, not read: opening it for reading blocked `alb status` (and a
    /// reconciler starting on the directory) until something wrote to it.
    func testLoadingStatusFilesSkipsWhatIsNotARegularFile() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("alb-status-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = StatusStore(directory: folder.path)
        let status = ResourceStatus(id: ResourceID(kind: .listener, name: "web"), source: "a.yaml:1")
        XCTAssertTrue(try store.write(status))
        XCTAssertEqual(mkfifo(folder.appendingPathComponent("listeners/pipe.yaml").path, 0o600), 0)
        XCTAssertEqual(Array(StatusStore(directory: folder.path).loadAll().keys), [status.id])
    }

    /// An invalid resource's name may be anything: its status file stays in its kind's folder whatever the name
    /// (a `../../victim` once overwrote, then deleted, a file outside the status directory), is found again by
    /// `loadAll`, and is removed from there.
    func testAStatusFileStaysInItsFolderWhateverTheName() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("alb-status-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let folder = root.appendingPathComponent("status")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let victim = root.appendingPathComponent("victim.yaml")
        try "important: data\n".write(to: victim, atomically: true, encoding: .utf8)
        let store = StatusStore(directory: folder.path)
        let names = ["../../victim", "../status/listeners/web", "..", ".", "", "a/b", ".hidden", ".x.tmp", "Web",
                     "caf\u{e9}", "%2E%2E", String(repeating: "x/", count: 200), String(repeating: "y", count: 300)]
        for name in names {
            XCTAssertTrue(try store.write(ResourceStatus(id: ResourceID(kind: .listener, name: name), source: "a.yaml:1")), name)
        }
        XCTAssertEqual(try String(contentsOf: victim, encoding: .utf8), "important: data\n")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("listeners").path)
        XCTAssertEqual(files.count, names.count, "one file each, none shared: \(files)")
        XCTAssertTrue(files.allSatisfy { !$0.hasPrefix(".") && $0.utf8.count < 255 && !$0.contains("/") }, "\(files)")
        XCTAssertEqual(Set(StatusStore(directory: folder.path).loadAll().keys.map(\.name)), Set(names))
        for name in names { store.remove(ResourceID(kind: .listener, name: name)) }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("listeners").path), [])
        XCTAssertTrue(FileManager.default.fileExists(atPath: victim.path))
        XCTAssertEqual(StatusStore.fileName(for: "web"), "web.yaml", "a valid name is the file's name (SPEC)")
    }

    func testCountersAloneAreTheStatsAndEachServersRequests() {
        var listener = ResourceStatus(id: ResourceID(kind: .listener, name: "web"), source: "a.yaml:1")
        listener.stats = ListenerStats()
        var counted = listener
        counted.stats = ListenerStats(activeConnections: 2, totalConnections: 5, totalRequests: 9, responses2xx: 9)
        XCTAssertTrue(counted.equalsApartFromCounters(listener))
        XCTAssertTrue(listener.equalsApartFromCounters(listener))
        var stopped = counted
        stopped.stats = nil  // stats that come or go are no counter change (a start, a shutdown)
        XCTAssertFalse(stopped.equalsApartFromCounters(listener))
        var moved = counted
        moved.address = "127.0.0.1:8081"
        XCTAssertFalse(moved.equalsApartFromCounters(listener))

        var group = ResourceStatus(id: ResourceID(kind: .serverGroup, name: "pool"), source: "a.yaml:5")
        group.servers = [.init(address: "10.0.0.1", port: 80, weight: 1, health: "Healthy"),
                         .init(address: "10.0.0.2", port: 80, weight: 1, health: "Healthy")]
        var busy = group
        busy.servers?[1].activeRequests = 1
        busy.servers?[1].requests = 7
        XCTAssertTrue(busy.equalsApartFromCounters(group))
        var unhealthy = busy
        unhealthy.servers?[0].health = "Unhealthy"
        XCTAssertFalse(unhealthy.equalsApartFromCounters(group))
        var fewer = group
        fewer.servers?.removeLast()
        XCTAssertFalse(fewer.equalsApartFromCounters(group))
    }

    func testAPassAnEditTriggeredLeavesCounterOnlyChangesToTheRefresh() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("alb-status-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = StatusStore(directory: folder.path)
        var status = ResourceStatus(id: ResourceID(kind: .listener, name: "web"), source: "a.yaml:1")
        status.stats = ListenerStats()
        // A status never written is written, counters or not.
        XCTAssertTrue(try store.write(status, counters: .keepWritten))
        status.stats?.totalRequests = 3
        XCTAssertFalse(try store.write(status, counters: .keepWritten))
        XCTAssertEqual(StatusStore(directory: folder.path).loadAll()[status.id]?.stats?.totalRequests, 0)
        // Any other change writes the whole status, with the counters it has now.
        status.generation = 2
        XCTAssertTrue(try store.write(status, counters: .keepWritten))
        XCTAssertEqual(StatusStore(directory: folder.path).loadAll()[status.id], status)
        // The refresh writes counters, and compares with what is on disk (not with what was skipped).
        status.stats?.totalRequests = 4
        XCTAssertFalse(try store.write(status, counters: .keepWritten))
        XCTAssertTrue(try store.write(status, counters: .refresh))
        XCTAssertEqual(StatusStore(directory: folder.path).loadAll()[status.id]?.stats?.totalRequests, 4)
        XCTAssertFalse(try store.write(status, counters: .refresh))
    }

    func testAFileWrittenAgainIsTheStatusAsItIsNowWithLiveRenderedOnce() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("alb-status-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = StatusStore(directory: folder.path)
        var status = ResourceStatus(id: ResourceID(kind: .listener, name: "web"), source: "a.yaml:1")
        status.live = CanonicalFields(entries: [(path: "port", value: "8080"), (path: "routes[0].path", value: "/")],
                                      scalarTypes: ["port": .integer])
        status.address = "127.0.0.1:8080"
        status.stats = ListenerStats()
        func onDisk() throws -> String {
            try String(contentsOfFile: store.path(for: status.id).string, encoding: .utf8)
        }
        XCTAssertTrue(try store.write(status))
        XCTAssertEqual(try onDisk(), status.yaml())
        status.stats?.totalRequests = 5
        XCTAssertTrue(try store.write(status))
        XCTAssertEqual(try onDisk(), status.yaml())
        status.live?.entries[0].value = "8081"
        XCTAssertTrue(try store.write(status))
        XCTAssertEqual(try onDisk(), status.yaml())
        XCTAssertTrue(try onDisk().contains("port: 8081"))
        status.live?.scalarTypes = [:]  // the same text, now a string
        status.stats?.totalRequests = 6
        XCTAssertTrue(try store.write(status))
        XCTAssertEqual(try onDisk(), status.yaml())
        XCTAssertTrue(try onDisk().contains("port: \"8081\""))
        status.address = "127.0.0.1:8081"
        XCTAssertTrue(try store.write(status))
        XCTAssertEqual(try onDisk(), status.yaml())
        status.live = nil
        XCTAssertTrue(try store.write(status))
        XCTAssertEqual(try onDisk(), status.yaml())
        let text = try onDisk()
        XCTAssertTrue(text.contains("live:\n  boundAddress: \"127.0.0.1:8081\"\n"), text)
    }

    func testSourceFileIsThePathBeforeTheLineNumber() {
        func file(_ source: String) -> String? {
            ResourceStatus(id: ResourceID(kind: .listener, name: "web"), source: source).sourceFile
        }
        XCTAssertEqual(file("manifests/web.yaml:12"), "manifests/web.yaml")
        XCTAssertEqual(file("odd:name.yaml:3"), "odd:name.yaml")
        XCTAssertNil(file(""))
        XCTAssertNil(file("web.yaml"))
        XCTAssertNil(file("web.yaml:"))
        XCTAssertNil(file(":12"))
        XCTAssertNil(file("web.yaml:1x"))
    }
}

import ALBManifest
import ALBReconciler
import XCTest

final class PlannerTests: XCTestCase {
    private func manifests(port: Int = 8080, idle: Int = 15, state: String = "Running",
                           address: String = "127.0.0.1") -> ManifestSet {
        ManifestLoader.load([ManifestFile(path: "web.yaml", contents: """
            apiVersion: alb/v1
            kind: LoadBalancer
            metadata: {name: lb}
            spec: {address: \(address)}
            ---
            apiVersion: alb/v1
            kind: ServerGroup
            metadata: {name: pool}
            spec: {servers: [{address: 127.0.0.1, port: 9001}]}
            ---
            apiVersion: alb/v1
            kind: Listener
            metadata: {name: web}
            spec:
              loadBalancer: lb
              protocol: HTTP
              port: \(port)
              state: \(state)
              idleTimeout: \(idle)
              defaultAction: {forwardGroup: {serverGroups: [{name: pool}]}}
            """)])
    }

    /// The status files a successful reconcile of `set` would leave.
    private func applied(_ set: ManifestSet, state: ListenerLifecycle.Phase = .running) -> [ResourceID: ResourceStatus] {
        let desired = DesiredState(resources: set.resources)
        var statuses: [ResourceID: ResourceStatus] = [:]
        for (id, resource) in set.resources {
            var status = ResourceStatus(id: id, source: "web.yaml:1")
            status.live = desired.canonical(resource)
            if id.kind == .listener { status.state = state }
            statuses[id] = status
        }
        return statuses
    }

    func testEverythingIsCreatedAgainstAnEmptyStatusDirectory() {
        let plan = Planner.plan(manifests: manifests(), statuses: [:])
        XCTAssertEqual(plan.lines, ["+ create LoadBalancer/lb", "+ create Listener/web", "+ create ServerGroup/pool"])
    }

    func testNothingToDoAfterAReconcile() {
        let set = manifests()
        XCTAssertEqual(set.diagnostics, [])
        XCTAssertFalse(Planner.plan(manifests: set, statuses: applied(set)).hasChanges)
    }

    func testInPlaceUpdateNamesTheField() {
        let plan = Planner.plan(manifests: manifests(idle: 30), statuses: applied(manifests()))
        XCTAssertEqual(plan.lines, ["~ update Listener/web", "    idleTimeout: 15 -> 30"])
    }

    func testPortChangeIsCreateBeforeDelete() {
        let plan = Planner.plan(manifests: manifests(port: 8081), statuses: applied(manifests()))
        XCTAssertEqual(plan.lines.first, "+/- replace Listener/web (port is immutable; create before delete)")
        XCTAssertTrue(plan.lines.contains("    port: 8080 -> 8081"))
    }

    func testAddressChangeOfTheInstanceReplacesItsListeners() {
        let plan = Planner.plan(manifests: manifests(address: "127.0.0.2"), statuses: applied(manifests()))
        XCTAssertTrue(plan.lines.contains("+/- replace Listener/web (bindAddress is immutable; create before delete)"),
                      plan.lines.joined(separator: "\n"))
    }

    func testStopAndStart() {
        XCTAssertEqual(Planner.plan(manifests: manifests(state: "Stopped"), statuses: applied(manifests())).lines,
                       [". stop Listener/web"])
        XCTAssertEqual(Planner.plan(manifests: manifests(), statuses: applied(manifests(), state: .failed)).lines,
                       ["> start Listener/web"])
    }

    func testDeletedResources() {
        var statuses = applied(manifests())
        var extra = ResourceStatus(id: ResourceID(kind: .listener, name: "old"), source: "old.yaml:1")
        extra.live = CanonicalFields(entries: [(path: "port", value: "9999")])
        statuses[extra.id] = extra
        XCTAssertEqual(Planner.plan(manifests: manifests(), statuses: statuses).lines, ["- delete Listener/old"])
    }
}

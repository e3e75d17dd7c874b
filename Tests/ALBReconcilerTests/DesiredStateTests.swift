import ALBDataPlane
import ALBManifest
import ALBReconciler
import XCTest

final class DesiredStateTests: XCTestCase {
    private func state(_ listenerSpec: String, protocol: String = "HTTP") -> (DesiredState, Resource?) {
        let set = ManifestLoader.load([ManifestFile(path: "m.yaml", contents: """
            apiVersion: alb/v1
            kind: LoadBalancer
            metadata: {name: lb}
            spec: {address: 127.0.0.2}
            ---
            apiVersion: alb/v1
            kind: ServerGroup
            metadata: {name: blue}
            spec: {servers: [{address: 127.0.0.1, port: 9001, weight: 30}, {address: 127.0.0.1, port: 9002, weight: 0}]}
            ---
            apiVersion: alb/v1
            kind: ServerGroup
            metadata: {name: green}
            spec: {servers: [{address: 127.0.0.1, port: 9011}]}
            ---
            apiVersion: alb/v1
            kind: Listener
            metadata: {name: web}
            spec:
              loadBalancer: lb
              protocol: \(`protocol`)
              port: 8080
            \(listenerSpec)
            """)])
        XCTAssertEqual(set.diagnostics.map(\.formatted), [])
        return (DesiredState(resources: set.resources), set.resources[ResourceID(kind: .listener, name: "web")])
    }

    func testListenerBecomesACompleteDataPlaneConfiguration() throws {
        let (desired, resource) = state("""
              idleTimeout: 30
              requestTimeout: 5
              headers: {xForwardedProto: true, slbId: true}
              clientIp: {enabled: true, trustedProxies: [10.0.0.0/8]}
              defaultAction: {forwardGroup: {serverGroups: [{name: blue, weight: 80}, {name: green, weight: 20}]}}
            """)
        let config = try desired.listenerConfig(try XCTUnwrap(resource)).get()
        XCTAssertEqual(config.name, "web")
        XCTAssertEqual(config.loadBalancerName, "lb")
        XCTAssertEqual(config.bindHost, "127.0.0.2")
        XCTAssertEqual(config.port, 8080)
        XCTAssertEqual(config.idleTimeout, .seconds(30))
        XCTAssertEqual(config.requestTimeout, .seconds(5))
        XCTAssertEqual(config.headers, HeaderOptions(xForwardedFor: true, xForwardedProto: true, slbId: true))
        XCTAssertEqual(config.clientIP, ClientIPOptions(trustedProxies: ["10.0.0.0/8"]))
        XCTAssertEqual(config.groups.map(\.name), ["blue", "green"])
        XCTAssertEqual(config.groups.map(\.weight), [80, 20])
        XCTAssertEqual(config.groups[0].servers.map(\.port), [9001, 9002])
        XCTAssertEqual(config.groups[0].servers.map(\.weight), [30, 0])
    }

    func testCanonicalFieldsCarryTheBindAddress() throws {
        let (desired, resource) = state("  defaultAction: {forwardGroup: {serverGroups: [{name: blue}]}}")
        XCTAssertEqual(desired.canonical(try XCTUnwrap(resource))["bindAddress"], "127.0.0.2")
    }
}

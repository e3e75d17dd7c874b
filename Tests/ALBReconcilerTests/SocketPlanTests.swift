import ALBReconciler
import XCTest

final class SocketPlanTests: XCTestCase {
    private typealias Target = SocketPlan.Target

    private func plan(_ current: [String: String], _ desired: [String: Target]) -> [SocketPlan.Step] {
        SocketPlan.make(current: current, desired: desired).steps
    }

    private func same(_ address: String) -> Target { Target(address: address, fresh: false) }
    private func fresh(_ address: String) -> Target { Target(address: address, fresh: true) }

    func testUnchangedListenersNeedNoSteps() {
        XCTAssertEqual(plan(["a": "lo:80", "b": "lo:81"], ["a": same("lo:80"), "b": same("lo:81")]), [])
    }

    func testStartBindsAndDeleteRetires() {
        XCTAssertEqual(plan(["old": "lo:80"], ["new": fresh("lo:81")]), [
            .bind(listener: "new", address: "lo:81"),
            .retire(listener: "old", keepIfBindFails: false),
        ])
    }

    func testPortMoveBindsBeforeItRetiresAndKeepsTheOldInstanceIfTheBindFails() {
        XCTAssertEqual(plan(["web": "lo:80"], ["web": fresh("lo:81")]), [
            .bind(listener: "web", address: "lo:81"),
            .retire(listener: "web", keepIfBindFails: true),
        ])
    }

    func testReplaceOnTheSameAddressHandsTheSocketToTheNewInstance() {
        XCTAssertEqual(plan(["web": "lo:80"], ["web": fresh("lo:80")]), [
            .handOver(address: "lo:80", from: "web", to: "web"),
            .retire(listener: "web", keepIfBindFails: false),
        ])
    }

    func testSwapHandsBothSocketsOverAndBindsNothing() {
        XCTAssertEqual(plan(["a": "lo:80", "b": "lo:81"], ["a": fresh("lo:81"), "b": fresh("lo:80")]), [
            .handOver(address: "lo:81", from: "b", to: "a"),
            .handOver(address: "lo:80", from: "a", to: "b"),
            .retire(listener: "a", keepIfBindFails: false),
            .retire(listener: "b", keepIfBindFails: false),
        ])
    }

    func testRotatingThreePortsHandsEverySocketOver() {
        let steps = plan(["a": "lo:80", "b": "lo:81", "c": "lo:82"],
                         ["a": fresh("lo:81"), "b": fresh("lo:82"), "c": fresh("lo:80")])
        XCTAssertEqual(steps, [
            .handOver(address: "lo:81", from: "b", to: "a"),
            .handOver(address: "lo:82", from: "c", to: "b"),
            .handOver(address: "lo:80", from: "a", to: "c"),
            .retire(listener: "a", keepIfBindFails: false),
            .retire(listener: "b", keepIfBindFails: false),
            .retire(listener: "c", keepIfBindFails: false),
        ])
        XCTAssertFalse(steps.contains { if case .bind = $0 { return true } else { return false } })
    }

    func testShiftingPortsBindsOnlyTheOneNewPortAfterTheHandOvers() {
        // A checkout that moves every listener one port up.
        XCTAssertEqual(plan(["a": "lo:80", "b": "lo:81"], ["a": fresh("lo:81"), "b": fresh("lo:82")]), [
            .handOver(address: "lo:81", from: "b", to: "a"),
            .bind(listener: "b", address: "lo:82"),
            .retire(listener: "a", keepIfBindFails: false),
            .retire(listener: "b", keepIfBindFails: false),
        ])
    }

    func testRenameOntoTheSamePortHandsTheSocketToTheNewName() {
        XCTAssertEqual(plan(["old": "lo:80"], ["new": fresh("lo:80")]), [
            .handOver(address: "lo:80", from: "old", to: "new"),
            .retire(listener: "old", keepIfBindFails: false),
        ])
    }

    func testRenameOntoASiblingsPortWhileTheSiblingMovesAway() {
        XCTAssertEqual(plan(["a": "lo:80", "sibling": "lo:81"],
                            ["renamed": fresh("lo:81"), "sibling": fresh("lo:82")]), [
            .handOver(address: "lo:81", from: "sibling", to: "renamed"),
            .bind(listener: "sibling", address: "lo:82"),
            .retire(listener: "a", keepIfBindFails: false),
            .retire(listener: "sibling", keepIfBindFails: false),
        ])
    }

    func testMovingBetweenFilesChangesNothing() {
        // The plan sees listeners by name and address only: which file defines them does not matter.
        XCTAssertEqual(plan(["web": "lo:80"], ["web": same("lo:80")]), [])
    }

    func testAnAddressKeptByItsListenerCannotBeTakenAndTheMoverStaysWhereItIs() {
        XCTAssertEqual(plan(["a": "lo:80", "b": "lo:81"], ["a": same("lo:80"), "b": fresh("lo:80")]), [
            .conflict(listener: "b", address: "lo:80", holder: "a"),
        ])
    }

    func testTwoNewListenersWantingOneAddressBindItOnce() {
        XCTAssertEqual(plan([:], ["a": fresh("lo:80"), "b": fresh("lo:80")]), [
            .bind(listener: "a", address: "lo:80"),
            .conflict(listener: "b", address: "lo:80", holder: "a"),
        ])
    }

    func testStoppingAListenerWhoseAddressAnotherTakesHandsItOver() {
        XCTAssertEqual(plan(["a": "lo:80"], ["b": fresh("lo:80")]), [
            .handOver(address: "lo:80", from: "a", to: "b"),
            .retire(listener: "a", keepIfBindFails: false),
        ])
    }
}

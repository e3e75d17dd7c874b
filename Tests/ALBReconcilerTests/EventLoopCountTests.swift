import XCTest

@testable import ALBReconciler

final class EventLoopCountTests: XCTestCase {
    func testTheAffinityMaskIsCountedFromProcStatus() {
        XCTAssertEqual(EventLoopCount.cpus(inStatus: "Name:\talb\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n"), 2)
        XCTAssertEqual(EventLoopCount.cpus(inStatus: "Cpus_allowed:\t1\n"), 1, "taskset -c 0")
        XCTAssertEqual(EventLoopCount.cpus(inStatus: "Cpus_allowed:\tffffffff,ffffffff,00000000,000000f0\n"), 68)
        XCTAssertNil(EventLoopCount.cpus(inStatus: "Name:\talb\n"))
        XCTAssertNil(EventLoopCount.cpus(inStatus: "Cpus_allowed:\t0\n"))
        XCTAssertNil(EventLoopCount.cpus(inStatus: "Cpus_allowed:\tzz\n"))
        XCTAssertGreaterThanOrEqual(EventLoopCount.available, 1)
    }
}

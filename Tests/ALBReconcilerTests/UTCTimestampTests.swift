import Foundation
import XCTest

@testable import ALBReconciler

final class UTCTimestampTests: XCTestCase {
    /// The stamps are the text Foundation's default ISO 8601 style writes, which status files, events and logs
    /// carried before: calendar edges, leap days, moments before 1970, fractions of a second, and a spread of
    /// moments from 1900 to 2200.
    func testStampsAreFoundationsISO8601Text() {
        var moments: [TimeInterval] = [
            0, -1, -0.25, 0.999, 59.5, 86_399.999, 86_400,
            951_782_400, 951_868_799, 951_868_800,  // 2000-02-29 and the day after
            4_107_456_000, 4_107_542_400,  // 2100-02-28, 2100-03-01: no leap day
            1_795_910_023.75,  // 2026-11-28T23:53:43Z
            -2_208_988_800,  // 1900-01-01
            253_402_300_799,  // 9999-12-31T23:59:59Z
        ]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            moments.append(Double(Int64.random(in: -2_208_988_800...7_258_118_400, using: &generator))
                               + Double.random(in: 0..<1, using: &generator))
        }
        for moment in moments {
            let date = Date(timeIntervalSince1970: moment)
            XCTAssertEqual(UTCTimestamp.text(date), date.formatted(.iso8601), "\(moment)")
        }
        XCTAssertEqual(UTCTimestamp.text(Date(timeIntervalSince1970: 1_795_910_023.75)), "2026-11-28T23:53:43Z")
    }

    /// Outside the years 0 to 9999 the four digits would not hold the year: Foundation writes those.
    func testYearsBeyondFourDigitsAreFoundations() {
        let late = Date(timeIntervalSince1970: 253_402_300_800)  // 10000-01-01
        XCTAssertEqual(UTCTimestamp.text(late), late.formatted(.iso8601))
    }

    /// Status files read their stamps back through Foundation's parser.
    func testStampsReadBack() {
        let date = Date(timeIntervalSince1970: 1_795_910_023)
        XCTAssertEqual(ResourceStatus.parseTimestamp(ResourceStatus.timestamp(date)), date)
    }
}

import Foundation

/// A moment as RFC 3339 text in UTC with whole seconds, `2026-11-29T00:13:43Z`: the text Foundation's
/// `Date.ISO8601FormatStyle` writes by default, made by arithmetic instead.
///
/// Every status file, event and log line carries such stamps. Through the format style the first one set up
/// a Gregorian calendar and looked up the machine's time zone on the way to the first listener binding (2.7%
/// of the samples of the thread that ran a cold start's first pass, `perf`), and every one after that went
/// through the calendar again. Reading stamps back (``ResourceStatus/parseTimestamp(_:)``) still uses
/// Foundation.
enum UTCTimestamp {
    /// `date` truncated to the second, as `yyyy-MM-ddTHH:mm:ssZ`; years outside 0...9999 as Foundation
    /// writes them.
    static func text(_ date: Date) -> String {
        let interval = date.timeIntervalSince1970
        // 0000-01-01 and 10000-01-01, in seconds from 1970.
        guard interval >= -62_167_219_200, interval < 253_402_300_800 else { return date.formatted(.iso8601) }
        let seconds = Int64(interval.rounded(.down))
        var days = seconds / 86_400
        var secondOfDay = seconds % 86_400
        if secondOfDay < 0 {
            days -= 1
            secondOfDay += 86_400
        }
        let (year, month, day) = civil(daysSince1970: days)
        return String(unsafeUninitializedCapacity: 20) { text in
            func put(_ value: Int64, digits: Int, at offset: Int) {
                var rest = value
                for index in stride(from: offset + digits - 1, through: offset, by: -1) {
                    text[index] = UInt8(ascii: "0") + UInt8(rest % 10)
                    rest /= 10
                }
            }
            put(year, digits: 4, at: 0)
            text[4] = UInt8(ascii: "-")
            put(month, digits: 2, at: 5)
            text[7] = UInt8(ascii: "-")
            put(day, digits: 2, at: 8)
            text[10] = UInt8(ascii: "T")
            put(secondOfDay / 3600, digits: 2, at: 11)
            text[13] = UInt8(ascii: ":")
            put(secondOfDay / 60 % 60, digits: 2, at: 14)
            text[16] = UInt8(ascii: ":")
            put(secondOfDay % 60, digits: 2, at: 17)
            text[19] = UInt8(ascii: "Z")
            return 20
        }
    }

    /// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`, which counts
    /// in 400-year eras starting on March 1st so that the leap day ends a year).
    static func civil(daysSince1970 days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let shifted = days + 719_468  // days since 0000-03-01
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153  // 0 is March
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}

import ALBManifest
import ALBReconciler
import ArgumentParser
import Foundation

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show every resource: kind, name, state, ready, address, age, last error.")

    enum OutputFormat: String, ExpressibleByArgument, CaseIterable { case table, yaml, json }

    @OptionGroup var status: StatusDirectoryOptions

    @Option(name: .shortAndLong, help: "table, yaml or json.")
    var output: OutputFormat = .table

    func run() throws {
        try status.checkForReading()
        let store = StatusStore(directory: status.statusDirectory)
        let statuses = store.loadAll().values.sorted { $0.id < $1.id }
        if !statuses.isEmpty && !StatusDirectoryLock.isOwned(directory: status.statusDirectory) {
            printError("note: no reconciler is running on \(status.statusDirectory); this is the state it left")
        }
        switch output {
        case .yaml:
            // One document: the list of every status, each as complete as its status file.
            print(ResourceStatus.yaml(of: statuses), terminator: "")
        case .json:
            print(String(decoding: ResourceStatus.json(of: statuses), as: UTF8.self))
        case .table:
            let header = ["KIND", "NAME", "STATE", "READY", "ADDRESS", "AGE", "LAST TRANSITION", "LAST ERROR"]
            let now = Date()
            printTable([header] + statuses.map { row($0, now: now) })
        }
    }

    /// One table row. AGE is how long the resource has existed (as kubectl shows it); LAST TRANSITION
    /// is how long ago its state or a condition last changed.
    private func row(_ status: ResourceStatus, now: Date) -> [String] {
        let ready = status.condition("Ready") ?? status.condition("Synced")
        let lastChange = (status.conditions.map(\.lastTransitionTime) + status.transitions.map(\.at)).max()
        let created = status.createdAt ?? (status.conditions.map(\.lastTransitionTime) + status.transitions.map(\.at)).min()
        let failing = status.conditions.first { !$0.status && $0.type != "Ready" }
        return [
            status.id.kind.rawValue, status.id.name,
            status.state?.rawValue ?? (status.condition("Synced")?.status == true ? "Active" : "Pending"),
            ready.map { $0.status ? "True" : "False" } ?? "-",
            status.address ?? "-",
            created.map { Self.age(now.timeIntervalSince($0)) } ?? "-",
            lastChange.map { Self.age(now.timeIntervalSince($0)) + " ago" } ?? "-",
            status.lastAttempt?.error ?? failing?.message ?? "",
        ]
    }

    static func age(_ seconds: TimeInterval) -> String {
        let value = max(0, Int(seconds))
        if value < 120 { return "\(value)s" }
        if value < 7200 { return "\(value / 60)m" }
        if value < 172_800 { return "\(value / 3600)h" }
        return "\(value / 86400)d"
    }

    private func printTable(_ rows: [[String]]) {
        guard let columns = rows.first?.count else { return }
        let widths = (0..<columns).map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            let cells = row.enumerated().map { index, cell in
                index == columns - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }
            print(cells.joined(separator: "  "))
        }
    }
}

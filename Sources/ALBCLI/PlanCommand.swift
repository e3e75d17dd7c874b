import ALBManifest
import ALBReconciler
import ArgumentParser

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show what reconcile would change against the live state recorded in the status files.",
        discussion: """
            + create, ~ update (field: old -> new), -/+ replace (delete before create) or +/- replace \
            (create before delete) naming the immutable field, - delete, > start, . stop. \
            Exit 0 when nothing would change, 2 when something would, 1 on invalid manifests.
            """)

    @Argument(help: "Manifest directory.")
    var directory = "manifests"

    @OptionGroup var status: StatusDirectoryOptions

    func run() throws {
        let manifestDirectory = ManifestDirectory(root: directory)
        try requireManifestDirectory(manifestDirectory)
        let (files, _) = manifestDirectory.read()
        let manifests = ManifestLoader.load(files)
        for diagnostic in manifests.diagnostics { printError(diagnostic.formatted) }
        let statuses = StatusStore(directory: status.statusDirectory).loadAll()
        let plan = Planner.plan(manifests: manifests, statuses: statuses)
        plan.lines.forEach { print($0) }
        if !manifests.diagnostics.isEmpty { throw ExitCode(1) }
        if plan.hasChanges { throw ExitCode(2) }
        print("No changes: the live state matches the manifests.")
    }
}

import ALBManifest
import ALBReconciler
import ArgumentParser
import Foundation

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show what reconcile would change against the live state recorded in the status files.",
        discussion: """
            + create, ~ update (field: old -> new), -/+ replace (delete before create) or +/- replace \
            (create before delete) naming the immutable field, - delete, > start, . stop. \
            Exit 0 when nothing would change, 2 when something would, 1 on invalid manifests (the same \
            errors `alb validate` reports, certificate files included) or a status directory that is no \
            directory. A status directory no reconciler wrote is an empty live state (a note says so).
            """)

    @Argument(help: "Manifest directory.")
    var directory = "manifests"

    @OptionGroup var status: StatusDirectoryOptions

    func run() throws {
        let manifestDirectory = ManifestDirectory(root: directory)
        try requireManifestDirectory(manifestDirectory)
        // A status directory that is a file is an error; one that does not exist (or that no reconciler ever
        // wrote) is an empty live state, said so: a typo must not read as "create everything" unremarked.
        try status.checkForWriting(manifestDirectory: directory)
        let (files, _) = manifestDirectory.read()
        let manifests = ManifestLoader.load(files)
        // The same errors `alb validate` finds, certificate files included: reconcile refuses what they refuse.
        let tls = TLSFindings.check(manifests)
        for diagnostic in manifests.diagnostics { printError(diagnostic.formatted) }
        tls.errors.forEach { printError($0) }
        let statuses = StatusStore(directory: status.statusDirectory).loadAll()
        if access(FilePaths.child(".lock", of: status.statusDirectory), F_OK) != 0 {
            printError("note: \(status.statusDirectory) holds no live state (`alb reconcile --status-dir "
                       + "\(status.statusDirectory)` has never run there): planning against nothing")
        } else if !statuses.isEmpty && !StatusDirectoryLock.isOwned(directory: status.statusDirectory) {
            printError("note: no reconciler is running on \(status.statusDirectory); planning against the state it left, "
                       + "which is not serving")
        }
        let plan = Planner.plan(manifests: manifests, statuses: statuses)
        plan.lines.forEach { print($0) }
        if !manifests.diagnostics.isEmpty || !tls.errors.isEmpty { throw ExitCode(1) }
        if plan.hasChanges { throw ExitCode(2) }
        print("No changes: the live state matches the manifests.")
    }
}

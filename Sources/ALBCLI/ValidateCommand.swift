import ALBManifest
import ALBReconciler
import ArgumentParser

struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Decode and validate every manifest exactly as reconcile would; bind nothing.",
        discussion: "Prints each problem as FILE:LINE:COL: error: MESSAGE and exits 1 if there is any.")

    @Argument(help: "Manifest directory.")
    var directory = "manifests"

    func run() throws {
        let manifestDirectory = ManifestDirectory(root: directory)
        try requireManifestDirectory(manifestDirectory)
        let (files, _) = manifestDirectory.read()
        let manifests = ManifestLoader.load(files)
        let tls = TLSFindings.check(manifests)
        for diagnostic in manifests.diagnostics { print(diagnostic.formatted) }
        tls.errors.forEach { print($0) }
        tls.warnings.forEach { print($0) }
        if !manifests.diagnostics.isEmpty || !tls.errors.isEmpty {
            let count = manifests.diagnostics.count + tls.errors.count
            printError("\(count) error\(count == 1 ? "" : "s") in \(directory)")
            throw ExitCode(1)
        }
        print("\(manifests.resources.count) resource\(manifests.resources.count == 1 ? "" : "s") in \(files.count) file\(files.count == 1 ? "" : "s"): valid")
    }
}

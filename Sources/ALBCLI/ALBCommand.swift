import ALBReconciler
import ArgumentParser
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `alb`: the root of the command tree. Wiring only; the work lives in ALBReconciler and ALBManifest.
public struct ALBCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "alb",
        abstract: "Albatross: a declarative L7 load balancer driven by YAML manifests.",
        discussion: """
            Write LoadBalancer, Listener, ServerGroup, Certificate and SecurityPolicy manifests in a directory, \
            check them with `alb validate`, preview with `alb plan`, serve them with `alb reconcile --watch`, \
            and read what is serving with `alb status`. `alb schema` prints a JSON Schema of the manifests for editors.
            """,
        version: AlbatrossVersion.current,
        subcommands: [ReconcileCommand.self, ValidateCommand.self, PlanCommand.self, StatusCommand.self,
                      SchemaCommand.self])

    public init() {}
}

/// Options shared by the verbs that read status files.
struct StatusDirectoryOptions: ParsableArguments {
    @Option(name: .customLong("status-dir"), help: "Directory of status files (must be outside the manifest tree).")
    var statusDirectory = "status"

    /// For `alb reconcile`: the directory may not exist yet (it is created), but must not be a file and
    /// must lie outside the manifest tree, compared by real path so a symbolic link cannot hide it.
    /// Prints `STATUS: error: MESSAGE` and exits 1 otherwise, before anything starts.
    func checkForWriting(manifestDirectory: String) throws {
        if let problem = Self.problem(statusDirectory, mayBeMissing: true) {
            try Self.fail("\(statusDirectory): error: \(problem)")
        }
        if FilePaths.isInside(statusDirectory, manifestDirectory) {
            try Self.fail("\(statusDirectory): error: the status directory \(statusDirectory) must be outside "
                              + "the manifest directory \(manifestDirectory)")
        }
    }

    /// For `alb status`: the directory must be one that `alb reconcile` wrote (it holds `.lock`), so a
    /// typo or the manifest directory is an error rather than an empty table that reads "nothing running".
    func checkForReading() throws {
        if let problem = Self.problem(statusDirectory, mayBeMissing: false) {
            try Self.fail("\(statusDirectory): error: \(problem)")
        }
        let marker = FilePaths.child(".lock", of: statusDirectory)
        if access(marker, F_OK) != 0 {
            try Self.fail("\(statusDirectory): error: not a status directory (no .lock: `alb reconcile "
                              + "--status-dir \(statusDirectory)` has never run here)")
        }
    }

    private static func problem(_ path: String, mayBeMissing: Bool) -> String? {
        switch ManifestDirectory(root: path).rootState() {
        case .directory: nil
        case .missing: mayBeMissing ? nil : "no such directory"
        case .unusable(let message): message
        }
    }

    private static func fail(_ message: String) throws -> Never {
        printError(message)
        throw ExitCode(1)
    }
}

/// The verbs agree on a manifest directory that is missing or no directory: `DIR: error: MESSAGE` on
/// standard error and exit 1 (`reconcile --watch` waits for it instead).
func requireManifestDirectory(_ directory: ManifestDirectory) throws {
    if let problem = directory.rootState().problem {
        printError("\(directory.root): error: \(problem)")
        throw ExitCode(1)
    }
}

extension ALBCommand {
    /// Parses the process arguments and runs the chosen verb, awaiting async ones.
    ///
    /// Spelled out because from a plain `main.swift` Swift resolves `ALBCommand.main()` to
    /// ParsableCommand's synchronous overload, which refuses async subcommands on Linux.
    public static func runAsRoot() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            // SPEC's exit codes are 0, 1 (invalid input or failure) and 2 (plan has changes): a usage error,
            // which ArgumentParser ends with EX_USAGE (64), is invalid input. The message and usage stay.
            guard exitCode(for: error).rawValue == 64 else { exit(withError: error) }
            printError(fullMessage(for: error))
            exit(withError: ExitCode(1))
        }
    }
}

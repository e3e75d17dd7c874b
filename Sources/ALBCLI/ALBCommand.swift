import ArgumentParser

/// `alb`: the root of the command tree. Wiring only; the work lives in ALBReconciler and ALBManifest.
public struct ALBCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "alb",
        abstract: "Albatross: a declarative L7 load balancer driven by YAML manifests.",
        discussion: """
            Write LoadBalancer, Listener, ServerGroup, Certificate and SecurityPolicy manifests in a directory, \
            check them with `alb validate`, preview with `alb plan`, serve them with `alb reconcile --watch`, \
            and read what is serving with `alb status`.
            """,
        subcommands: [ReconcileCommand.self, ValidateCommand.self, PlanCommand.self, StatusCommand.self])

    public init() {}
}

/// Options shared by the verbs that read status files.
struct StatusDirectoryOptions: ParsableArguments {
    @Option(name: .customLong("status-dir"), help: "Directory of status files (must be outside the manifest tree).")
    var statusDirectory = "status"
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
            exit(withError: error)
        }
    }
}

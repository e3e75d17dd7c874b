/// The release this binary is: what `alb --version` prints and the reconciler's start line logs, so an
/// operator can tell which build answered, and `alb_build_info` exports (docs/operations.md, "Versions").
public enum AlbatrossVersion {
    public static let current = "0.1.0"
}

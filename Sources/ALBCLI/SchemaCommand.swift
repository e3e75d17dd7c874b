import ALBManifest
import ArgumentParser

extension ResourceKind: ExpressibleByArgument {}

struct SchemaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schema",
        abstract: "Print the JSON Schema (draft 2020-12) of manifest documents, for editors and CI.",
        discussion: """
            The schema is generated from the field tables the decoder checks manifests against (names, types, \
            enumerations, ranges, required fields, defaults, descriptions), so it accepts what `alb validate` \
            accepts field by field. It cannot check what spans documents or files (references between \
            resources, quotas across listeners, certificate files): `alb validate` still does.

            Without --kind, one schema covers every kind, discriminated by `kind`. Save it and point \
            yaml-language-server at it, per file:
              alb schema > alb.schema.json
              # yaml-language-server: $schema=./alb.schema.json
            or for a folder in the editor's settings ("yaml.schemas": {"./alb.schema.json": "manifests/**/*.yaml"}).
            """)

    @Option(name: .shortAndLong,
            help: ArgumentHelp("Print the schema of one kind only (its `kind` must be that one).",
                               valueName: "kind"))
    var kind: ResourceKind?

    func run() throws {
        let schema = ManifestSchema.document(kinds: kind.map { [$0] } ?? ResourceKind.allCases)
        print(schema.rendered, terminator: "")
    }
}

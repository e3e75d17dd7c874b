import Foundation

/// Runs a fuzz target's check over the files (or the files in the directories) named on the command
/// line, without libFuzzer or sanitizers: reproduces a crasher under a debugger or replays a corpus.
public func replayInputs(_ check: (UnsafeRawBufferPointer) -> Void) {
    let arguments = CommandLine.arguments.dropFirst()
    if arguments.isEmpty {
        print("usage: \(CommandLine.arguments.first ?? "fuzz-target") FILE_OR_DIRECTORY...")
        exit(2)
    }
    var inputs = 0
    for argument in arguments {
        for path in inputFiles(argument) {
            guard let data = FileManager.default.contents(atPath: path) else {
                print("\(path): error: cannot read")
                exit(1)
            }
            data.withUnsafeBytes { check($0) }
            inputs += 1
        }
    }
    print("replayed \(inputs) inputs")
}

private func inputFiles(_ path: String) -> [String] {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue,
          let names = try? FileManager.default.contentsOfDirectory(atPath: path)
    else { return [path] }
    return names.sorted().map { "\(path)/\($0)" }
}

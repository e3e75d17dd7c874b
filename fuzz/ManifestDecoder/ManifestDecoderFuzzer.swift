import ALBManifest

/// One fuzz input: the bytes as one manifest file, decoded and validated. A crash, a trap or a run over
/// libFuzzer's `-timeout` is the finding; diagnostics are the expected outcome for almost every input.
func checkManifest(_ bytes: UnsafeRawBufferPointer) {
    let file = ManifestFile(path: "fuzz.yaml", contents: String(decoding: bytes, as: UTF8.self))
    let set = ManifestLoader.load([file])
    // Every resource the loader accepts or refuses names the file it came from; a diagnostic pointing at
    // another file would send a user to the wrong place.
    for diagnostic in set.diagnostics where diagnostic.location.file != file.path {
        fatalError("diagnostic for an unknown file: \(diagnostic)")
    }
}

#if ALB_LIBFUZZER
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    checkManifest(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}
#else
import FuzzReplay

@main
enum ManifestDecoderReplay {
    static func main() { replayInputs(checkManifest) }
}
#endif

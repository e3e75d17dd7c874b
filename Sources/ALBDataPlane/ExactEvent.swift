/// `event` as a `T` when its type is exactly `T`, else nil: a compare of type metadata first, so the events that are
/// something else cost no dynamic cast. nio-http2 fires several user events a stream (created, window updates,
/// closed) through every handler after it, and each `as?` that failed cost a run-time cast of a few hundred
/// instructions (callgrind: about 3,000 a proxied HTTP/2 request). For structs and final classes only, which have
/// no subtypes the compare would miss.
///
/// A match is taken out of the existential without a cast too: passing `event` to a generic function opens it
/// (SE-0352), and a value whose type is `T` is reinterpreted as one. `as?` cost about 250 instructions for a
/// match (callgrind), two a stream in the connection manager.
@inline(__always)
func exactly<T>(_ event: Any, _: T.Type) -> T? {
    func opened<Actual>(_ value: Actual) -> T? {
        Actual.self == T.self ? unsafeBitCast(value, to: T.self) : nil
    }
    return opened(event)
}

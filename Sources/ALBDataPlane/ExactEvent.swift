/// `event` as a `T` when its type is exactly `T`, else nil: a compare of type metadata first, so the events that are
/// something else cost no dynamic cast. nio-http2 fires several user events a stream (created, window updates,
/// closed) through every handler after it, and each `as?` that failed cost a run-time cast of a few hundred
/// instructions (callgrind: about 3,000 a proxied HTTP/2 request). For structs and final classes only, which have
/// no subtypes the compare would miss.
@inline(__always)
func exactly<T>(_ event: Any, _: T.Type) -> T? {
    type(of: event) == T.self ? event as? T : nil
}

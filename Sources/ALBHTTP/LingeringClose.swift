import NIOCore

extension ChannelHandlerContext {
    /// Closes the way nginx's `lingering_close` does: shut the output down once the response is written,
    /// keep reading (and discarding) until the client closes or `linger` passes, then close.
    ///
    /// Closing at once with request bytes still unread makes the kernel answer with a reset, and the
    /// client may lose the error response it has not read yet. Closes at once where the channel cannot
    /// half-close. The caller must keep reads flowing and drop what arrives.
    public func closeLingering(after linger: TimeAmount = .seconds(2)) {
        let context = self
        let outputClosed = context.eventLoop.makePromise(of: Void.self)
        context.close(mode: .output, promise: outputClosed)
        outputClosed.futureResult.assumeIsolated().whenComplete { result in
            switch result {
            case .success:
                context.eventLoop.assumeIsolated().scheduleTask(in: linger) {
                    context.close(promise: nil)
                }
            case .failure:
                context.close(promise: nil)
            }
        }
    }
}

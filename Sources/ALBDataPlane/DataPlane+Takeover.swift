import NIOCore

/// What the data plane does in a takeover (docs/takeover.md): the old process exports copies of its
/// listening sockets, stops accepting and drains; the new one serves the copies instead of binding.
extension DataPlane {
    /// Listeners started from now on bind (or take an inherited socket) but accept nothing until
    /// ``startAccepting()``: while a takeover is confirmed the previous process still accepts on the same
    /// sockets, and exactly one process accepts at any time. Connections that arrive in between wait in
    /// the kernel's accept queue. (Two NIO processes accepting from one socket also trip an assertion in
    /// NIO debug builds: the one that loses the race for a connection reads nothing.)
    public func holdAccepting() {
        self.acceptingHeld.withLockedValue { $0 = true }
    }

    /// Every listening socket accepts (again), and listeners started from now on accept at once; but not the
    /// QUIC sockets of a predecessor that still drains on them (``readInheritedDatagramSockets()``).
    public func startAccepting() async {
        self.acceptingHeld.withLockedValue { $0 = false }
        let waiting = self.datagramSocketsOfPredecessor.withLockedValue { $0.map(ObjectIdentifier.init) }
        let sockets = self.listeners.withLockedValue { $0.values.compactMap(\.listeningSocket) }
        for socket in sockets where !waiting.contains(ObjectIdentifier(socket)) {
            await socket.startAccepting()
        }
    }

    /// Whether QUIC sockets passed on by a previous process wait for it to exit.
    public var hasDatagramSocketsOfPredecessor: Bool {
        self.datagramSocketsOfPredecessor.withLockedValue { !$0.isEmpty }
    }

    /// The previous process has exited: this one reads the QUIC sockets it passed on. Until now every datagram
    /// on them went to the previous process, which kept reading its copy while its HTTP/3 connections drained
    /// (a UDP socket has one receive queue, and datagrams read by the wrong process would end those
    /// connections); new clients' Initials it dropped, as a draining QUIC listener does.
    public func readInheritedDatagramSockets() async {
        let sockets = self.datagramSocketsOfPredecessor.withLockedValue { sockets in
            defer { sockets = [] }
            return sockets
        }
        for socket in sockets {
            await socket.startAccepting()
        }
    }

    /// Sockets passed on by a previous process. Each ``start(_:)`` looks here before it binds; what no
    /// start claims is closed by ``releaseUnclaimedInheritedSockets()``.
    public func inherit(_ sockets: [TransferableSocket]) {
        self.inherited.withLockedValue { $0 = InheritedSockets(sockets) }
    }

    /// Whether a start of `listener` on `address` ("host:port" as configured) would serve an inherited socket.
    public func hasInheritedSocket(address: String, listener: String) -> Bool {
        self.inherited.withLockedValue { inherited in
            var copy = inherited
            return copy.claim(address: address, listener: listener) != nil
        }
    }

    /// Closes the inherited sockets that no listener claimed (their addresses are served by nobody now)
    /// and returns them, closed, for the log.
    public func releaseUnclaimedInheritedSockets() -> [TransferableSocket] {
        let unclaimed = self.inherited.withLockedValue { $0.removeAll() }
        for socket in unclaimed {
            socket.descriptor.close()
        }
        return unclaimed
    }

    /// A copy of every serving listener's socket, for a successor process. These stay open and keep
    /// accepting here until ``stopAccepting()``. QUIC listeners' UDP sockets are included when the successor
    /// takes them (`datagrams`); this process keeps reading those until it exits.
    public func exportListeningSockets(includingDatagrams datagrams: Bool = false) async -> [TransferableSocket] {
        let serving = self.listeners.withLockedValue { Array($0.values) }.sorted { $0.name < $1.name }
        var exported: [TransferableSocket] = []
        for runtime in serving {
            guard let socket = runtime.listeningSocket, datagrams || !socket.datagram,
                  let descriptor = try? await socket.duplicateDescriptor() else {
                continue
            }
            exported.append(TransferableSocket(listener: runtime.name, address: socket.address,
                                               boundAddress: Self.describe(runtime.boundAddress, fallback: runtime.config),
                                               datagram: socket.datagram, descriptor: descriptor))
        }
        return exported
    }

    /// Stops accepting on every listening socket without closing it: the kernel's accept queue is shared
    /// with the process holding the copies, which accepts everything from now on. Returns once every
    /// connection accepted before has reached its listener instance.
    ///
    /// Not `close`: NIO closes a connection that it accepted but had not finished setting up when its
    /// listening channel closes, so closing under load would drop a connection now and then.
    ///
    /// QUIC sockets keep being read: their connections are this process's and drain here, and the successor
    /// reads a passed copy only after this process has exited.
    public func stopAccepting() async {
        let sockets = self.listeners.withLockedValue { $0.values.compactMap(\.listeningSocket) }
        for socket in sockets where !socket.datagram {
            await socket.stopAccepting()
        }
        // A connection accepted before reading stopped is set up by a task already queued on its event
        // loop; one round trip through every loop (twice, for the hop back) lets those run first.
        for _ in 0..<2 {
            for loop in self.group.makeIterator() {
                try? await loop.submit {}.get()
            }
        }
    }

    /// Retires everything once a successor process serves the sockets: stops accepting (if not done yet),
    /// gives each keep-alive connection one more request answered with `Connection: close`
    /// (``LastRequestGate``, at most `lastRequestWindow`), waits for connections to finish up to
    /// ``drainTimeout``, then closes everything, sockets last. Like ``shutdown(drainTimeout:)``, but
    /// nothing refuses a connection: the successor accepts them all.
    public func drainAfterHandOff(lastRequestWindow: TimeAmount) async {
        await self.stopAccepting()
        let serving = self.listeners.withLockedValue { listeners in
            let all = Array(listeners.values)
            listeners.removeAll()
            return all
        }
        let window = min(lastRequestWindow, self.drainTimeout)
        for runtime in serving {
            await runtime.resumeParked()
            for channel in runtime.openConnections {
                LastRequestGate.install(on: channel, window: window)
            }
            runtime.drainQUICConnections()
        }
        let runtimes = serving + self.draining.withLockedValue { Array($0.values) }
        await Self.waitForConnections(of: runtimes, until: NIODeadline.now() + self.drainTimeout)
        for runtime in runtimes {
            await runtime.closeEverything()
        }
        await self.parking?.stop()
        self.accessLog?.flush()
    }
}

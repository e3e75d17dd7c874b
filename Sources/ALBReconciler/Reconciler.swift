import ALBDataPlane
import ALBManifest
import Foundation
import Logging

/// Level-triggered reconciler: each `pass` reads the whole manifest tree, computes what should serve,
/// compares it with what serves, acts on the data plane, and writes status.
///
/// It is an actor only so that passes never overlap; nothing on the request path touches it.
public actor Reconciler {
    /// One listener the data plane knows about (or should).
    struct LiveListener {
        var lifecycle: ListenerLifecycle
        /// The configuration bound right now; nil when not bound.
        var serving: ListenerConfig?
        /// Data-plane key of the bound instance (a replacement binds a new one before the old goes).
        var key: String
        /// Canonical fields of the spec last applied.
        var live: CanonicalFields?
        var address: String = ""
        /// Failed moves to a new address while the old instance kept serving, and when to try again.
        var moveFailures = 0
        var moveRetryAt: Date?
    }

    /// What one listener does in a pass.
    enum ListenerIntent {
        /// The serving instance (if any) stays; a changed mutable field is applied in place.
        case keep(ListenerConfig)
        /// The configuration cannot be built (a missing reference): nothing changes.
        case configFailed(ConfigurationError)
        /// A new instance should serve (the lifecycle entered Configuring).
        case start(ListenerConfig)
        /// An immutable field changed: a new instance replaces the serving one.
        case replace(ListenerConfig, immutable: [String])
        /// The serving instance closes (the lifecycle entered Configuring towards Stopped).
        case stop
        /// Nothing before the date (a retry backoff).
        case wait(Date)
        /// Not serving and not meant to.
        case idle
    }

    /// What the socket plan did for a listener that wanted a new instance.
    enum SocketOutcome {
        case bound(ListenerConfig, address: String, handedOver: Bool)
        case failed(String)
    }

    public struct PassResult: Sendable {
        /// When the reconciler wants another pass even if nothing changes (retries, deferred pruning).
        public var nextPass: Date?
    }

    let directory: ManifestDirectory
    let store: StatusStore
    let dataPlane: DataPlane
    let log: Logger
    let emptyTreeGrace: TimeInterval

    var statuses: [ResourceID: ResourceStatus]
    var lastGood: [ResourceID: Resource] = [:]
    var lastGoodFiles: [String: Set<ResourceID>] = [:]
    /// Problems already logged, by resource (step 3 of a pass) and by file (``reportFileProblems(_:)``).
    private var reportedProblems: [ResourceID: String] = [:]
    private var reportedFileProblems: [String: String] = [:]
    var listeners: [String: LiveListener] = [:]
    var emptyTreeSeenAt: Date?
    /// When each resource whose document vanished was first missed (see ``keepVanishedResources``).
    var missingSince: [ResourceID: Date] = [:]
    var manifestCache = ManifestCache()
    private var warnedOfRSAKeysWithoutOpenSSL = false
    var keySerial = 0
    /// Each server group's servers as last applied, for its status (with their health).
    var groupServers: [String: [ALBDataPlane.BackendServer]] = [:]
    /// Servers taken out of a group, and when: while requests to them are in flight, the group's status
    /// lists them as `Draining` (SPEC section 3).
    var drainingServers: [String: [(server: ALBDataPlane.BackendServer, since: Date)]] = [:]

    /// What the admin endpoint (`--admin`) shows, published after each pass and stats refresh.
    public nonisolated let adminState = AdminStateBox()
    /// The reconciler's metrics (and the scrape of the data plane's) for `/metrics`.
    public nonisolated let metrics = MetricsEndpoint()
    /// The admin endpoint's address (`--admin`): no listener may bind it (docs/operations.md).
    let reservedAddress: ReservedAddress?

    public init(directory: ManifestDirectory, store: StatusStore, dataPlane: DataPlane, log: Logger,
                emptyTreeGrace: TimeInterval = 1, reservedAddress: ReservedAddress? = nil) {
        self.reservedAddress = reservedAddress
        self.directory = directory
        self.store = store
        self.dataPlane = dataPlane
        self.log = log
        self.emptyTreeGrace = emptyTreeGrace
        store.removeStaleTemporaryFiles()
        self.statuses = store.loadAll()
        // A fresh process knows no file's last good parse, but the status files say which file defined what:
        // a resource whose file no longer parses is then reported invalid, not silently forgotten.
        for (id, status) in self.statuses {
            if let file = status.sourceFile { self.lastGoodFiles[file, default: []].insert(id) }
        }
    }

    // MARK: - The pass

    /// - Parameter counters: whether status files whose counters alone changed are written in this pass
    ///   (`.keepWritten` for a pass an edit triggered: the periodic refresh writes them).
    public func pass(reason: String, counters: StatusStore.Counters = .refresh) async -> PassResult {
        let now = Date()
        let clock = ContinuousClock()
        let started = clock.now
        let (files, rootExists) = directory.read()
        let readDone = clock.now
        let manifests = ManifestLoader.load(files, cache: &manifestCache)
        let loaded = clock.now
        var nextPass: Date?

        // 1. What should serve: valid resources, plus the last good configuration of anything that is
        //    invalid now or whose file no longer parses.
        var problems = manifests.invalid
        var desired = manifests.resources
        for (file, diagnostic) in manifests.filesNotWhollyRead {
            for id in lastGoodFiles[file] ?? [] where desired[id] == nil && problems[id] == nil {
                problems[id, default: []].append(diagnostic)
            }
        }
        for id in problems.keys where desired[id] == nil {
            if let good = lastGood[id] { desired[id] = good }
        }
        let treeIsEmpty = desired.isEmpty && problems.isEmpty
        let pendingDeletionWake = keepVanishedResources(in: &desired, problems: problems, now: now)

        // 2. A pass that would delete everything waits one more window (a `git checkout` mid-way).
        let known = Set(statuses.keys).union(lastGood.keys)
        if treeIsEmpty && !known.isEmpty {
            if let seen = emptyTreeSeenAt, now.timeIntervalSince(seen) >= emptyTreeGrace {
                log.warning("manifest tree is still empty; pruning every resource",
                            ["directory": directory.root])
            } else {
                if emptyTreeSeenAt == nil {
                    emptyTreeSeenAt = now
                    log.warning(rootExists ? "manifest tree is empty; waiting one more window before pruning"
                                           : "manifest directory is missing; waiting one more window before pruning",
                                ["directory": directory.root, "resources": String(known.count)])
                }
                return PassResult(nextPass: (emptyTreeSeenAt ?? now).addingTimeInterval(emptyTreeGrace))
            }
        } else {
            emptyTreeSeenAt = nil
        }

        // Remember what each file defined at its last good parse; while a document of it cannot be identified,
        // what it defined before too (the one it cannot identify may be one of those).
        for (file, ids) in manifests.definedBy where manifests.unparsableFiles[file] == nil {
            lastGoodFiles[file] = manifests.unidentifiedDocuments[file] == nil ? ids : ids.union(lastGoodFiles[file] ?? [])
        }
        for file in lastGoodFiles.keys where !files.contains(where: { $0.path == file }) {
            lastGoodFiles[file] = nil
        }
        let certificates = CertificateFiles.load(desired, now: now)
        warnOfRSAKeysWithoutOpenSSL(certificates)
        let state = DesiredState(resources: desired, certificates: certificates)
        let canonical = desired.mapValues(state.canonical)

        // 3. Generations and validity for every resource, valid or not.
        let allIDs = Set(desired.keys).union(problems.keys)
        for id in allIDs.sorted() {
            let diagnostics = problems[id] ?? []
            var status = statuses[id] ?? ResourceStatus(id: id, source: "")
            if status.createdAt == nil { status.createdAt = now }
            // A resource kept from an unparsable file keeps the source of its last good parse.
            if let source = manifests.sources[id] { status.source = "\(source.file):\(source.line)" }
            let digest: String
            if diagnostics.isEmpty, let fields = canonical[id] {
                digest = Self.digest(fields)
            } else {
                digest = Self.digest(diagnostics.map(\.formatted).joined(separator: "\n"))
            }
            if digest != status.desiredDigest {
                status.generation += 1
                status.desiredDigest = digest
                if id.kind == .listener, var listener = listeners[id.name] {
                    listener.lifecycle.newGeneration()
                    listeners[id.name] = listener
                }
            }
            status.observedGeneration = status.generation
            if let first = diagnostics.first {
                let message = diagnostics.map(\.formatted).joined(separator: "; ")
                if status.condition("Valid")?.message != message {
                    record(id, action: "invalid", message: message, now: now)
                }
                if reportedProblems[id] != message {
                    // Once per problem and process: the log says why the manifest was not applied.
                    reportedProblems[id] = message
                    log.warning(lastGood[id] != nil ? "manifest invalid; the last good configuration keeps serving"
                                                    : "manifest invalid; nothing serves it until it is fixed",
                                ["kind": id.kind.rawValue, "name": id.name, "reason": first.reason.rawValue,
                                 "error": message])
                }
                status.setCondition("Valid", false, reason: first.reason.rawValue, message: message, now: now)
                status.setCondition("Synced", false, reason: first.reason.rawValue, message: message, now: now)
                status.lastAttempt = LastAttempt(generation: status.generation, error: message,
                                                 at: status.lastAttempt?.generation == status.generation
                                                     ? status.lastAttempt?.at ?? now : now)
            } else {
                if reportedProblems.removeValue(forKey: id) != nil {
                    log.info("manifest valid again", ["kind": id.kind.rawValue, "name": id.name])
                }
                status.setCondition("Valid", true, reason: "Validated", message: "", now: now)
                lastGood[id] = manifests.resources[id]
            }
            statuses[id] = status
        }
        reportedProblems = reportedProblems.filter { allIDs.contains($0.key) }
        reportFileProblems(manifests)

        // 4. Non-listener resources apply by being part of the desired state.
        for id in desired.keys where id.kind != .listener {
            guard var status = statuses[id], let fields = canonical[id] else { continue }
            if problems[id] == nil {
                if status.live != fields {
                    record(id, action: status.live == nil ? "create" : "update", message: "applied", now: now)
                }
                status.live = fields
                status.setCondition("Synced", true, reason: "Applied", message: "", now: now)
                status.lastAttempt = nil
            }
            statuses[id] = status
        }

        // Health checks of every server group that has them on, before listeners build their balancers.
        let checked = state.checkedGroups()
        dataPlane.applyHealthChecks(checked)
        let previousServers = groupServers
        groupServers = [:]
        for (id, resource) in desired where id.kind == .serverGroup {
            if case .serverGroup(let group) = resource.spec { groupServers[id.name] = DesiredState.backendServers(group) }
        }
        noteRemovedServers(previous: previousServers, now: now)

        // 5. Listeners: what each one should do, then the sockets of the whole pass, then the actions.
        var intents: [String: ListenerIntent] = [:]
        for id in desired.keys.sorted() where id.kind == .listener {
            guard let resource = desired[id] else { continue }
            let intent = decideListener(resource, state: state, now: now)
            if case .wait(let wake) = intent { nextPass = min(nextPass ?? wake, wake) }
            intents[id.name] = intent
        }
        let outcomes = await applySocketPlan(intents: intents, now: now)
        for id in desired.keys.sorted() where id.kind == .listener {
            guard let resource = desired[id], let fields = canonical[id], let intent = intents[id.name] else { continue }
            let wake = finishListener(resource, intent: intent, outcome: outcomes[id.name], canonical: fields,
                                      valid: problems[id] == nil, now: now)
            if let wake { nextPass = min(nextPass ?? wake, wake) }
        }
        // Invalid listeners that never served in this process: reported, nothing bound (after a restart the
        // status file's `live` is the previous process's, which serves nothing now).
        for id in problems.keys where id.kind == .listener && desired[id] == nil {
            guard var status = statuses[id] else { continue }
            status.state = listeners[id.name]?.lifecycle.state.phase ?? .failed
            if listeners[id.name] == nil { status.live = nil }
            status.setCondition("Ready", false, reason: problems[id]?.first?.reason.rawValue ?? "InvalidSpec",
                                message: "not serving: the manifest is invalid", now: now)
            statuses[id] = status
        }
        if let wake = pendingDeletionWake { nextPass = min(nextPass ?? wake, wake) }

        // 6. Anything live that is no longer wanted goes (its instance was retired by the socket plan).
        for (name, listener) in listeners where !allIDs.contains(ResourceID(kind: .listener, name: name)) {
            listeners[name] = nil
            record(ResourceID(kind: .listener, name: name), action: "delete", from: listener.lifecycle.state.phase.rawValue,
                   message: listener.lifecycle.state == .running
                       ? "manifest removed; stopped accepting, draining in-flight requests" : "manifest removed", now: now)
        }
        for id in statuses.keys where !allIDs.contains(id) {
            if id.kind != .listener { record(id, action: "delete", message: "manifest removed", now: now) }
            statuses[id] = nil
            lastGood[id] = nil
            store.remove(id)
        }

        // 7. Status files, and what the admin endpoint shows.
        let acted = clock.now
        let written = await writeStatuses(counters: counters)
        adminState.publish(statuses: Array(statuses.values), firstPassDone: true)
        let finished = clock.now
        metrics.recordPass(duration: finished - started,
                           manifestErrors: manifests.invalid.values.reduce(0) { $0 + $1.count } + manifests.unparsableFiles.count,
                           statuses: statuses.values)
        log.debug("reconcile pass done", [
            "reason": reason, "resources": String(desired.count),
            "read_ms": Self.milliseconds(readDone - started), "load_ms": Self.milliseconds(loaded - readDone), "act_ms": Self.milliseconds(acted - loaded),
            "status_ms": Self.milliseconds(finished - acted), "counters_ms": Self.milliseconds(written.counters),
            "status_files": String(written.files),
        ])
        return PassResult(nextPass: nextPass)
    }

    /// Said once a process, at the first RSA key: it works without OpenSSL's libcrypto.so.3, in BoringSSL, but
    /// each full RSA handshake then costs about 1.5x the CPU, which nothing else would show.
    private func warnOfRSAKeysWithoutOpenSSL(_ certificates: CertificateFiles) {
        guard !warnedOfRSAKeysWithoutOpenSSL else { return }
        let names = certificates.byName.compactMap { name, loaded -> String? in
            guard case .server(let certificate, _) = loaded, certificate.rsaKeyWithoutOpenSSL else { return nil }
            return name
        }
        guard !names.isEmpty else { return }
        warnedOfRSAKeysWithoutOpenSSL = true
        log.warning("RSA keys sign in BoringSSL: libcrypto.so.3 (OpenSSL 3, Debian package libssl3) cannot be opened; "
                    + "full RSA handshakes cost about 1.5x the CPU",
                    ["certificates": names.sorted().joined(separator: ",")])
    }

    /// What one listener should do in this pass. Entering `Configuring` is recorded here; the socket
    /// work happens for all listeners together in ``applySocketPlan(intents:now:)``.
    private func decideListener(_ resource: Resource, state: DesiredState, now: Date) -> ListenerIntent {
        let id = resource.id
        guard case .listener(let spec) = resource.spec, let status = statuses[id] else { return .idle }
        var listener = listeners[id.name] ?? LiveListener(lifecycle: restoredLifecycle(status), key: nextKey(id.name))
        defer { listeners[id.name] = listener }

        // Build the complete new configuration first; on failure nothing changes.
        let config: ListenerConfig
        switch state.listenerConfig(resource) {
        case .success(let built): config = built
        case .failure(let error): return .configFailed(error)
        }
        let target: ListenerLifecycle.Target = spec.state == .running ? .running : .stopped
        if listener.serving != nil, target == .running {
            let fields = state.canonical(resource)
            let immutable = listener.live.map { live in
                Differ.immutableListenerFields.filter { live[$0] != fields[$0] }
            } ?? []
            if immutable.isEmpty { return .keep(config) }
            if let retryAt = listener.moveRetryAt, now < retryAt { return .wait(retryAt) }
            return .replace(config, immutable: immutable)
        }
        let before = listener.lifecycle.state.phase.rawValue
        switch listener.lifecycle.plan(desired: target, now: now) {
        case .start:
            record(id, action: "start", from: before, to: "Configuring",
                   message: dataPlane.hasInheritedSocket(address: Self.socketAddress(config), listener: config.name)
                       ? "serving the socket on \(Self.socketAddress(config)) taken over from the previous process"
                       : "binding \(Self.socketAddress(config))", now: now)
            return .start(config)
        case .stop:
            record(id, action: "stop", from: before, to: "Configuring",
                   message: "closing the socket and its connections", now: now)
            return .stop
        case .waitUntil(let date):
            return .wait(date)
        case .none:
            return listener.serving == nil ? .idle : .keep(config)
        }
    }

    /// Plans every bind, hand-over and retirement of the pass as one ``SocketPlan`` and carries it out:
    /// hand-overs first, then binds, then retirements, so no port is released before its new owner holds
    /// it. Returns what happened to each listener that wanted a new instance.
    private func applySocketPlan(intents: [String: ListenerIntent], now: Date) async -> [String: SocketOutcome] {
        var current: [String: String] = [:]
        for (name, listener) in listeners {
            if let serving = listener.serving { current[name] = Self.socketKey(serving) }
        }
        var desired: [String: SocketPlan.Target] = [:]
        var wanted: [String: ListenerConfig] = [:]
        for (name, intent) in intents {
            switch intent {
            case .start(let config), .replace(let config, _):
                desired[name] = SocketPlan.Target(address: Self.socketKey(config), fresh: true)
                wanted[name] = config
            case .keep, .configFailed, .wait:
                if let address = current[name] { desired[name] = SocketPlan.Target(address: address, fresh: false) }
            case .stop, .idle:
                break
            }
        }
        let plan = SocketPlan.make(current: current, desired: desired)
        var outcomes: [String: SocketOutcome] = [:]
        // Binds are collected and made together when the next other step (or the end) comes: they are
        // independent, and one after another they cost a round trip to an event loop each.
        var binds: [(name: String, config: ListenerConfig)] = []
        for step in plan.steps {
            if !binds.isEmpty, !step.isBind {
                outcomes.merge(await bindTogether(binds)) { _, new in new }
                binds = []
            }
            switch step {
            case .handOver(let address, let from, let to):
                guard var config = wanted[to], let fromKey = listeners[from]?.key else { continue }
                config.key = nextKey(to)
                do {
                    let bound = try dataPlane.handOver(from: fromKey, to: config)
                    outcomes[to] = .bound(config, address: bound, handedOver: true)
                } catch {
                    outcomes[to] = .failed("cannot take over \(address): \(error)")
                }
            case .bind(let name, let address):
                guard var config = wanted[name] else { continue }
                if let reserved = reservedAddress, config.quic == nil,
                   reserved.overlaps(host: config.bindHost, port: config.port) {
                    outcomes[name] = .failed("cannot bind \(address): the admin endpoint (--admin \(reserved)) listens there")
                    continue
                }
                config.key = nextKey(name)
                binds.append((name, config))
            case .conflict(let name, let address, let holder):
                outcomes[name] = .failed("cannot bind \(address): listener \(holder) holds it")
            case .retire(let name, let keepIfBindFails):
                if keepIfBindFails, case .failed? = outcomes[name] { continue }
                guard var listener = listeners[name], listener.serving != nil else { continue }
                if case .stop? = intents[name] {
                    await dataPlane.stop(key: listener.key)
                } else {
                    await dataPlane.drain(key: listener.key)
                }
                listener.serving = nil
                listeners[name] = listener
            }
        }
        if !binds.isEmpty {
            outcomes.merge(await bindTogether(binds)) { _, new in new }
        }
        return outcomes
    }

    /// Binds new instances all at once (``DataPlane/start(_:)-([ListenerConfig])``); each listener gets
    /// its own outcome, so a port in use fails only the listener that wanted it.
    private func bindTogether(_ binds: [(name: String, config: ListenerConfig)]) async -> [String: SocketOutcome] {
        let results = await dataPlane.start(binds.map(\.config))
        var outcomes: [String: SocketOutcome] = [:]
        for ((name, config), result) in zip(binds, results) {
            switch result {
            case .success(let bound): outcomes[name] = .bound(config, address: bound, handedOver: false)
            case .failure(let error): outcomes[name] = .failed(String(describing: error))
            }
        }
        return outcomes
    }

    /// Records the outcome of one listener's pass in its lifecycle and status; returns when it wants
    /// another pass (a retry).
    private func finishListener(_ resource: Resource, intent: ListenerIntent, outcome: SocketOutcome?,
                                canonical: CanonicalFields, valid: Bool, now: Date) -> Date? {
        let id = resource.id
        guard var status = statuses[id], var listener = listeners[id.name] else { return nil }
        defer {
            listeners[id.name] = listener
            status.state = listener.lifecycle.state.phase
            status.address = listener.serving == nil ? nil : listener.address
            status.transitions = listener.lifecycle.transitions
            if let live = listener.live { status.live = live }
            statuses[id] = status
        }
        switch intent {
        case .configFailed(let error):
            let serving = listener.serving != nil
            status.setCondition("Synced", false, reason: error.reason.rawValue, message: error.message, now: now)
            status.setCondition("Ready", serving, reason: serving ? "Listening" : error.reason.rawValue,
                                message: serving ? "listening on \(listener.address)" : error.message, now: now)
            status.lastAttempt = LastAttempt(generation: status.generation, error: error.message, at: now)
            if !serving, case .stopped = listener.lifecycle.state {
                listener.lifecycle.failed(error.reason, message: error.message, now: now)
            }
            return nil

        case .keep(let config):
            if let serving = listener.serving {
                var updated = config
                updated.key = listener.key
                if updated != serving {
                    do {
                        try dataPlane.update(updated)
                        listener.serving = updated
                        record(id, action: "update", message: "applied in place", now: now)
                        log.info("listener updated in place", ["listener": id.name])
                    } catch {
                        status.setCondition("Synced", false, reason: "UpdateFailed", message: String(describing: error), now: now)
                        status.lastAttempt = LastAttempt(generation: status.generation, error: String(describing: error), at: now)
                        return nil
                    }
                }
            }
            if valid {
                listener.live = canonical
                markApplied(&status, listener: listener, now: now)
            }
            return nil

        case .idle:
            if valid {
                listener.live = canonical
                markApplied(&status, listener: listener, now: now)
            }
            return nil

        case .wait(let date):
            return date

        case .stop:
            listener.serving = nil
            listener.lifecycle.succeeded(now: Date())
            listener.live = canonical
            record(id, action: "state", from: "Configuring", to: "Stopped", message: "", now: Date())
            markApplied(&status, listener: listener, now: now)
            log.info("listener stopped", ["listener": id.name])
            return nil

        case .start:
            switch outcome {
            case .bound(let config, let address, _)?:
                listener.lifecycle.succeeded(now: Date())
                adopt(config, address: address, canonical: canonical, into: &listener)
                record(id, action: "state", from: "Configuring", to: "Running", message: "listening on \(address)", now: Date())
                markApplied(&status, listener: listener, now: now)
                log.info("listener running", ["listener": id.name, "address": address])
                return nil
            case .failed(let message)?:
                return bindFailed(id, message: message, listener: &listener, status: &status, now: now)
            case nil:
                return nil
            }

        case .replace(_, let immutable):
            let fields = immutable.joined(separator: ", ")
            switch outcome {
            case .bound(let config, let address, let handedOver)?:
                adopt(config, address: address, canonical: canonical, into: &listener)
                listener.moveFailures = 0
                listener.moveRetryAt = nil
                let how = handedOver ? "the socket was handed over" : "new socket bound before the old one closed"
                let order = Differ.replaceOrder(running: true).rawValue
                record(id, action: "replace", message: "\(fields) changed (\(order): \(how)); listening on \(address)", now: now)
                markApplied(&status, listener: listener, now: now)
                log.info("listener replaced", ["listener": id.name, "address": address])
                return nil
            case .failed(let message)?:
                if listener.serving != nil {
                    // The old instance keeps serving where it is; the move is retried with backoff.
                    listener.moveFailures += 1
                    let delay = min(ListenerLifecycle.initialBackoff * pow(2, Double(listener.moveFailures - 1)),
                                    ListenerLifecycle.maximumBackoff)
                    let retryAt = now.addingTimeInterval(delay)
                    listener.moveRetryAt = retryAt
                    status.setCondition("Synced", false, reason: "BindFailed",
                                        message: "\(message); still listening on \(listener.address)", now: now)
                    status.setCondition("Ready", true, reason: "Listening", message: "listening on \(listener.address)", now: now)
                    status.lastAttempt = LastAttempt(generation: status.generation, error: message, at: now)
                    record(id, action: "replace", message: "\(fields) changed; \(message); still listening on \(listener.address)", now: now)
                    log.error("listener could not move; the old address keeps serving",
                              ["listener": id.name, "error": message, "address": listener.address])
                    return retryAt
                }
                return bindFailed(id, message: message, listener: &listener, status: &status, now: now)
            case nil:
                return nil
            }
        }
    }

    private func adopt(_ config: ListenerConfig, address: String, canonical: CanonicalFields,
                       into listener: inout LiveListener) {
        listener.key = config.key
        listener.serving = config
        listener.address = address
        listener.live = canonical
    }

    private func bindFailed(_ id: ResourceID, message: String, listener: inout LiveListener,
                            status: inout ResourceStatus, now: Date) -> Date? {
        let from = listener.lifecycle.state.phase.rawValue
        listener.lifecycle.failed(.bindFailed, message: message, now: Date())
        status.setCondition("Synced", false, reason: "BindFailed", message: message, now: now)
        status.setCondition("Ready", false, reason: "BindFailed", message: message, now: now)
        status.lastAttempt = LastAttempt(generation: status.generation, error: message, at: now)
        record(id, action: "state", from: from, to: "Failed", message: message, now: Date())
        log.error("listener failed to bind", ["listener": id.name, "error": message])
        if case .failed(_, _, _, let retryAt) = listener.lifecycle.state { return retryAt }
        return nil
    }

    /// The listeners of `directory`'s valid manifests that want to serve on `reserved` (the admin
    /// endpoint's address), each as "listener NAME (FILE:LINE) wants ADDRESS": checked at start-up so a
    /// clash is an error then rather than a lost race for the bind.
    public static func listenersClaiming(_ reserved: ReservedAddress, in directory: ManifestDirectory) -> [String] {
        let (files, _) = directory.read()
        var cache = ManifestCache()
        let manifests = ManifestLoader.load(files, cache: &cache)
        let state = DesiredState(resources: manifests.resources,
                                 certificates: CertificateFiles.load(manifests.resources, now: Date()))
        var claims: [String] = []
        for (id, resource) in manifests.resources.sorted(by: { $0.key < $1.key }) where id.kind == .listener {
            guard case .listener(let spec) = resource.spec, spec.state == .running,
                  case .success(let config) = state.listenerConfig(resource), config.quic == nil,
                  reserved.overlaps(host: config.bindHost, port: config.port) else { continue }
            let source = manifests.sources[id].map { " (\($0.file):\($0.line))" } ?? ""
            claims.append("listener \(id.name)\(source) wants \(socketAddress(config))")
        }
        return claims
    }

    /// "host:port" of a listener's socket, the key the socket plan works with.
    /// The socket plan's key for a listener's socket: a QUIC listener's UDP socket and a TCP listener's on
    /// the same host and port are two sockets (SPEC: a QUIC listener may share its port with an HTTPS one),
    /// and a UDP socket is only ever handed to another QUIC listener.
    static func socketKey(_ config: ListenerConfig) -> String {
        config.quic == nil ? socketAddress(config) : "udp " + socketAddress(config)
    }

    static func socketAddress(_ config: ListenerConfig) -> String {
        config.bindHost.contains(":") ? "[\(config.bindHost)]:\(config.port)" : "\(config.bindHost):\(config.port)"
    }

    /// A resource whose document is gone is deleted only once it has been gone for `emptyTreeGrace`:
    /// an editor that truncates a file and writes it again, or a checkout half-way, must not delete and
    /// recreate what serves. Until then its last good configuration stays in `desired`, unless a
    /// listener present now wants the same address (the document was really replaced, e.g. a rename).
    /// Returns when the earliest pending deletion is due.
    private func keepVanishedResources(in desired: inout [ResourceID: Resource], problems: [ResourceID: [Diagnostic]],
                                       now: Date) -> Date? {
        let vanished = lastGood.keys.filter { desired[$0] == nil && problems[$0] == nil }
        missingSince = missingSince.filter { vanished.contains($0.key) }
        guard !vanished.isEmpty else { return nil }
        let everything = DesiredState(resources: desired.merging(lastGood) { present, _ in present })
        func address(_ resource: Resource) -> String? {
            guard case .listener(let spec) = resource.spec, let host = everything.bindAddress(of: spec) else { return nil }
            return "\(host):\(spec.port)"
        }
        let claimed = Set(desired.values.compactMap(address))
        var wake: Date?
        for id in vanished.sorted() {
            guard let good = lastGood[id] else { continue }
            let since = missingSince[id] ?? now
            let due = since.addingTimeInterval(emptyTreeGrace)
            if now >= due { continue }
            if let wanted = address(good), claimed.contains(wanted) { continue }
            missingSince[id] = since
            desired[id] = good
            wake = min(wake ?? due, due)
        }
        return wake
    }

    private func markApplied(_ status: inout ResourceStatus, listener: LiveListener, now: Date) {
        if status.condition("Valid")?.status == true {
            status.setCondition("Synced", true, reason: "Applied", message: "", now: now)
            status.lastAttempt = nil
        }
        switch listener.lifecycle.state {
        case .running:
            status.setCondition("Ready", true, reason: "Listening", message: "listening on \(listener.address)", now: now)
        case .stopped:
            status.setCondition("Ready", false, reason: "Stopped", message: "the listener is stopped", now: now)
        default:
            break
        }
    }

    private func restoredLifecycle(_ status: ResourceStatus) -> ListenerLifecycle {
        // A fresh process serves nothing yet, whatever the file said: start from Stopped, keep history.
        ListenerLifecycle(state: .stopped, transitions: status.transitions)
    }

    private func nextKey(_ name: String) -> String {
        keySerial += 1
        return "\(name)#\(keySerial)"
    }

    // MARK: - Status

    /// A file that does not parse, or a document whose kind or name cannot be read, belongs to no resource status
    /// when the file defined nothing before: logged once per new problem, so a broken new file is not silent.
    private func reportFileProblems(_ manifests: ManifestSet) {
        var current: [String: String] = [:]
        for (file, diagnostic) in manifests.filesNotWhollyRead {
            current[file] = diagnostic.formatted
            if reportedFileProblems[file] != diagnostic.formatted {
                log.warning("manifest file not applied", ["file": file, "error": diagnostic.formatted])
            }
        }
        reportedFileProblems = current
    }

    private func record(_ id: ResourceID, action: String, from: String? = nil, to: String? = nil, message: String, now: Date) {
        store.event(kind: id.kind, name: id.name, action: action, from: from, to: to, message: message, at: now)
    }

    /// Writes every status file again and removes those of resources this reconciler does not know: after
    /// a takeover that failed half-way, the would-be successor may have written its own view.
    public func reassertStatusOwnership() async {
        for id in store.forgetWritten() where statuses[id] == nil {
            store.remove(id)
        }
        await writeStatuses()
    }

    /// The status directory was removed and its lock taken again: every status file is written anew (and
    /// events.log starts again with the next event).
    public func statusDirectoryRemoved() async {
        store.directoryWasRemoved()
        await writeStatuses()
    }

    /// Refreshes listener stats into the status files (called periodically; unchanged files are not written).
    public func refreshStats() async {
        await writeStatuses()
        adminState.publish(statuses: Array(statuses.values), firstPassDone: false)
    }

    /// What one write of the status files did, for the pass's debug line.
    struct StatusWrite {
        /// Reading every serving listener's counters and every group's server load.
        var counters: Duration = .zero
        var files = 0
    }

    /// Writes every status file whose contents changed (with `counters: .keepWritten`, changed apart from
    /// counters). The counters of all serving listeners, and the load of all groups' servers, are each read
    /// in one go (one hop to each event loop for all of them), and kept in ``statuses`` either way: the admin
    /// endpoint shows them, and a file written for another change carries them.
    @discardableResult
    private func writeStatuses(counters: StatusStore.Counters = .refresh) async -> StatusWrite {
        let clock = ContinuousClock()
        let started = clock.now
        let keys = statuses.keys.compactMap { id in id.kind == .listener ? listeners[id.name]?.key : nil }
        let stats = await dataPlane.stats(keys: keys)
        let servers = await serverStatuses()
        var result = StatusWrite(counters: clock.now - started)
        for (id, var status) in statuses {
            if id.kind == .listener, let key = listeners[id.name]?.key, let stats = stats[key] {
                status.stats = stats
                statuses[id] = status
            }
            if id.kind == .serverGroup, let servers = servers[id.name] {
                self.recordHealthChanges(id, from: status.servers ?? [], to: servers)
                status.servers = servers
                statuses[id] = status
            }
            do {
                if try store.write(status, counters: counters) { result.files += 1 }
            } catch {
                log.error("cannot write status", ["resource": id.description, "error": String(describing: error)])
            }
        }
        store.flushEvents()
        store.syncWrittenFolders()
        return result
    }

    /// Each group's servers (``groupServers``) with what their checks found (`Unchecked` when the group has
    /// no checks) and their requests, the requests of all groups read at once.
    private func serverStatuses() async -> [String: [ResourceStatus.ServerStatus]] {
        let groups = groupServers.sorted { $0.key < $1.key }
        let load = await dataPlane.serverLoad(groups.flatMap(\.value))
        var result: [String: [ResourceStatus.ServerStatus]] = [:]
        var offset = 0
        for (group, servers) in groups {
            let reports = dataPlane.serverHealth(group: group)
            result[group] = zip(servers, load[offset..<offset + servers.count]).map { server, load in
                let report = reports.first { $0.host == server.host && $0.port == server.port }
                return ResourceStatus.ServerStatus(address: server.host, port: server.port, weight: server.weight,
                                                   health: report?.health.rawValue ?? "Unchecked",
                                                   reason: report?.reason ?? "", since: report?.since,
                                                   activeRequests: load.activeRequests, requests: load.requests)
            }
            offset += servers.count
        }
        for (group, draining) in await drainingServerStatuses() where result[group] != nil {
            result[group, default: []] += draining
        }
        return result
    }

    /// Servers that left a group this pass join its draining list; servers back in their group, and the
    /// lists of groups that are gone, leave it.
    private func noteRemovedServers(previous: [String: [ALBDataPlane.BackendServer]], now: Date) {
        for (group, servers) in previous {
            guard let current = groupServers[group] else { continue }
            let kept = Set(current.map(\.poolKey))
            let listed = Set(drainingServers[group]?.map(\.server.poolKey) ?? [])
            for server in servers where !kept.contains(server.poolKey) && !listed.contains(server.poolKey) {
                drainingServers[group, default: []].append((server, now))
            }
        }
        for (group, entries) in drainingServers {
            let current = Set(groupServers[group]?.map(\.poolKey) ?? [])
            let left = groupServers[group] == nil ? [] : entries.filter { !current.contains($0.server.poolKey) }
            drainingServers[group] = left.isEmpty ? nil : left
        }
    }

    /// The draining servers of each group that still have requests in flight, as their status lists them;
    /// those with none are done and leave the list. A server still in another group has no retired pool (its
    /// requests go on counting there), so it leaves at once.
    private func drainingServerStatuses() async -> [String: [ResourceStatus.ServerStatus]] {
        guard !drainingServers.isEmpty else { return [:] }
        let groups = drainingServers.sorted { $0.key < $1.key }
        let load = await dataPlane.drainingServerLoad(groups.flatMap { $0.value.map(\.server) })
        var result: [String: [ResourceStatus.ServerStatus]] = [:]
        var offset = 0
        for (group, entries) in groups {
            var drained: Set<String> = []
            for (entry, load) in zip(entries, load[offset..<offset + entries.count]) {
                guard load.activeRequests > 0 else {
                    drained.insert(entry.server.poolKey)
                    continue
                }
                result[group, default: []].append(ResourceStatus.ServerStatus(
                    address: entry.server.host, port: entry.server.port, weight: entry.server.weight, health: "Draining",
                    reason: "removed from the group: its requests in flight finish, or are closed after the drain timeout",
                    since: entry.since, activeRequests: load.activeRequests, requests: load.requests))
            }
            offset += entries.count
            // Only what was found drained leaves: the list may have changed while the data plane was asked.
            drainingServers[group]?.removeAll { drained.contains($0.server.poolKey) }
            if drainingServers[group]?.isEmpty == true { drainingServers[group] = nil }
        }
        return result
    }

    /// A server whose health changed gets a line in events.log and the log (what an operator greps for).
    private func recordHealthChanges(_ id: ResourceID, from old: [ResourceStatus.ServerStatus],
                                     to new: [ResourceStatus.ServerStatus]) {
        for server in new {
            guard let before = old.first(where: { $0.address == server.address && $0.port == server.port }),
                  before.health != server.health else { continue }
            let address = "\(server.address):\(server.port)"
            let message = server.health == "Unhealthy" ? "\(address): \(server.reason)" : address
            record(id, action: "health", from: before.health, to: server.health, message: message, now: server.since ?? Date())
            log.info("server health changed", ["group": id.name, "server": address, "from": before.health,
                                               "to": server.health, "reason": server.reason])
        }
    }

    /// Graceful shutdown: stop accepting, drain, close; then every listener's status file says it is
    /// stopped, so nothing reads as serving after the process is gone.
    public func shutdown(drainTimeout: Duration, reason: String) async {
        await dataPlane.shutdown(drainTimeout: .seconds(Int64(drainTimeout.components.seconds)))
        let now = Date()
        for (name, var listener) in listeners {
            let id = ResourceID(kind: .listener, name: name)
            guard var status = statuses[id] else { continue }
            let from = listener.lifecycle.state.phase
            listener.lifecycle.reset(now: now, reason: "ReconcilerStopped")
            listener.serving = nil
            listeners[name] = listener
            status.state = listener.lifecycle.state.phase
            status.address = nil
            status.transitions = listener.lifecycle.transitions
            status.stats = nil
            status.setCondition("Ready", false, reason: "ReconcilerStopped",
                                message: "the reconciler stopped (\(reason)); nothing is listening", now: now)
            statuses[id] = status
            if from != .stopped {
                record(id, action: "state", from: from.rawValue, to: "Stopped", message: "reconciler stopped (\(reason))", now: now)
            }
        }
        await writeStatuses()
    }

    static func milliseconds(_ duration: Duration) -> String {
        String(format: "%.1f", Double(duration.components.attoseconds) / 1e15 + Double(duration.components.seconds) * 1000)
    }

    /// The digest of the entries' `path=value` lines joined by newlines, hashed as they are walked (building
    /// the text first was most of the cost).
    static func digest(_ fields: CanonicalFields) -> String {
        var hash = FNV1a64()
        for (index, entry) in fields.entries.enumerated() {
            if index > 0 { hash.combine(UInt8(ascii: "\n")) }
            hash.combine(entry.path.utf8)
            hash.combine(UInt8(ascii: "="))
            hash.combine(entry.value.utf8)
        }
        return hash.text
    }

    static func digest(_ text: String) -> String {
        digest(bytes: text.utf8)
    }

    /// FNV-1a 64: a stable digest across processes (Swift's Hasher is seeded per process). For change
    /// detection only, not for security.
    static func digest(bytes: some Sequence<UInt8>) -> String {
        var hash = FNV1a64()
        hash.combine(bytes)
        return hash.text
    }
}

/// FNV-1a, 64 bits, fed a byte at a time.
struct FNV1a64 {
    private var value: UInt64 = 0xcbf2_9ce4_8422_2325

    mutating func combine(_ byte: UInt8) {
        value ^= UInt64(byte)
        value = value &* 0x100_0000_01b3
    }

    mutating func combine(_ bytes: some Sequence<UInt8>) {
        for byte in bytes { combine(byte) }
    }

    /// Lowercase hexadecimal, no leading zeros.
    var text: String { String(value, radix: 16) }
}

extension SocketPlan.Step {
    var isBind: Bool {
        if case .bind = self { return true }
        return false
    }
}

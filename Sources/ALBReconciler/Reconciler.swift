import ALBDataPlane
import ALBManifest
import Foundation

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
    }

    public struct PassResult: Sendable {
        /// When the reconciler wants another pass even if nothing changes (retries, deferred pruning).
        public var nextPass: Date?
    }

    let directory: ManifestDirectory
    let store: StatusStore
    let dataPlane: DataPlane
    let log: Log
    let emptyTreeGrace: TimeInterval

    var statuses: [ResourceID: ResourceStatus]
    var lastGood: [ResourceID: Resource] = [:]
    var lastGoodFiles: [String: Set<ResourceID>] = [:]
    var listeners: [String: LiveListener] = [:]
    var emptyTreeSeenAt: Date?
    var manifestCache = ManifestCache()
    var keySerial = 0

    public init(directory: ManifestDirectory, store: StatusStore, dataPlane: DataPlane, log: Log,
                emptyTreeGrace: TimeInterval = 1) {
        self.directory = directory
        self.store = store
        self.dataPlane = dataPlane
        self.log = log
        self.emptyTreeGrace = emptyTreeGrace
        store.removeStaleTemporaryFiles()
        self.statuses = store.loadAll()
    }

    // MARK: - The pass

    public func pass(reason: String) async -> PassResult {
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
        for (file, diagnostic) in manifests.unparsableFiles {
            for id in lastGoodFiles[file] ?? [] where desired[id] == nil {
                problems[id, default: []].append(diagnostic)
            }
        }
        for id in problems.keys where desired[id] == nil {
            if let good = lastGood[id] { desired[id] = good }
        }

        // 2. A pass that would delete everything waits one more window (a `git checkout` mid-way).
        let known = Set(statuses.keys).union(lastGood.keys)
        if desired.isEmpty && problems.isEmpty && !known.isEmpty {
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

        // Remember what each file defined at its last good parse.
        for (file, ids) in manifests.definedBy where manifests.unparsableFiles[file] == nil {
            lastGoodFiles[file] = ids
        }
        for file in lastGoodFiles.keys where !files.contains(where: { $0.path == file }) {
            lastGoodFiles[file] = nil
        }
        let state = DesiredState(resources: desired)
        let canonical = desired.mapValues(state.canonical)

        // 3. Generations and validity for every resource, valid or not.
        let allIDs = Set(desired.keys).union(problems.keys)
        for id in allIDs.sorted() {
            let diagnostics = problems[id] ?? []
            var status = statuses[id] ?? ResourceStatus(id: id, source: "")
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
                status.setCondition("Valid", false, reason: first.reason.rawValue, message: message, now: now)
                status.setCondition("Synced", false, reason: first.reason.rawValue, message: message, now: now)
                status.lastAttempt = LastAttempt(generation: status.generation, error: message,
                                                 at: status.lastAttempt?.generation == status.generation
                                                     ? status.lastAttempt?.at ?? now : now)
            } else {
                status.setCondition("Valid", true, reason: "Validated", message: "", now: now)
                lastGood[id] = manifests.resources[id]
            }
            statuses[id] = status
        }

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

        // 5. Listeners.
        for id in desired.keys.sorted() where id.kind == .listener {
            guard let resource = desired[id], let fields = canonical[id] else { continue }
            let wake = await reconcileListener(resource, canonical: fields, valid: problems[id] == nil, state: state, now: now)
            if let wake { nextPass = min(nextPass ?? wake, wake) }
        }
        // Invalid listeners that never served: reported, nothing bound.
        for id in problems.keys where id.kind == .listener && desired[id] == nil {
            guard var status = statuses[id] else { continue }
            status.state = listeners[id.name]?.lifecycle.state.phase ?? .failed
            status.setCondition("Ready", false, reason: problems[id]?.first?.reason.rawValue ?? "InvalidSpec",
                                message: "not serving: the manifest is invalid", now: now)
            statuses[id] = status
        }

        // 6. Anything live that is no longer wanted goes.
        for (name, listener) in listeners where !allIDs.contains(ResourceID(kind: .listener, name: name)) {
            await dataPlane.stop(key: listener.key)
            listeners[name] = nil
            record(ResourceID(kind: .listener, name: name), action: "delete", from: listener.lifecycle.state.phase.rawValue,
                   message: "manifest removed; socket closed", now: now)
        }
        for id in statuses.keys where !allIDs.contains(id) {
            if id.kind != .listener { record(id, action: "delete", message: "manifest removed", now: now) }
            statuses[id] = nil
            lastGood[id] = nil
            store.remove(id)
        }

        // 7. Status files.
        let acted = clock.now
        writeStatuses()
        let finished = clock.now
        log.debug("reconcile pass done", [
            "reason": reason, "resources": String(desired.count),
            "read_ms": Self.milliseconds(readDone - started), "load_ms": Self.milliseconds(loaded - readDone), "act_ms": Self.milliseconds(acted - loaded),
            "status_ms": Self.milliseconds(finished - acted),
        ])
        return PassResult(nextPass: nextPass)
    }

    /// Brings one listener to its desired state; returns when it wants another pass (a retry).
    private func reconcileListener(_ resource: Resource, canonical: CanonicalFields, valid: Bool, state: DesiredState,
                                   now: Date) async -> Date? {
        let id = resource.id
        guard case .listener(let spec) = resource.spec, var status = statuses[id] else { return nil }
        var listener = listeners[id.name] ?? LiveListener(lifecycle: restoredLifecycle(status), key: nextKey(id.name))
        defer {
            listeners[id.name] = listener
            status.state = listener.lifecycle.state.phase
            status.transitions = listener.lifecycle.transitions
            if let live = listener.live { status.live = live }
            statuses[id] = status
        }

        // Build the complete new configuration first; on failure nothing changes.
        let config: ListenerConfig
        switch state.listenerConfig(resource) {
        case .success(let built): config = built
        case .failure(let error):
            status.setCondition("Synced", false, reason: error.reason, message: error.message, now: now)
            status.setCondition("Ready", listener.serving != nil, reason: listener.serving != nil ? "Listening" : error.reason,
                                message: listener.serving != nil ? "listening on \(listener.address)" : error.message, now: now)
            status.lastAttempt = LastAttempt(generation: status.generation, error: error.message, at: now)
            if listener.serving == nil, case .stopped = listener.lifecycle.state {
                listener.lifecycle.failed(reason: error.message, now: now)
            }
            return nil
        }

        // An immutable field changed: replace the bound instance.
        let immutable = listener.live.map { live in
            Differ.immutableListenerFields.filter { live[$0] != canonical[$0] }
        } ?? []
        if let serving = listener.serving, !immutable.isEmpty {
            let collides = serving.port == config.port
            let newKey = nextKey(id.name)
            var mode = "delete before create"
            if !collides, spec.state == .running {
                mode = "create before delete"
                do {
                    var replacement = config
                    replacement.key = newKey
                    let address = try await dataPlane.start(replacement)
                    await dataPlane.stop(key: listener.key)
                    listener.key = newKey
                    listener.serving = replacement
                    listener.address = address
                    listener.live = canonical
                    record(id, action: "replace", message: "\(immutable.joined(separator: ", ")) changed (\(mode)); listening on \(address)", now: now)
                    markApplied(&status, listener: listener, now: now)
                    return nil
                } catch {
                    // Fall through to delete-then-create, whose failure path records the error.
                }
            }
            await dataPlane.stop(key: listener.key)
            listener.serving = nil
            listener.key = newKey
            listener.lifecycle.reset(now: now, reason: "Replacing")
            record(id, action: "replace", message: "\(immutable.joined(separator: ", ")) changed (\(mode))", now: now)
        }

        let target: ListenerLifecycle.Target = spec.state == .running ? .running : .stopped
        let before = listener.lifecycle.state.phase.rawValue
        switch listener.lifecycle.plan(desired: target, now: now) {
        case .start:
            record(id, action: "start", from: before, to: "Configuring", message: "binding \(config.bindHost):\(config.port)", now: now)
            do {
                var bound = config
                bound.key = listener.key
                let address = try await dataPlane.start(bound)
                listener.lifecycle.succeeded(now: Date())
                listener.serving = bound
                listener.address = address
                listener.live = canonical
                record(id, action: "state", from: "Configuring", to: "Running", message: "listening on \(address)", now: Date())
                markApplied(&status, listener: listener, now: now)
                log.info("listener running", ["listener": id.name, "address": address])
                return nil
            } catch {
                let message = String(describing: error)
                listener.lifecycle.failed(reason: message, now: Date())
                status.setCondition("Synced", false, reason: "BindFailed", message: message, now: now)
                status.setCondition("Ready", false, reason: "BindFailed", message: message, now: now)
                status.lastAttempt = LastAttempt(generation: status.generation, error: message, at: now)
                record(id, action: "state", from: "Configuring", to: "Failed", message: message, now: Date())
                log.error("listener failed to bind", ["listener": id.name, "error": message])
                if case .failed(_, _, let retryAt) = listener.lifecycle.state { return retryAt }
                return nil
            }
        case .stop:
            record(id, action: "stop", from: before, to: "Configuring",
                   message: "closing the socket and its connections", now: now)
            await dataPlane.stop(key: listener.key)
            listener.serving = nil
            listener.lifecycle.succeeded(now: Date())
            listener.live = canonical
            record(id, action: "state", from: "Configuring", to: "Stopped", message: "", now: Date())
            markApplied(&status, listener: listener, now: now)
            log.info("listener stopped", ["listener": id.name])
            return nil
        case .waitUntil(let date):
            return date
        case .none:
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
        }
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

    private func record(_ id: ResourceID, action: String, from: String? = nil, to: String? = nil, message: String, now: Date) {
        store.event(kind: id.kind, name: id.name, action: action, from: from, to: to, message: message, at: now)
    }

    /// Refreshes listener stats into the status files (called periodically; unchanged files are not written).
    public func refreshStats() {
        writeStatuses()
    }

    private func writeStatuses() {
        for (id, var status) in statuses {
            if id.kind == .listener, let listener = listeners[id.name], let stats = dataPlane.stats(key: listener.key) {
                status.stats = stats
                statuses[id] = status
            }
            do {
                try store.write(status)
            } catch {
                log.error("cannot write status", ["resource": id.description, "error": String(describing: error)])
            }
        }
    }

    /// Graceful shutdown: stop accepting, drain, close.
    public func shutdown(drainTimeout: Duration) async {
        await dataPlane.shutdown(drainTimeout: .seconds(Int64(drainTimeout.components.seconds)))
    }

    static func milliseconds(_ duration: Duration) -> String {
        String(format: "%.1f", Double(duration.components.attoseconds) / 1e15 + Double(duration.components.seconds) * 1000)
    }

    static func digest(_ fields: CanonicalFields) -> String {
        digest(fields.entries.map { "\($0.path)=\($0.value)" }.joined(separator: "\n"))
    }

    /// FNV-1a 64: a stable digest across processes (Swift's Hasher is seeded per process).
    static func digest(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return String(hash, radix: 16)
    }
}

// Package znodes defines, in one place, every ZooKeeper path and payload that
// dcroll reads or writes, and the recipes built on them: a session-aware
// connection, ephemeral registration that survives session expiry, a herd-free
// turn-taking lock, leader election and versioned multi-op writes.
//
// Layout under the root (default /dc); every payload is JSON with a "v"
// schema version so that dashboards and zkCli.sh can read it:
//
//	/dc/head                         persistent  Head: the active spec id (the HEAD pointer)
//	/dc/specs/<id>                   persistent  canonical spec JSON, id = sha256(canonical form); immutable
//	/dc/history/h-<seq>              persistent  HistoryEntry: every HEAD move (push or rollback), superseded halts, forced bad builds
//	/dc/deploy/d-<seq>               persistent  DeployEntry: the deploy queue, one per service, dependency order, removals last; Build = target build id
//	/dc/control                      persistent  Control: paused / resumed by an engineer; always present, its version fences spends
//	/dc/rollout                      persistent  Rollout: the night as the leading coordinator sees it: per service blocked-by and ETA; measured step times (one writer)
//	/dc/current/<service>/<machine>  ephemeral   Current: what runs where, at which version
//	/dc/staging/<service>/<guid>s-<seq> ephemeral-sequential StagingEntry: ready to roll, readiness order
//	/dc/turns/<service>/<guid>t-<seq>   ephemeral-sequential Turn: the turn-taking lock per service
//	/dc/budget/<service>             persistent  Budget: version bumped by each atomic quorum spend
//	/dc/members/<service>/<machine>  persistent  Member: a machine of the service, from its first registration until an operator removes it
//	/dc/down/<service>/<machine>     persistent  Down: the step record of a machine that spent quorum budget, until its step is over
//	/dc/up/<service>/<machine>       ephemeral   (empty) the machine is available: registered, running, healthy, not mid-step (Presence)
//	/dc/bad/<key>                    persistent  BadBuild: a build (key BadKey(build, "")) or build+settings that halted a rollout
//	/dc/agents/<machine>             ephemeral   Agent: machine, rack, dc, peer address
//	/dc/progress/<machine>           ephemeral   Progress: blob download progress for dashboards
//	/dc/blobs/<sha256hex>            persistent  Blob: published blob: size, infohash, metainfo, origin URLs
//	/dc/recovering/<sha256hex>/<machine> ephemeral (empty) the machine lost every source of the blob beyond its rack (origin gone) and trades with the others listed
//	/dc/election/<name>/<guid>n-<seq> ephemeral-sequential leader election candidates
//
// Paths are built only by the methods of Paths; payloads are the structs in
// payloads.go; every create goes through Create (create.go) so per-path ACLs
// can be applied in one place.
//
// # Sessions and recipes
//
// Conn (conn.go) turns the library's session events into Connected,
// Suspended (disconnected: the session may live; start nothing new), Lost
// (expired, or disconnected longer than the negotiated session timeout) and
// Closed, with a generation number per session and a lost channel per
// generation. Every recipe works inside one generation and starts over in
// the next:
//
//	Registration (registration.go)  Run(ctx): an ephemeral node kept alive across sessions
//	Presence (presence.go)          Set(bool): an ephemeral marker that exists while its owner says so
//	WatchSet (watch.go)             one armed watch per path; unchanged paths answered without a round trip
//	ReadAvailability (availability.go) a service's members counted from children lists: O(1) round trips
//	FleetCache (fleetcache.go)      the leader's watched model of whole fleets: one read per changed node
//	TurnLock (lock.go)              Acquire(ctx) -> HeldTurn: herd-free queue, CheckOp fences writes
//	Election (election.go)          Run(ctx, lead): lead(leaderCtx) while leader, cancelled on suspension
//	Update, SetOp, CheckOp (txn.go) versioned read-modify-write and Multi ops
//
// Waits watch one node each (WaitDeleted: a GetW on the predecessor, never
// on the whole directory). Nodes a recipe abandons while disconnected are
// deleted by the Conn once it is reconnected, in case the session survived
// (reap.go).
package znodes

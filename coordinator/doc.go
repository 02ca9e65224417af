// Package coordinator moves HEAD and manages the deploy queue: it pushes
// staging specs, rolls back, pauses and resumes rollouts, and reports status.
//
// A push or rollback is one ZooKeeper transaction (Multi): the immutable spec
// node (content-addressed), the HEAD pointer (version-checked, so concurrent
// pushes serialize), a history entry, the removal of the previous deploy
// queue and the new queue, one entry per changed service in dependency
// order. Either all of it appears or nothing does.
//
// Run is the long-running coordinator: an elected leader that watches the
// deploy queue and /dc/current and marks a service's entry done once every
// machine runs the target version (agents do the same; the versioned write
// makes it happen exactly once).
package coordinator

// Package coordinator moves HEAD and manages the deploy queue: it pushes
// staging specs, rolls back, pauses and resumes rollouts, and reports status.
//
// A push or rollback is one ZooKeeper transaction (Multi): the immutable spec
// node (content-addressed), the HEAD pointer (version-checked, so concurrent
// pushes serialize), a history entry, the removal of the previous deploy
// queue and the new queue, one entry per changed service in dependency
// order. Either all of it appears or nothing does.
//
// A push never silently drops a halt and never leaves work without an
// entry: when it supersedes an unfinished queue, every unfinished service
// keeps an entry, and a halted one pushed again with the same build stays
// halted until dcroll resume. It refuses (writing nothing, dry runs too) a
// build recorded in /dc/bad unless forced, and a quorum larger than a
// service's members.
//
// Run is the long-running coordinator: an elected leader that polls the
// deploy queue (a ticker, plain reads) and marks the active entry done once
// every member of its service, absent ones included, runs the target
// version (agents do the same; the versioned write makes it happen exactly
// once), and halts it when the service has had no member at all for
// Config.NoMembersAfter.
//
// machine.go holds the operator commands over membership: Machines,
// RemoveMachine (a machine gone for good), ClearStep (a step that will never
// end by itself) and BadBuilds.
package coordinator

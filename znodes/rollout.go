package znodes

import "time"

// Rollout is the night as the leading coordinator sees it, at
// Paths.Rollout: for each service of the deploy queue, what blocks it and
// when it will be done, and one ETA for the night. It has one writer (the
// elected coordinator, once per tick, only when something changed) and
// many readers: dcroll status, the dashboard and /metrics all read this
// record instead of recomputing it, so they never disagree.
//
// Steps outlives rollouts: it is the measured step time per service, the
// moving average a new leader and the next night start from.
type Rollout struct {
	V int `json:"v"`
	// By is the coordinator that wrote the record, At when (its clock).
	By string    `json:"by"`
	At time.Time `json:"at"`
	// HeadID is the spec HEAD pointed to when it was written.
	HeadID string `json:"head_id,omitempty"`
	// State of the night: idle (empty queue), rolling, blocked (the active
	// entry may not progress now; see its BlockedBy), halted or done.
	State string `json:"state"`
	// ETA is when the last entry of the queue is expected to be done (the
	// zero time when done, idle, halted or not computable).
	ETA time.Time `json:"eta,omitzero"`
	// Remaining is how many member steps the queue still needs.
	Remaining int                 `json:"remaining"`
	Services  []ServiceRollout    `json:"services"`
	Steps     map[string]StepStat `json:"steps,omitempty"`
}

// Night states in Rollout.State.
const (
	NightIdle    = "idle"
	NightRolling = "rolling"
	NightBlocked = "blocked"
	NightHalted  = "halted"
	NightDone    = "done"
)

// ServiceRollout is one deploy entry of the queue in Rollout.
type ServiceRollout struct {
	Service  string `json:"service"`
	Entry    string `json:"entry"`    // deploy entry node (d-NNNNNNNNNN)
	Position int    `json:"position"` // 1-based position in the queue, as the CLI numbers it
	Kind     string `json:"kind"`
	From     string `json:"from,omitempty"`
	To       string `json:"to,omitempty"`
	State    string `json:"state"` // the entry's: pending, rolling, halted, done
	// Members of the service, how many are available now, how many are
	// done (run the entry's target, healthy; or stopped, for a removal),
	// and the quorum's minimum over the members.
	Members   int `json:"members"`
	Available int `json:"available"`
	Done      int `json:"done"`
	QuorumMin int `json:"quorum_min"`
	// MaxParallel and Batches: the batches (max_parallel machines of one
	// rack) still to step.
	MaxParallel int `json:"max_parallel"`
	Batches     int `json:"batches"`
	// Blocked is a stable code (Blocked* constants), BlockedBy the
	// one-line reason a human reads ("quorum 3/4 available, min 3"); both
	// empty while the entry progresses or is done.
	Blocked   string `json:"blocked,omitempty"`
	BlockedBy string `json:"blocked_by,omitempty"`
	// Window is the spec's maintenance window ("01:00-05:00 Europe/Paris"),
	// "" when always open.
	Window string `json:"window,omitempty"`
	// StepSeconds is the expected time per member step, Measured says it
	// comes from this service's measured steps (else from its health
	// settings).
	StepSeconds float64 `json:"step_seconds"`
	Measured    bool    `json:"measured"`
	// Start is when the entry started rolling (its first step), ETA when
	// it is expected done (zero: done, halted, or never at this rate).
	Start time.Time `json:"start,omitzero"`
	ETA   time.Time `json:"eta,omitzero"`
	// Canary is the canary phase of the entry, nil without one.
	Canary *CanaryState `json:"canary,omitempty"`
}

// Blocked codes in ServiceRollout.Blocked.
const (
	BlockedHalted     = "halted"     // the entry halted: dcroll resume or rollback
	BlockedPaused     = "paused"     // dcroll pause
	BlockedWindow     = "window"     // outside the maintenance window
	BlockedDependency = "dependency" // an earlier entry of the queue is unfinished
	BlockedCanary     = "canary"     // canaries bake before the rest
	BlockedQuorum     = "quorum"     // too few members available to take one down
	BlockedAbsent     = "absent"     // an absent member holds completion back
	BlockedStaging    = "staging"    // members still fetching the new build
	BlockedNoMembers  = "no_members" // nobody runs the service
)

// CanaryState is an entry's canary phase: the first Machines members step,
// then the rest wait until they have all been healthy on the target for
// Bake (BakeSince is when that began), or until dcroll promote.
type CanaryState struct {
	Machines int           `json:"machines"`
	Bake     time.Duration `json:"bake"` // nanoseconds in JSON
	// Done counts the canaries that run the target, healthy.
	Done int `json:"done"`
	// BakeSince: when every canary was first seen healthy on the target
	// (zero while they are not); BakeUntil = BakeSince + Bake.
	BakeSince time.Time `json:"bake_since,omitzero"`
	BakeUntil time.Time `json:"bake_until,omitzero"`
	// Promoted: the rest may go; By who (dcroll promote) or "bake".
	Promoted bool   `json:"promoted"`
	By       string `json:"by,omitempty"`
}

// StepStat is a service's measured step time: an exponential moving
// average of seconds per member step (the time from one member's step to
// the next member done, divided by the members done in it), and how many
// steps it has seen.
type StepStat struct {
	Seconds float64   `json:"seconds"`
	Samples int       `json:"samples"`
	At      time.Time `json:"at"`
}

func (x *Rollout) setV() { x.V = SchemaVersion }

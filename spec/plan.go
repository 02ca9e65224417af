package spec

import (
	"errors"
	"maps"
	"slices"
)

// ChangeKind says what a rollout does to one service.
type ChangeKind string

const (
	// ChangeNew: the service is not in the current head; start it everywhere.
	ChangeNew ChangeKind = "new"
	// ChangeUpgrade: version, artifact, data or run changed; restart machine by
	// machine under the quorum.
	ChangeUpgrade ChangeKind = "upgrade"
	// ChangeSettings: only settings changed; write them and send the reload
	// signal of the next spec, no restart.
	ChangeSettings ChangeKind = "settings"
	// ChangeRemoved: the service is gone from the new spec; stop it.
	ChangeRemoved ChangeKind = "removed"
)

// Reasons used in Change.Reasons.
const (
	ReasonNew      = "new service"
	ReasonVersion  = "version changed"
	ReasonArtifact = "artifact changed"
	ReasonData     = "data changed"
	ReasonRun      = "run changed"
	ReasonSettings = "settings changed"
	ReasonRemoved  = "removed from spec"
)

// Change is what a rollout from one spec to the next does to one service.
type Change struct {
	Service string
	Kind    ChangeKind
	From    string   // version in head; "" for ChangeNew
	To      string   // version in next; "" for ChangeRemoved
	Reasons []string // what differs, e.g. "artifact changed", "settings changed"
}

// Plan returns the changes that take the machines from head to next. head
// is nil for the first push (every service is ChangeNew). Services whose version,
// artifact, data or run changed are ChangeUpgrade (their Reasons also say
// whether settings changed); if only settings changed, ChangeSettings; other
// services are omitted (health, quorum, max_parallel, reload_signal and
// depends_on only steer the rollout or the next reload and need no action
// on the machines now). Changes come in next.Order(); removed services come last,
// dependents before their dependencies (reverse head order).
func Plan(head, next *Spec) ([]Change, error) {
	if next == nil {
		return nil, errors.New("plan: no next spec")
	}
	order, err := next.Order()
	if err != nil {
		return nil, err
	}
	var changes []Change
	for _, name := range order {
		to := next.Services[name]
		if to == nil {
			continue
		}
		var from *Service
		if head != nil {
			from = head.Services[name]
		}
		if from == nil {
			changes = append(changes, Change{Service: name, Kind: ChangeNew, To: to.Version, Reasons: []string{ReasonNew}})
			continue
		}
		var restart, reload []string
		if from.Version != to.Version {
			restart = append(restart, ReasonVersion)
		}
		if from.Artifact != to.Artifact {
			restart = append(restart, ReasonArtifact)
		}
		if !slices.Equal(from.Data, to.Data) {
			restart = append(restart, ReasonData)
		}
		if !slices.Equal(from.Run, to.Run) {
			restart = append(restart, ReasonRun)
		}
		if !maps.Equal(from.Settings, to.Settings) {
			reload = append(reload, ReasonSettings)
		}
		c := Change{Service: name, From: from.Version, To: to.Version}
		switch {
		case len(restart) > 0:
			c.Kind, c.Reasons = ChangeUpgrade, append(restart, reload...)
		case len(reload) > 0:
			c.Kind, c.Reasons = ChangeSettings, reload
		default:
			continue
		}
		changes = append(changes, c)
	}
	if head == nil {
		return changes, nil
	}
	headOrder, err := head.Order()
	if err != nil {
		headOrder = head.Names()
	}
	for _, name := range slices.Backward(headOrder) {
		if from := head.Services[name]; from != nil && next.Services[name] == nil {
			changes = append(changes, Change{Service: name, Kind: ChangeRemoved, From: from.Version, Reasons: []string{ReasonRemoved}})
		}
	}
	return changes, nil
}

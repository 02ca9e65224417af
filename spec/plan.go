package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// ChangeKind says what a rollout does to one service.
type ChangeKind string

const (
	// ChangeNew: the service is not in the current head; start it everywhere.
	ChangeNew ChangeKind = "new"
	// ChangeUpgrade: the build (artifact, data or run, see [Service.BuildID])
	// changed; restart machine by machine under the quorum. It is also the
	// kind of a downgrade.
	ChangeUpgrade ChangeKind = "upgrade"
	// ChangeSettings: the build is the same but settings or the version label
	// changed; write the settings and send the reload signal of the next spec,
	// no restart.
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

	// ReasonDowngrade replaces ReasonVersion when the version goes back,
	// e.g. 2.0.0 -> 1.9.3 (dotted numbers compared as numbers, a release after
	// its pre-releases); fmt verbs: from, to.
	ReasonDowngrade = "downgrade %s -> %s"
	// ReasonVersionLabel is the reason of a ChangeSettings whose version
	// changed but not its build; fmt verbs: from, to.
	ReasonVersionLabel = "version label %s -> %s with an identical build (same artifact, data and run): no restart; treated as settings-only"
)

// Change is what a rollout from one spec to the next does to one service.
type Change struct {
	Service string     `json:"service"`
	Kind    ChangeKind `json:"kind"`
	From    string     `json:"from"`    // version in head; "" for ChangeNew
	To      string     `json:"to"`      // version in next; "" for ChangeRemoved
	Reasons []string   `json:"reasons"` // what differs, e.g. "artifact changed", "settings changed"
}

// BuildID identifies what a restart installs: the artifact, the data blobs
// and the run line, not the version label or settings. Two services with
// the same BuildID need no restart to go from one to the other. It is the
// same value as agent.BuildID; "" for a nil service.
func (s *Service) BuildID() string {
	if s == nil {
		return ""
	}
	h := sha256.New()
	fmt.Fprintf(h, "%q\n%q\n%q\n", s.Artifact, s.Data, s.Run)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Plan returns the changes that take the machines from head to next. head
// is nil for the first push (every service is ChangeNew). Services whose
// build (artifact, data or run, see [Service.BuildID]) changed are
// ChangeUpgrade; their Reasons also say whether the version changed
// ([ReasonDowngrade] if it went back) and whether settings changed. If the
// build is the same but settings or the version label changed, the change is
// ChangeSettings: nothing needs a restart ([ReasonVersionLabel] says so for
// the label). Other services are omitted (health, quorum, max_parallel,
// reload_signal and depends_on only steer the rollout or the next reload and
// need no action on the machines now). Changes come in next.Order(); removed
// services come last, dependents before their dependencies (reverse head
// order).
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
		var restart, reload []string // reasons that need a restart, and the others
		rebuild := from.BuildID() != to.BuildID()
		switch {
		case from.Version == to.Version:
		case !rebuild:
			reload = append(reload, fmt.Sprintf(ReasonVersionLabel, from.Version, to.Version))
		case compareVersions(to.Version, from.Version) < 0:
			restart = append(restart, fmt.Sprintf(ReasonDowngrade, from.Version, to.Version))
		default:
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
		case rebuild:
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

// compareVersions orders version labels the semver way, loosely: an
// optional "v", dot-separated numbers compared as numbers (missing ones
// count as 0, so "1.2" and "1.2.0" are equal), then a release after its
// pre-releases ("1.0.0-rc1" < "1.0.0"); "+build" metadata is ignored. It
// returns -1, 0 or +1, and 0 as well when either label is not of that form
// or both are pre-releases of the same numbers: such labels have no order.
func compareVersions(a, b string) int {
	an, apre, aok := parseVersion(a)
	bn, bpre, bok := parseVersion(b)
	if !aok || !bok {
		return 0
	}
	for i := range max(len(an), len(bn)) {
		var x, y uint64
		if i < len(an) {
			x = an[i]
		}
		if i < len(bn) {
			y = bn[i]
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	switch {
	case apre && !bpre:
		return -1
	case !apre && bpre:
		return 1
	}
	return 0
}

// parseVersion splits "v1.2.3-rc1+build" into [1 2 3] and pre-release true.
func parseVersion(v string) (nums []uint64, pre, ok bool) {
	v, _, _ = strings.Cut(v, "+")
	v, p, pre := strings.Cut(v, "-")
	if pre && p == "" {
		return nil, false, false
	}
	v = strings.TrimPrefix(v, "v")
	for f := range strings.SplitSeq(v, ".") {
		n, err := strconv.ParseUint(f, 10, 64) // no sign, no "_"
		if err != nil {
			return nil, false, false
		}
		nums = append(nums, n)
	}
	return nums, pre, true
}

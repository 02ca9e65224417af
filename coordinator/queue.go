package coordinator

import (
	"fmt"
	"strings"
	"time"

	"dcroll/spec"
	"dcroll/znodes"
)

// SupersededHalt is a halted deploy entry that a push or rollback replaced.
type SupersededHalt struct {
	Service string `json:"service"`
	Version string `json:"version"`
	Build   string `json:"build,omitempty"`
	Machine string `json:"machine,omitempty"`
	Reason  string `json:"reason"`
	// StillHalted: the new queue keeps the service halted (the same target
	// was pushed again without --force) until dcroll resume.
	StillHalted bool `json:"still_halted"`
}

// String is the history form: "store 3.0.0: halted on m2: reason".
func (h SupersededHalt) String() string {
	s := h.Service + " " + dash(h.Version) + ": halted"
	if h.Machine != "" {
		s += " on " + h.Machine
	}
	return s + ": " + h.Reason
}

// stillHaltedPrefix starts the reason of an entry that keeps a superseded halt.
const stillHaltedPrefix = "still halted from the superseded rollout: "

// newQueue computes the deploy entries of the move from head (nil: the
// first push) to next, whose id is id, replacing the queue old. It is pure:
// specs holds the stored specs of old's halted entries (by spec id) when
// they are needed to compare settings.
//
// The entries are:
//
//   - in next.Order() (dependencies first), one per service that plan
//     changes, and one per service of next with an unfinished old entry
//     that plan leaves alone (HEAD already named that build): such an entry
//     keeps the old entry's kind and from_version and targets next's
//     version, so the machines still have an entry to roll under;
//   - then the removals (kind removed, version ""): the plan's, which come
//     in reverse dependency order of head (dependents are stopped before
//     the services they depend on), then unfinished old removals of
//     services that are in neither spec.
//
// An entry whose service had a halted old entry with the same target (same
// build; for a settings change, the same settings too; for a removal,
// another removal) starts halted, with the old machine and the reason
// "still halted from the superseded rollout: ...", unless force. Every
// halted old entry is returned as a SupersededHalt.
func newQueue(head, next *spec.Spec, id string, plan []spec.Change, old []QueueEntry, specs map[string]*spec.Spec, force bool, now time.Time) ([]znodes.DeployEntry, []SupersededHalt, error) {
	order, err := next.Order()
	if err != nil {
		return nil, nil, err
	}
	planned := map[string]spec.Change{}
	for _, ch := range plan {
		planned[ch.Service] = ch
	}
	unfinished := map[string]QueueEntry{}
	var unfinishedOrder []string
	for _, e := range old {
		if e.State == znodes.DeployDone {
			continue
		}
		prev, seen := unfinished[e.Service]
		if !seen {
			unfinishedOrder = append(unfinishedOrder, e.Service)
		}
		if !seen || prev.State != znodes.DeployHalted { // a halt is never hidden by a duplicate
			unfinished[e.Service] = e
		}
	}

	var entries []znodes.DeployEntry
	for _, name := range order {
		svc := next.Services[name]
		ch, inPlan := planned[name]
		o, wasUnfinished := unfinished[name]
		var e znodes.DeployEntry
		switch {
		case inPlan:
			e = znodes.DeployEntry{Service: name, Version: ch.To, FromVersion: ch.From, Kind: string(ch.Kind), SettingsOnly: ch.Kind == spec.ChangeSettings}
		case wasUnfinished:
			kind := o.Kind
			if kind == znodes.KindRemoved { // cannot happen (the plan has it as new); be safe
				kind = string(spec.ChangeNew)
			}
			e = znodes.DeployEntry{Service: name, Version: svc.Version, FromVersion: o.FromVersion, Kind: kind, SettingsOnly: o.SettingsOnly}
		default:
			continue
		}
		e.SpecID, e.State, e.Updated, e.Build = id, znodes.DeployPending, now, svc.BuildID()
		entries = append(entries, e)
	}
	removal := func(name, from string) znodes.DeployEntry {
		return znodes.DeployEntry{Service: name, FromVersion: from, SpecID: id, Kind: znodes.KindRemoved, State: znodes.DeployPending, Updated: now}
	}
	for _, ch := range plan {
		if ch.Kind == spec.ChangeRemoved {
			entries = append(entries, removal(ch.Service, ch.From))
		}
	}
	for _, name := range unfinishedOrder {
		o := unfinished[name]
		_, inNext := next.Services[name]
		if _, inPlan := planned[name]; !inNext && !inPlan && o.Kind == znodes.KindRemoved {
			entries = append(entries, removal(name, o.FromVersion))
		}
	}

	var halts []SupersededHalt
	for _, name := range unfinishedOrder {
		o := unfinished[name]
		if o.State != znodes.DeployHalted {
			continue
		}
		h := SupersededHalt{Service: name, Version: o.Version, Build: o.Build, Machine: o.Machine, Reason: o.Reason}
		for i := range entries {
			e := &entries[i]
			if e.Service != name || force || !sameTarget(o, *e, specs[o.SpecID], next) {
				continue
			}
			reason, _ := strings.CutPrefix(o.Reason, stillHaltedPrefix) // superseded twice: say it once
			e.State, e.Reason, e.Machine = znodes.DeployHalted, stillHaltedPrefix+reason, o.Machine
			h.StillHalted = true
		}
		halts = append(halts, h)
	}
	return entries, halts, nil
}

// sameTarget reports whether the new entry e asks the machines for what
// the halted entry o asked: the same build (an entry written before builds
// were recorded compares versions), with the same settings when o was a
// settings change (oldSpec is o's spec; unknown: assume the same), or a
// removal again.
func sameTarget(o QueueEntry, e znodes.DeployEntry, oldSpec, next *spec.Spec) bool {
	if o.Kind == znodes.KindRemoved || e.Kind == znodes.KindRemoved {
		return o.Kind == e.Kind
	}
	if o.Build == "" {
		return o.Version == e.Version
	}
	if o.Build != e.Build {
		return false
	}
	if o.Kind != string(spec.ChangeSettings) || oldSpec == nil || oldSpec.Services[o.Service] == nil {
		return true
	}
	return znodes.SettingsHash(oldSpec.Services[o.Service].Settings) == znodes.SettingsHash(next.Services[e.Service].Settings)
}

// badKeys returns the /dc/bad keys that would refuse service svc: its
// build, and its build with its settings.
func badKeys(svc *spec.Service) []string {
	b := svc.BuildID()
	keys := []string{znodes.BadKey(b, "")}
	if s := znodes.SettingsHash(svc.Settings); s != "" {
		keys = append(keys, znodes.BadKey(b, s))
	}
	return keys
}

// badLine describes a bad-build record for a refusal.
func badLine(svcName string, svc *spec.Service, b znodes.BadBuild) string {
	what := fmt.Sprintf("build %s", dash(b.Build))
	if b.Kind == string(spec.ChangeSettings) {
		what += ", these settings"
	}
	version := b.Version
	if version == "" && svc != nil {
		version = svc.Version
	}
	line := fmt.Sprintf("%s %s (%s) halted a rollout", svcName, dash(version), what)
	if b.Machine != "" {
		line += " on " + b.Machine
	}
	if !b.At.IsZero() {
		line += " at " + b.At.UTC().Format(time.DateTime) + " UTC"
	}
	return line + ": " + dash(b.Reason)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// unfinishedEntries names the entries of queue that are not done,
// "store(rolling)": what a push must supersede (and the plan warns about).
func unfinishedEntries(queue []QueueEntry) []string {
	var out []string
	for _, e := range queue {
		if e.State != znodes.DeployDone {
			out = append(out, e.Service+"("+e.State+")")
		}
	}
	return out
}

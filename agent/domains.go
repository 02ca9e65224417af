package agent

import (
	"errors"
	"fmt"
	"sort"

	"gopkg.in/yaml.v3"

	"dcroll/spec"
	"dcroll/znodes"
)

// Upgrade domains and waves (spec domain, waves): the leading coordinator
// writes the open wave (a data center) and the open domain (a label
// value) into the active deploy entry (coordinator.OpenDomains); an agent
// only steps when both are its own. domainWait reads nothing but the
// snapshot's own fields (this machine's rack, dc and labels, HEAD's
// service and the entry), so a bystander evaluates it without the fleet.

// domainLabel is the label whose values are s.Service's upgrade domains:
// HEAD's domain, else the rack (the one-rack-at-a-time rule).
func domainLabel(s Snapshot) string {
	if s.Head != nil && s.Head.Domain != "" {
		return s.Head.Domain
	}
	return znodes.LabelRack
}

// domainValue is the domain of member m (nil: this machine) for s's
// service: its value of domainLabel (znodes.NoLabel when it has none).
func domainValue(s Snapshot, m *znodes.MemberState) string {
	label := domainLabel(s)
	if m == nil {
		return znodes.LabelValue(label, s.Rack, s.DC, s.Labels)
	}
	return m.Label(label)
}

// oneDomainReason is stepRules' Wait reason when other is unavailable in
// another domain than this machine's.
func oneDomainReason(s Snapshot, other znodes.MemberState, others []znodes.MemberState) string {
	if s.Head == nil || s.Head.Domain == "" {
		return fmt.Sprintf("one rack at a time: rack %s has %s", orNone(other.Rack), describe(others))
	}
	l := s.Head.Domain
	return fmt.Sprintf("one domain at a time: %s %s has %s", l, domainValue(s, &other), describe(others))
}

// domainWait returns a Wait when s.Service has waves or an upgrade domain
// and the active entry's open wave or domain is not this machine's (or
// none is open yet: the coordinator opens the first within a tick). A
// machine that holds the turn gives it back instead, so that the open
// domain's machines can have it.
func domainWait(s Snapshot, active *Entry, target string) *Decision {
	h := s.Head
	if h == nil || active == nil || active.Service != s.Service || h.Domain == "" && h.Waves == nil {
		return nil
	}
	myDC := znodes.LabelValue(znodes.LabelDC, s.Rack, s.DC, s.Labels)
	myDomain := domainValue(s, nil)
	var why string
	switch {
	case h.Waves != nil && active.Wave == "", h.Domain != "" && active.Domain == "":
		what := "domain"
		if h.Domain == "" {
			what = "wave"
		}
		why = "waiting for the coordinator to open the first " + what
	case h.Waves != nil && active.Wave != myDC:
		if order := h.Waves.Arrange([]string{myDC, active.Wave}); order[0] == active.Wave {
			why = fmt.Sprintf("waves: %s goes after %s (open now)", myDC, active.Wave)
		} else {
			why = fmt.Sprintf("waves: %s goes before %s (open now): waiting for the coordinator to reopen it", myDC, active.Wave)
		}
	case h.Domain != "" && active.Domain != myDomain:
		if myDomain > active.Domain {
			why = fmt.Sprintf("domain %s %s goes after %s (open now)", h.Domain, myDomain, active.Domain)
		} else {
			why = fmt.Sprintf("domain %s %s goes before %s (open now): waiting for the coordinator to reopen it", h.Domain, myDomain, active.Domain)
		}
	default:
		return nil
	}
	if s.HoldsTurn {
		return &Decision{Action: ReleaseTurn, Version: target, Entry: active, Reason: why + "; giving the turn back"}
	}
	return &Decision{Action: Wait, Version: target, Entry: active, Reason: why}
}

// labelErrors checks the agent config's labels: names as spec domains
// name them (spec.LabelNameRE), not rack or dc (set by --rack and --dc),
// values znode-safe (spec.LabelValueRE).
func labelErrors(labels map[string]string) []error {
	names := make([]string, 0, len(labels))
	for k := range labels {
		names = append(names, k)
	}
	sort.Strings(names)
	var errs []error
	for _, k := range names {
		v := labels[k]
		switch {
		case k == znodes.LabelRack || k == znodes.LabelDC:
			errs = append(errs, fmt.Errorf("labels.%s: set it with %s: (or --%s), not as a label", k, k, k))
		case !spec.LabelNameRE.MatchString(k):
			errs = append(errs, fmt.Errorf("labels: %q is not a label name (lowercase letters, digits, '_' or '-', starting with a letter)", k))
		case !spec.LabelValueRE.MatchString(v):
			errs = append(errs, fmt.Errorf("labels.%s: %q is not a label value (letters, digits, '.', '_' or '-')", k, v))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return []error{errors.Join(errs...)}
}

// labels decodes the labels mapping of an agent config file.
func (d *configDecoder) labels(name string, n *yaml.Node) map[string]string {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, name, "want a mapping of label to value, e.g. {pdu: p3}, got %s", kindName(n))
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k == nil || v == nil || k.Kind != yaml.ScalarNode {
			continue
		}
		if _, dup := out[k.Value]; dup {
			d.errorf(k, name, "label %q is defined twice", k.Value)
			continue
		}
		if s, ok := d.scalar(name+"."+k.Value, v, "a label value, e.g. p3"); ok {
			out[k.Value] = s
		}
	}
	return out
}

package znodes

// Agent labels: every agent has a rack and a data center (agent --rack,
// --dc); its config may add others (labels: {pdu: p3}). A service's
// upgrade domain (spec domain) names one of them.
const (
	LabelRack = "rack"
	LabelDC   = "dc"
	// NoLabel is the value of a label a machine does not have: such
	// machines form one domain (or wave) of their own.
	NoLabel = "(none)"
)

// LabelValue returns the value of label name for a machine in rack and
// dc with labels, or NoLabel.
func LabelValue(name, rack, dc string, labels map[string]string) string {
	v := ""
	switch name {
	case LabelRack:
		v = rack
	case LabelDC:
		v = dc
	default:
		v = labels[name]
	}
	if v == "" {
		return NoLabel
	}
	return v
}

// Label returns member m's value of label name (NoLabel when unknown):
// from its registration when it is registered, else from its member
// record (an absent member), else from its step record.
func (m MemberState) Label(name string) string {
	dc, labels := "", map[string]string(nil)
	switch {
	case m.Current != nil:
		dc, labels = m.Current.DC, m.Current.Labels
	case m.Member != nil:
		dc, labels = m.Member.DC, m.Member.Labels
	case m.Down != nil:
		dc, labels = m.Down.DC, m.Down.Labels
	}
	if m.Current != nil && m.Member != nil {
		if dc == "" {
			dc = m.Member.DC
		}
		if labels == nil {
			labels = m.Member.Labels
		}
	}
	return LabelValue(name, m.Rack, dc, labels)
}

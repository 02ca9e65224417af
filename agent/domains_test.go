package agent

import (
	"strings"
	"testing"

	"dcroll/spec"
	"dcroll/znodes"
)

// Upgrade domains and waves in the decision table. The fixture of
// decide_test.go: m1 (this machine) m2 m3 in rack r1, m4 m5 in r2, m1
// holds the turn and may step.

// withDomain gives HEAD's service an upgrade domain.
func withDomain(label string) func(*Snapshot) {
	return func(s *Snapshot) { s.Head.Domain = label }
}

// withWaves gives HEAD's service waves: none named is "dc".
func withWaves(order ...string) func(*Snapshot) {
	return func(s *Snapshot) {
		if len(order) == 0 {
			order = nil
		}
		s.Head.Waves = &spec.Waves{Order: order}
	}
}

// opened writes what the coordinator opened into the active entry.
func opened(wave, domain string) func(*Snapshot) {
	return func(s *Snapshot) { s.Queue[0].Wave, s.Queue[0].Domain = wave, domain }
}

// inDC places machines (m1 is this machine) in data center dc.
func inDC(dc string, ms ...string) func(*Snapshot) {
	return func(s *Snapshot) {
		for _, m := range ms {
			if m == s.Machine {
				s.DC = dc
			}
			for i := range s.Current {
				if s.Current[i].Machine == m {
					s.Current[i].DC = dc
				}
			}
			for i := range s.Members {
				if s.Members[i].Machine == m {
					s.Members[i].DC = dc
				}
			}
		}
	}
}

// labelled gives machines label=value, in their registration and member
// record (and, for m1, in the snapshot's own labels).
func labelled(label, value string, ms ...string) func(*Snapshot) {
	set := func(l *map[string]string) {
		if *l == nil {
			*l = map[string]string{}
		}
		(*l)[label] = value
	}
	return func(s *Snapshot) {
		for _, m := range ms {
			if m == s.Machine {
				set(&s.Labels)
			}
			for i := range s.Current {
				if s.Current[i].Machine == m {
					set(&s.Current[i].Labels)
				}
			}
			for i := range s.Members {
				if s.Members[i].Machine == m {
					set(&s.Members[i].Labels)
				}
			}
		}
	}
}

// moveMe puts this machine (m1) in rack.
func moveMe(rack string) func(*Snapshot) {
	return func(s *Snapshot) {
		s.Rack = rack
		s.Current[0].Rack, s.Members[0].Rack = rack, rack
	}
}

func midStep(ms ...string) func(*Snapshot) {
	return func(s *Snapshot) {
		for _, m := range ms {
			s.Down = append(s.Down, down(m))
		}
	}
}

func notHolding(s *Snapshot) { s.HoldsTurn = false }

// bystander: a machine that does not hold the turn reads only its own nodes.
func bystander(s *Snapshot) {
	s.HoldsTurn, s.FleetPartial = false, true
	s.Members, s.Current, s.Down = s.Members[:1], s.Current[:1], nil
}

func TestDecideDomains(t *testing.T) {
	runDecide(t, []decideRow{
		// Nothing opened yet: the coordinator opens the first within a tick.
		{"domain: none open yet: wait", all(withDomain("rack"), notHolding),
			Wait, "v2", "waiting for the coordinator to open the first domain", ""},
		{"domain: none open yet, holding the turn: give it back", withDomain("rack"),
			ReleaseTurn, "v2", "waiting for the coordinator to open the first domain; giving the turn back", ""},
		{"waves: none open yet: wait", all(withWaves(), notHolding),
			Wait, "v2", "waiting for the coordinator to open the first wave", ""},
		{"waves and domain: wave open, domain not yet: wait", all(withWaves(), withDomain("rack"), opened(znodes.NoLabel, ""), notHolding),
			Wait, "v2", "waiting for the coordinator to open the first domain", ""},

		// domain: rack.
		{"domain rack: mine open: go", all(withDomain("rack"), opened("", "r1")),
			SpendAndStep, "v2", "upgrade v1 -> v2", ""},
		{"domain rack: another open, mine after it: wait", all(withDomain("rack"), moveMe("r3"), opened("", "r1"), notHolding),
			Wait, "v2", "domain rack r3 goes after r1 (open now)", ""},
		{"domain rack: another open, mine before it: wait", all(withDomain("rack"), opened("", "r2"), notHolding),
			Wait, "v2", "domain rack r1 goes before r2 (open now): waiting for the coordinator to reopen it", ""},
		{"domain rack: another open while holding the turn: give it back", all(withDomain("rack"), opened("", "r2")),
			ReleaseTurn, "v2", "domain rack r1 goes before r2 (open now): waiting for the coordinator to reopen it; giving the turn back", ""},
		{"domain rack: mine open, not holding: take the turn", all(withDomain("rack"), opened("", "r1"), notHolding),
			TakeTurn, "v2", "ready to upgrade", ""},
		{"domain rack: a bystander of another domain waits, never counting", all(withDomain("rack"), opened("", "r2"), bystander),
			Wait, "v2", "domain rack r1 goes before r2 (open now)", ""},
		{"domain rack: a bystander of the open domain queues", all(withDomain("rack"), opened("", "r1"), bystander),
			TakeTurn, "v2", "ready to upgrade", ""},
		{"domain rack: one of mine mid-step, max_parallel 2: go together", all(withDomain("rack"), opened("", "r1"), maxPar(2), midStep("m2")),
			SpendAndStep, "v2", "4 of 5 members available, 3 needed after me", ""},
		{"domain rack: two of mine mid-step, max_parallel 2: wait", all(withDomain("rack"), opened("", "r1"), maxPar(2), midStep("m2", "m3"),
			func(s *Snapshot) { s.Head.Quorum = spec.Quorum{Count: 1} }),
			Wait, "v2", "max_parallel 2: 2 other member(s) unavailable", ""},
		{"domain rack: quorum caps the batch below max_parallel: wait", all(withDomain("rack"), opened("", "r1"), maxPar(3), midStep("m2"),
			func(s *Snapshot) { s.Head.Quorum = spec.Quorum{Count: 4} }),
			Wait, "v2", "quorum: 4 of 5 members available, need 4 after me", ""},
		{"domain rack: another domain still mid-step: wait", all(withDomain("rack"), opened("", "r1"), maxPar(2), midStep("m4")),
			Wait, "v2", "one domain at a time: rack r2 has m4 mid-step", ""},

		// domain: pdu (an agent label): the rack does not matter any more.
		{"domain pdu: a machine of my pdu in another rack mid-step: go", all(withDomain("pdu"), labelled("pdu", "p1", "m1", "m2", "m4"),
			labelled("pdu", "p2", "m3", "m5"), opened("", "p1"), maxPar(2), midStep("m4")),
			SpendAndStep, "v2", "upgrade v1 -> v2", ""},
		{"domain pdu: a machine of another pdu in my rack mid-step: wait", all(withDomain("pdu"), labelled("pdu", "p1", "m1", "m4"),
			labelled("pdu", "p2", "m2", "m3", "m5"), opened("", "p1"), maxPar(2), midStep("m2")),
			Wait, "v2", "one domain at a time: pdu p2 has m2 mid-step", ""},
		{"domain pdu: an absent member's pdu comes from its member record", all(withDomain("pdu"), labelled("pdu", "p1", "m1", "m2", "m3"),
			labelled("pdu", "p2", "m4", "m5"), opened("", "p1"), maxPar(2), absent("m4")),
			Wait, "v2", "one domain at a time: pdu p2 has m4 absent", ""},
		{"domain pdu: this machine has no pdu label", all(withDomain("pdu"), labelled("pdu", "p1", "m2", "m3", "m4", "m5"), opened("", "p1"), notHolding),
			Wait, "v2", "domain pdu (none) goes before p1 (open now)", ""},
		{"domain pdu: unlabelled machines form a domain of their own", all(withDomain("pdu"), opened("", znodes.NoLabel)),
			SpendAndStep, "v2", "upgrade v1 -> v2", ""},

		// waves.
		{"waves dc: mine open: go", all(withWaves(), inDC("dc-east", "m1", "m2", "m3"), inDC("dc-west", "m4", "m5"), opened("dc-east", "")),
			SpendAndStep, "v2", "upgrade v1 -> v2", ""},
		{"waves dc: another open, mine after it: wait", all(withWaves(), inDC("dc-west", "m1", "m2", "m3"), inDC("dc-east", "m4", "m5"), opened("dc-east", ""), notHolding),
			Wait, "v2", "waves: dc-west goes after dc-east (open now)", ""},
		{"waves list: its order, not the names'", all(withWaves("dc-west", "dc-east"), inDC("dc-east", "m1", "m2", "m3"), inDC("dc-west", "m4", "m5"), opened("dc-west", ""), notHolding),
			Wait, "v2", "waves: dc-east goes after dc-west (open now)", ""},
		{"waves list: mine first but another open (I came back): wait for it to reopen", all(withWaves("dc-east", "dc-west"), inDC("dc-east", "m1"), opened("dc-west", ""), notHolding),
			Wait, "v2", "waves: dc-east goes before dc-west (open now): waiting for the coordinator to reopen it", ""},
		{"waves dc: the rack rule still holds inside a wave", all(withWaves(), opened(znodes.NoLabel, ""), maxPar(2), midStep("m4")),
			Wait, "v2", "one rack at a time: rack r2 has m4 mid-step", ""},
		{"waves and domain: wave and domain mine: go", all(withWaves(), withDomain("rack"), inDC("dc-east", "m1", "m2", "m3", "m4", "m5"), opened("dc-east", "r1")),
			SpendAndStep, "v2", "upgrade v1 -> v2", ""},
		{"waves and domain: my wave, another domain: wait", all(withWaves(), withDomain("rack"), inDC("dc-east", "m1", "m2", "m3", "m4", "m5"), opened("dc-east", "r2"), notHolding),
			Wait, "v2", "domain rack r1 goes before r2 (open now)", ""},
		{"waves and domain: the wave decides first", all(withWaves(), withDomain("rack"), inDC("dc-west", "m1"), opened("dc-east", "r1"), notHolding),
			Wait, "v2", "waves: dc-west goes after dc-east (open now)", ""},

		// Without domain or waves the entry's fields change nothing.
		{"no domain: a stale open domain is ignored", opened("dc-x", "r9"), SpendAndStep, "v2", "upgrade v1 -> v2", ""},
		{"domain rack: another service's entry is not looked at", all(withDomain("rack"), func(s *Snapshot) {
			other := entry("d-0000000000", "db", znodes.DeployRolling)
			s.Queue = append([]Entry{other}, s.Queue...)
		}), Wait, "v2", "waiting for service db to finish", ""},
		{"domain rack: halted wins", all(withDomain("rack"), func(s *Snapshot) { s.Queue[0].State = znodes.DeployHalted }),
			Wait, "v2", "halted", ""},
	})
}

func TestDomainValue(t *testing.T) {
	s := base()
	s.DC, s.Labels = "par1", map[string]string{"pdu": "p3"}
	for label, want := range map[string]string{"": "r1", "rack": "r1", "dc": "par1", "pdu": "p3", "zone": znodes.NoLabel} {
		s.Head.Domain = label
		if got := domainValue(s, nil); got != want {
			t.Errorf("domain %q: own value %q, want %q", label, got, want)
		}
	}
	// Another member: its registration, else its member record.
	ms := znodes.MemberState{Machine: "m9", Rack: "r4",
		Member:  &znodes.Member{DC: "ams1", Labels: map[string]string{"pdu": "old"}},
		Current: &znodes.Current{DC: "par2", Labels: map[string]string{"pdu": "p7"}}}
	s.Head.Domain = "pdu"
	if got := domainValue(s, &ms); got != "p7" {
		t.Errorf("registered member: %q, want p7", got)
	}
	ms.Current = nil
	if got := domainValue(s, &ms); got != "old" {
		t.Errorf("absent member: %q, want its member record's old", got)
	}
	s.Head.Domain = "dc"
	if got := domainValue(s, &ms); got != "ams1" {
		t.Errorf("absent member dc: %q, want ams1", got)
	}
	s.Head = nil // a removal: the rack
	if got := domainValue(s, &ms); got != "r4" {
		t.Errorf("removal: %q, want the rack r4", got)
	}
}

func TestConfigLabels(t *testing.T) {
	cfg, err := ParseConfig("agent.yaml", []byte("machine: m1\nlabels: {pdu: p3, power-feed: a}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Labels["pdu"] != "p3" || cfg.Labels["power-feed"] != "a" || len(cfg.Labels) != 2 {
		t.Fatalf("labels %v", cfg.Labels)
	}
	for in, want := range map[string]string{
		"labels: [pdu]\n":             `agent.yaml:1: labels: want a mapping of label to value, e.g. {pdu: p3}, got a list`,
		"labels:\n  pdu: [p3]\n":      `agent.yaml:2: labels.pdu: want a label value, e.g. p3, got a list`,
		"labels:\n  pdu: a\n  pdu: b": `agent.yaml:3: labels: label "pdu" is defined twice`,
		"lables: {pdu: p3}\n":         `did you mean "labels"?`,
	} {
		if _, err := ParseConfig("agent.yaml", []byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %s", in, err, want)
		}
	}
	for labels, want := range map[string]string{
		"rack=r1":  "labels.rack: set it with rack: (or --rack), not as a label",
		"PDU=p3":   `labels: "PDU" is not a label name`,
		"pdu=p/3":  `labels.pdu: "p/3" is not a label value`,
		"pdu=":     `labels.pdu: "" is not a label value`,
		"dc=par1":  "labels.dc: set it with dc:",
		"pdu=p3.a": "",
	} {
		k, v, _ := strings.Cut(labels, "=")
		errs := labelErrors(map[string]string{k: v})
		switch {
		case want == "" && errs != nil:
			t.Errorf("%s: %v", labels, errs)
		case want != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), want)):
			t.Errorf("%s: %v, want %s", labels, errs, want)
		}
	}
}

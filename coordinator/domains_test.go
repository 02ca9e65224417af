package coordinator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/spec"
	"dcroll/znodes"
)

// domainFleet describes members compactly: "m1:dc-a/r1:done" is m1 in
// data center dc-a, rack r1, done with the entry; other states: old
// (registered on the old version), step (mid-step), absent (member record
// only), absent+step (a step record without a registration). A fourth
// field sets the label pdu: "m1:dc-a/r1:done:p2".
func domainFleet(e znodes.DeployEntry, specs ...string) []znodes.MemberState {
	var f znodes.Fleet
	for _, s := range specs {
		parts := strings.Split(s, ":")
		m, loc, state := parts[0], parts[1], parts[2]
		dc, rack, _ := strings.Cut(loc, "/")
		var labels map[string]string
		if len(parts) > 3 {
			labels = map[string]string{"pdu": parts[3]}
		}
		f.Members = append(f.Members, znodes.Member{Machine: m, Rack: rack, DC: dc, Labels: labels})
		cur := znodes.Current{Machine: m, Rack: rack, DC: dc, Labels: labels, State: znodes.StateRunning, Healthy: true,
			Version: "1", SpecID: "old"}
		switch state {
		case "done":
			cur.Version, cur.SpecID = e.Version, e.SpecID
			f.Current = append(f.Current, cur)
		case "old":
			f.Current = append(f.Current, cur)
		case "step":
			cur.State, cur.Healthy = znodes.StateUpgrading, false
			f.Current = append(f.Current, cur)
			f.Down = append(f.Down, znodes.Down{Machine: m, Rack: rack})
		case "absent":
		case "absent+step":
			f.Down = append(f.Down, znodes.Down{Machine: m, Rack: rack})
		default:
			panic("domainFleet: state " + state)
		}
	}
	return f.States()
}

func TestOpenDomains(t *testing.T) {
	svc := func(domain string, waves ...string) *spec.Service {
		s := &spec.Service{Version: "2", Domain: domain}
		switch {
		case len(waves) == 1 && waves[0] == "dc":
			s.Waves = &spec.Waves{}
		case len(waves) > 0:
			s.Waves = &spec.Waves{Order: waves}
		}
		return s
	}
	six := func(states ...string) []string { // m1..m6: r1 m1 m2, r2 m3 m4, r3 m5 m6; dc-a r1 r2, dc-b r3
		loc := []string{"dc-a/r1", "dc-a/r1", "dc-a/r2", "dc-a/r2", "dc-b/r3", "dc-b/r3"}
		out := make([]string, len(states))
		for i, s := range states {
			out[i] = fmt.Sprintf("m%d:%s:%s", i+1, loc[i], s)
		}
		return out
	}
	for _, tc := range []struct {
		name                 string
		svc                  *spec.Service
		wasWave, wasDomain   string
		kind                 string
		fleet                []string
		wantWave, wantDomain string
	}{
		{"no domain, no waves: nothing written", svc(""), "", "", "", six("old", "old", "old", "old", "old", "old"), "", ""},
		{"domain rack: the first rack opens", svc("rack"), "", "", "", six("old", "old", "old", "old", "old", "old"), "", "r1"},
		{"domain rack: r1 mid-step stays open", svc("rack"), "", "r1", "", six("done", "step", "old", "old", "old", "old"), "", "r1"},
		{"domain rack: r1 done, r2 opens", svc("rack"), "", "r1", "", six("done", "done", "old", "old", "old", "old"), "", "r2"},
		{"domain rack: an absent member does not hold r1 open", svc("rack"), "", "r1", "", six("done", "absent", "old", "old", "old", "old"), "", "r2"},
		{"domain rack: an absent member's step record holds r1 open", svc("rack"), "", "r1", "", six("done", "absent+step", "old", "old", "old", "old"), "", "r1"},
		{"domain rack: a member back in r1 waits for r2 to finish", svc("rack"), "", "r2", "", six("done", "old", "done", "old", "old", "old"), "", "r2"},
		{"domain rack: a step record in r1 reopens it first", svc("rack"), "", "r2", "", six("done", "step", "done", "old", "old", "old"), "", "r1"},
		{"domain rack: r2 done, the member back in r1 before r3", svc("rack"), "", "r2", "", six("done", "old", "done", "done", "old", "old"), "", "r1"},
		{"domain rack: every member done: kept as is", svc("rack"), "", "r3", "", six("done", "done", "done", "done", "done", "absent"), "", "r3"},
		{"domain rack: a removal is not shaped", svc("rack"), "", "", znodes.KindRemoved, six("old", "old", "old", "old", "old", "old"), "", ""},

		{"waves dc: the first data center by name", svc("", "dc"), "", "", "", six("old", "old", "old", "old", "old", "old"), "dc-a", ""},
		{"waves dc: dc-a unfinished holds dc-b back", svc("", "dc"), "dc-a", "", "", six("done", "done", "done", "old", "old", "old"), "dc-a", ""},
		{"waves dc: dc-a done, dc-b opens", svc("", "dc"), "dc-a", "", "", six("done", "done", "done", "done", "old", "old"), "dc-b", ""},
		{"waves list: its order", svc("", "dc-b", "dc-a"), "", "", "", six("old", "old", "old", "old", "old", "old"), "dc-b", ""},
		{"waves list: unlisted data centers go last", svc("", "dc-b"), "dc-b", "", "", six("old", "old", "old", "old", "done", "done"), "dc-a", ""},
		{"waves and domain: first rack of the first wave", svc("rack", "dc"), "", "", "", six("old", "old", "old", "old", "old", "old"), "dc-a", "r1"},
		{"waves and domain: next rack in the wave", svc("rack", "dc"), "dc-a", "r1", "", six("done", "done", "old", "old", "old", "old"), "dc-a", "r2"},
		{"waves and domain: next wave starts with its first rack", svc("rack", "dc"), "dc-a", "r2", "", six("done", "done", "done", "done", "old", "old"), "dc-b", "r3"},
		{"waves list and domain: reverse order", svc("rack", "dc-b", "dc-a"), "", "", "", six("old", "old", "old", "old", "old", "old"), "dc-b", "r3"},

		{"domain pdu: by label value", svc("pdu"), "", "", "",
			[]string{"m1:dc-a/r1:old:p2", "m2:dc-a/r1:old:p1", "m3:dc-a/r2:old:p2"}, "", "p1"},
		{"domain pdu: unlabelled machines are a domain of their own", svc("pdu"), "", "p1", "",
			[]string{"m1:dc-a/r1:old", "m2:dc-a/r1:done:p1", "m3:dc-a/r2:old:p2"}, "", znodes.NoLabel},
		{"waves dc: machines without a data center", svc("", "dc"), "", "", "",
			[]string{"m1:/r1:old", "m2:dc-a/r1:done"}, znodes.NoLabel, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := znodes.DeployEntry{Service: "db", Version: "2", SpecID: "new", Kind: orStr(tc.kind, "upgrade"), State: znodes.DeployRolling,
				Wave: tc.wasWave, Domain: tc.wasDomain}
			w, d := OpenDomains(e, tc.svc, domainFleet(e, tc.fleet...))
			if w != tc.wantWave || d != tc.wantDomain {
				t.Errorf("OpenDomains = wave %q domain %q, want %q %q", w, d, tc.wantWave, tc.wantDomain)
			}
		})
	}
}

func orStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// TestAdvancerOpensDomains: the leader writes the open domain into the
// entry with a versioned set, and moves on when the domain is done.
func TestAdvancerOpensDomains(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	v1 := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(ctx, c, v1, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	markAllDone(t, c)
	v2 := mustSpec(t, strings.Replace(specYAML("v2", "2", blobC, "1", blobB, "64"), "    quorum: 2\n", "    quorum: 2\n    domain: rack\n", 1))
	if _, err := Push(ctx, c, v2, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	p := c.Paths()
	register := func(m, rack, version, specID string) {
		t.Helper()
		for _, dir := range []string{p.Members("db"), p.Current("db")} {
			if err := c.EnsurePath(dir); err != nil {
				t.Fatal(err)
			}
		}
		cur := &znodes.Current{Machine: m, Service: "db", Rack: rack, Version: version, SpecID: specID, State: znodes.StateRunning, Healthy: true}
		if _, err := c.ZK().Set(p.CurrentMachine("db", m), znodes.MustEncode(cur), -1); err == nil {
			return
		}
		if _, err := c.Create(p.Member("db", m), znodes.MustEncode(&znodes.Member{Machine: m, Service: "db", Rack: rack}), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Create(p.CurrentMachine("db", m), znodes.MustEncode(cur), zk.FlagEphemeral); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []string{"m1", "m2"} {
		register(m, "r2", "1", v1.ID())
	}
	for _, m := range []string{"m3", "m4"} {
		register(m, "r1", "1", v1.ID())
	}
	now := time.Now()
	a := newAdvancer(c, &now, time.Hour)
	open := func() string {
		t.Helper()
		if _, err := a.advance(); err != nil {
			t.Fatal(err)
		}
		q, err := ReadQueue(c)
		if err != nil {
			t.Fatal(err)
		}
		e := Active(q)
		if e == nil {
			return "none active"
		}
		return e.Service + ":" + e.Domain
	}
	if got := open(); got != "db:r1" {
		t.Fatalf("open = %s, want db:r1", got)
	}
	register("m3", "r1", "2", v2.ID())
	if got := open(); got != "db:r1" {
		t.Fatalf("open with m4 not done = %s, want db:r1", got)
	}
	register("m4", "r1", "2", v2.ID())
	if got := open(); got != "db:r2" {
		t.Fatalf("open with r1 done = %s, want db:r2", got)
	}
	register("m1", "r2", "2", v2.ID())
	register("m2", "r2", "2", v2.ID())
	if got := open(); got != "none active" {
		t.Fatalf("after db = %s, want db done (api is unchanged)", got)
	}
}

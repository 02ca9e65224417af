package znodes

import "testing"

func TestDeployEntryCompletedBy(t *testing.T) {
	e := DeployEntry{Service: "db", Version: "2", SpecID: "s2"}
	run := func(v, id string, healthy bool) Current {
		return Current{Version: v, SpecID: id, Healthy: healthy, State: StateRunning}
	}
	cases := []struct {
		name string
		cur  []Current
		down int
		want bool
	}{
		{"all upgraded", []Current{run("2", "s2", true), run("2", "s2", true)}, 0, true},
		{"one behind", []Current{run("2", "s2", true), run("1", "s1", true)}, 0, false},
		{"one unhealthy", []Current{run("2", "s2", true), run("2", "s2", false)}, 0, false},
		{"old spec id", []Current{run("2", "s1", true)}, 0, false},
		{"down marker left", []Current{run("2", "s2", true)}, 1, false},
		{"no machines", nil, 0, false},
	}
	for _, tc := range cases {
		if got := e.CompletedBy(Fleet{Current: tc.cur, Down: make([]Down, tc.down)}); got != tc.want {
			t.Errorf("%s: CompletedBy = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestFleetMembership(t *testing.T) {
	run := func(m, v string, healthy bool) Current {
		return Current{Machine: m, Rack: "r1", Version: v, SpecID: "s2", Healthy: healthy, State: StateRunning}
	}
	member := func(m, rack string) Member { return Member{Machine: m, Rack: rack, Version: "1"} }
	e := DeployEntry{Service: "db", Version: "2", SpecID: "s2"}
	f := Fleet{
		Members: []Member{member("m1", "r1"), member("m2", "r1"), member("m3", "r2")},
		Current: []Current{run("m1", "2", true), run("m2", "2", true)},
	}
	total, avail, unavail := f.Count()
	if total != 3 || avail != 2 || len(unavail) != 1 || unavail[0].Machine != "m3" || unavail[0].Rack != "r2" {
		t.Fatalf("Count = %d %d %+v, want 3 members, 2 available, m3 (r2) absent", total, avail, unavail)
	}
	if why := unavail[0].Why(); why == "" || why[:6] != "absent" {
		t.Errorf("Why = %q, want absent ...", why)
	}
	if e.CompletedBy(f) {
		t.Errorf("completed with member m3 absent")
	}
	f.Current = append(f.Current, run("m3", "2", true))
	if !e.CompletedBy(f) {
		t.Errorf("not completed with every member on 2")
	}
	// A step record counts the machine as a member even without a record.
	f.Down = []Down{{Machine: "m4", Rack: "r2", Kind: "upgrade", From: "1", To: "2"}}
	if total, _, _ := f.Count(); total != 4 || e.CompletedBy(f) {
		t.Errorf("step record of a machine without a member record: total %d, completed %v", total, e.CompletedBy(f))
	}
	// A registration without a member record counts too.
	g := Fleet{Current: []Current{run("m9", "2", false)}}
	if total, avail, _ := g.Count(); total != 1 || avail != 0 {
		t.Errorf("registration only: %d/%d", avail, total)
	}
	// Removal: complete when every member reports its service stopped.
	rm := DeployEntry{Service: "db", Kind: KindRemoved, SpecID: "s3"}
	stopped := Current{Machine: "m1", State: StateStopped}
	h := Fleet{Members: []Member{member("m1", "r1"), member("m2", "r1")}, Current: []Current{stopped}}
	if rm.CompletedBy(h) {
		t.Errorf("removal complete with m2 absent")
	}
	h.Current = append(h.Current, Current{Machine: "m2", State: StateStopped})
	if !rm.CompletedBy(h) {
		t.Errorf("removal not complete with every member stopped")
	}
}

func TestSettingsHashAndBadKey(t *testing.T) {
	a := SettingsHash(map[string]string{"a": "1", "b": "2"})
	b := SettingsHash(map[string]string{"b": "2", "a": "1"})
	if a != b || len(a) != 12 {
		t.Errorf("SettingsHash not order-independent or not 12 hex: %q %q", a, b)
	}
	if SettingsHash(nil) != "" || SettingsHash(map[string]string{"a": "2", "b": "1"}) == a {
		t.Errorf("SettingsHash: empty must be \"\", different settings must differ")
	}
	if BadKey("abc", "") != "abc" || BadKey("abc", a) != "abc-s"+a {
		t.Errorf("BadKey = %q %q", BadKey("abc", ""), BadKey("abc", a))
	}
}

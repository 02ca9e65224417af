package coordinator

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/spec"
	"dcroll/znodes"
)

// planMemberIn is planMember with a data center and labels.
func planMemberIn(t *testing.T, c *znodes.Conn, svc, m, dc, rack string, labels map[string]string) {
	t.Helper()
	p := c.Paths()
	for _, dir := range []string{p.Members(svc), p.Current(svc)} {
		if err := c.EnsurePath(dir); err != nil {
			t.Fatal(err)
		}
	}
	mem := &znodes.Member{Machine: m, Service: svc, Rack: rack, DC: dc, Labels: labels, Version: "1"}
	if _, err := c.Create(p.Member(svc, m), znodes.MustEncode(mem), 0); err != nil {
		t.Fatal(err)
	}
	cur := &znodes.Current{Machine: m, Service: svc, Rack: rack, DC: dc, Labels: labels, Version: "1", State: znodes.StateRunning, Healthy: true}
	if _, err := c.Create(p.CurrentMachine(svc, m), znodes.MustEncode(cur), zk.FlagEphemeral); err != nil {
		t.Fatal(err)
	}
}

// TestPlanDomainsAndWaves: dcroll plan (and push --dry-run) shows the
// batches of a service with waves and a domain: data center after data
// center, domain after domain, each as a whole as far as max_parallel and
// the quorum allow, and times the night with them.
func TestPlanDomainsAndWaves(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	v1 := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(ctx, c, v1, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	markAllDone(t, c)
	// dc-2: r3 (m5 m6); dc-1: r1 (m1 m2 m3), r2 (m4). Listed first: dc-2.
	for _, m := range []struct{ name, dc, rack string }{
		{"m1", "dc-1", "r1"}, {"m2", "dc-1", "r1"}, {"m3", "dc-1", "r1"}, {"m4", "dc-1", "r2"}, {"m5", "dc-2", "r3"}, {"m6", "dc-2", "r3"},
	} {
		planMemberIn(t, c, "db", m.name, m.dc, m.rack, nil)
	}
	shaped := func(fields string) *spec.Spec {
		return mustSpec(t, strings.Replace(specYAML("v2", "2", blobC, "1", blobB, "64"), "quorum: 2",
			"quorum: 3\n    max_parallel: 50\n    health: {tcp: \"127.0.0.1:1\", min_healthy: 10s}\n"+fields, 1))
	}
	np, err := PlanNight(ctx, c, shaped("    domain: rack\n    waves: [dc-2, dc-1]\n"), planNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(np.Warnings) != 0 || len(np.Services) != 1 {
		t.Fatalf("warnings %+v services %d", np.Warnings, len(np.Services))
	}
	s := np.Services[0]
	type batch struct{ wave, domain, machines string }
	var got []batch
	for _, b := range s.Batches {
		got = append(got, batch{b.Wave, b.Domain, strings.Join(b.Machines, ",")})
	}
	// 6 members, quorum 3: 3 at once (max_parallel 50 capped by the quorum).
	want := []batch{{"dc-2", "r3", "m5,m6"}, {"dc-1", "r1", "m1,m2,m3"}, {"dc-1", "r2", "m4"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
	wantDomains := []PlanDomain{{"dc-2", "r3", 2, 2, 1}, {"dc-1", "r1", 3, 3, 1}, {"dc-1", "r2", 1, 1, 1}}
	if !reflect.DeepEqual(s.Domains, wantDomains) || !slices.Equal(s.WaveOrder, []string{"dc-2", "dc-1"}) || s.Domain != "rack" || s.Waves != "[dc-2, dc-1]" {
		t.Fatalf("domains %+v waves %q %v", s.Domains, s.Waves, s.WaveOrder)
	}
	step := 10*time.Second + PlanStepOverhead
	if !np.Finish.Equal(planNow.Add(3 * step)) {
		t.Fatalf("finish %s, want 3 batches of %s", np.Finish, step)
	}
	var text bytes.Buffer
	if err := np.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Logf("plan:\n%s", text.String())
	for _, w := range []string{
		"  waves [dc-2, dc-1]: dc-2 -> dc-1\n",
		"  domain rack (one domain at a time): dc-2/r3 (2 members, 2 at once, 1 batch) -> dc-1/r1 (3 members, 3 at once, 1 batch) -> dc-1/r2 (1 members, 1 at once, 1 batch)\n",
		"BATCH  WAVE  DOMAIN RACK  RACK",
		"  2      dc-1  r1           r1    m1,m2,m3",
	} {
		if !strings.Contains(text.String(), w) {
			t.Errorf("text lacks %q:\n%s", w, text.String())
		}
	}

	// waves: dc alone keeps the one-rack rule and max_parallel batches.
	np, err = PlanNight(ctx, c, shaped("    waves: dc\n"), planNow)
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, b := range np.Services[0].Batches {
		got = append(got, batch{b.Wave, b.Rack, strings.Join(b.Machines, ",")})
	}
	if want := []batch{{"dc-1", "r1", "m1,m2,m3"}, {"dc-1", "r2", "m4"}, {"dc-2", "r3", "m5,m6"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("waves dc batches %v, want %v", got, want)
	}

	// A waves list that omits a data center, a domain label nobody has.
	np, err = PlanNight(ctx, c, shaped("    domain: pdu\n    waves: [dc-2]\n"), planNow)
	if err != nil {
		t.Fatal(err)
	}
	if codes := warningCodes(np); !slices.Equal(codes, []string{WarnWaveUnlisted, WarnDomainLabel}) {
		t.Fatalf("warnings %v", np.Warnings)
	}
	if w := np.Warnings[0].Message; !strings.Contains(w, "go last: dc-1") {
		t.Errorf("unlisted warning %q", w)
	}
}

// TestPlanGroupsAtOnce: a domain of 50 with max_parallel 50 is one batch;
// the quorum caps how many go at once; without a domain it stays
// max_parallel per rack.
func TestPlanGroupsAtOnce(t *testing.T) {
	var f znodes.Fleet
	for i := range 100 {
		rack := fmt.Sprintf("r%d", i/50+1)
		f.Current = append(f.Current, znodes.Current{Machine: fmt.Sprintf("m%03d", i), Rack: rack, State: znodes.StateRunning, Healthy: true})
	}
	states := f.States()
	nowarn := func(code, svc, format string, a ...any) {
		t.Errorf("warning %s: "+format, append([]any{code}, a...)...)
	}
	for _, tc := range []struct {
		name       string
		domain     string
		maxPar     int
		quorumMin  int
		wantPer    int
		wantGroups int
	}{
		{"domain rack, max_parallel 50, no quorum: one batch per rack", "rack", 50, 0, 50, 2},
		{"domain rack, quorum 90 of 100: 10 at once", "rack", 50, 90, 10, 2},
		{"domain rack, quorum leaves none: 1 at once (and a headroom warning)", "rack", 50, 100, 1, 2},
		{"no domain: max_parallel", "", 5, 0, 5, 2},
	} {
		s := ServicePlan{Service: "db", MaxParallel: tc.maxPar, QuorumMin: tc.quorumMin}
		svc := &spec.Service{MaxParallel: tc.maxPar, Domain: tc.domain}
		groups, per := planGroups(&s, svc, states, false, nowarn)
		if per != tc.wantPer || len(groups) != tc.wantGroups || len(groups[0].members) != 50 {
			t.Errorf("%s: per %d groups %d, want %d %d", tc.name, per, len(groups), tc.wantPer, tc.wantGroups)
		}
		if tc.domain != "" && (len(s.Domains) != 2 || s.Domains[0].Batches != (50+per-1)/per || s.Domains[0].AtOnce != per) {
			t.Errorf("%s: domains %+v", tc.name, s.Domains)
		}
	}
}

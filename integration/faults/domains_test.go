package faults

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"dcroll/coordinator"
	"dcroll/integration/checker"
	"dcroll/spec"
)

// The "domains" world: six machines, three racks in two data centers
// (dc-1: r1 = m1 m2, r2 = m3 m4; dc-2: r3 = m5 m6); store with quorum 4
// of 6 and max_parallel 2, so a whole rack of two may be down at once.
// Its rows check upgrade domains and waves from the services' own event
// log with checker.CheckDomains and checker.CheckWaves (whose unit tests
// show they catch violations; the agents' unsafe-rules hook does not
// switch domains off, so no negative control runs here).
var (
	domainRacks = map[string]string{"m1": "r1", "m2": "r1", "m3": "r2", "m4": "r2", "m5": "r3", "m6": "r3"}
	domainDCs   = map[string]string{"m1": "dc-1", "m2": "dc-1", "m3": "dc-1", "m4": "dc-1", "m5": "dc-2", "m6": "dc-2"}
	domainOpts  = Options{Racks: domainRacks, DCs: domainDCs,
		Rules: map[string]Rules{"store": {Quorum: spec.Quorum{Count: 4}, MaxParallel: 2}}}
)

// domainMinHealthy is store's min_healthy in the domain rows: an agent
// keeps its step record (and so its domain open) until its instance has
// been healthy that long, so a step lasts from the instance's down until
// at least min_healthy after its up. A restart of hello takes well under
// the time a turn takes to pass (~50-200 ms against ~250 ms), so the two
// instances of a rack are rarely down at the same instant: what the
// protocol promises, and what the rows check, is that their steps
// overlap. domainSettle is how much of min_healthy the checker counts
// (a margin for the agent's first probe, which follows hello's up).
const (
	domainMinHealthy = 1500 * time.Millisecond
	domainSettle     = time.Second
)

func init() {
	table = append(table, domainRows...)
}

var domainRows = []row{
	{
		// domain: rack: every rack goes as a whole (the steps of both its
		// instances overlap), never two racks at once (no step of one
		// overlaps a step of another, settle included), racks in order.
		name:  "20-domain-rack-whole-racks-in-order",
		world: "domains",
		opts:  domainOpts,
		run: func(t *testing.T, s *Scenario) checker.Expect {
			mark, since := s.EventMark(), time.Now()
			s.MustPush(s.Spec("v2-domain-rack", map[string]Svc{"store": {Build: "v2", Domain: "rack", MinHealthy: domainMinHealthy}, "web": {Build: "v1"}}), coordinator.PushOptions{})
			s.WaitCompleted(Converge)
			evs := eventsSince(t, s, mark)
			racks := groupsBy(domainRacks)
			if bad := checker.CheckDomains(evs, "store", since, domainSettle, racks); len(bad) > 0 {
				t.Errorf("domain rack: %d violations:\n%s", len(bad), strings.Join(bad, "\n"))
			}
			logOutages(t, evs, "store", since)
			return checker.Expect{Targets: map[string]string{"store": Version("v2")}, Final: finalOn(domainRacks, map[string]string{"store": Version("v2"), "web": Version("v1")})}
		},
	},
	{
		// waves: dc: no dc-2 instance goes down before every dc-1 instance
		// is up on the new version.
		name:  "21-waves-dc-one-dc-after-another",
		world: "domains",
		opts:  domainOpts,
		run: func(t *testing.T, s *Scenario) checker.Expect {
			mark, since := s.EventMark(), time.Now()
			s.MustPush(s.Spec("v4-waves-dc", map[string]Svc{"store": {Build: "v4", Waves: &spec.Waves{}}, "web": {Build: "v1"}}), coordinator.PushOptions{})
			s.WaitCompleted(Converge)
			evs := eventsSince(t, s, mark)
			if bad := checker.CheckWaves(evs, "store", Version("v4"), since, groupsBy(domainDCs)); len(bad) > 0 {
				t.Errorf("waves dc: %d violations:\n%s", len(bad), strings.Join(bad, "\n"))
			}
			logOutages(t, evs, "store", since)
			return checker.Expect{Targets: map[string]string{"store": Version("v4")}, Final: finalOn(domainRacks, map[string]string{"store": Version("v4"), "web": Version("v1")})}
		},
	},
	{
		// Both, with an explicit wave list in reverse: dc-2 (r3) first,
		// then dc-1 rack by rack.
		name:  "22-waves-list-and-domain-rack",
		world: "domains",
		opts:  domainOpts,
		run: func(t *testing.T, s *Scenario) checker.Expect {
			mark, since := s.EventMark(), time.Now()
			svc := Svc{Build: "v2", Domain: "rack", Waves: &spec.Waves{Order: []string{"dc-2", "dc-1"}}, MinHealthy: domainMinHealthy}
			s.MustPush(s.Spec("v2-waves-list-domain", map[string]Svc{"store": svc, "web": {Build: "v1"}}), coordinator.PushOptions{})
			s.WaitCompleted(Converge)
			evs := eventsSince(t, s, mark)
			dcs := groupsBy(domainDCs)
			dcs[0], dcs[1] = dcs[1], dcs[0] // dc-2, dc-1
			if bad := checker.CheckWaves(evs, "store", Version("v2"), since, dcs); len(bad) > 0 {
				t.Errorf("waves [dc-2, dc-1]: %d violations:\n%s", len(bad), strings.Join(bad, "\n"))
			}
			racks := groupsBy(domainRacks)
			racks = []checker.Group{racks[2], racks[0], racks[1]} // r3, r1, r2
			if bad := checker.CheckDomains(evs, "store", since, domainSettle, racks); len(bad) > 0 {
				t.Errorf("domain rack in waves: %d violations:\n%s", len(bad), strings.Join(bad, "\n"))
			}
			logOutages(t, evs, "store", since)
			return checker.Expect{Targets: map[string]string{"store": Version("v2")}, Final: finalOn(domainRacks, map[string]string{"store": Version("v2"), "web": Version("v1")})}
		},
	},
}

// eventsSince reads the event log from byte offset mark.
func eventsSince(t *testing.T, s *Scenario, mark int64) []checker.Event {
	t.Helper()
	f, err := os.Open(s.EventLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(mark, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return checker.ParseEvents(data)
}

// logOutages logs every instance's outages of the rollout, in order.
func logOutages(t *testing.T, evs []checker.Event, service string, since time.Time) {
	t.Helper()
	outs := checker.Outages(evs, service, since)
	var lines []string
	for _, m := range sortedKeys(outs) {
		for _, o := range outs[m] {
			lines = append(lines, o.Machine+" "+o.Start.Format("15:04:05.000")+"-"+o.End.Format("15:04:05.000"))
		}
	}
	t.Logf("%s outages: %s", service, strings.Join(lines, ", "))
}

// finalOn is Final for the machines of place.
func finalOn(place map[string]string, versions map[string]string) map[string]map[string]string {
	out := map[string]map[string]string{}
	for svc, v := range versions {
		out[svc] = map[string]string{}
		for m := range place {
			out[svc][m] = v
		}
	}
	return out
}

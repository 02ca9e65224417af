package spec

import (
	"fmt"
	"strings"
	"testing"
)

func TestPlan(t *testing.T) {
	head := deps("api:db", "db", "cache")
	head.Services["db"].Settings = map[string]string{"cache_mb": "512"}

	type edit func(s *Spec)
	tests := []struct {
		name string
		head *Spec
		edit edit
		want []string // "service kind from->to reasons"
	}{
		{"first push", nil, nil, []string{
			"cache new ->1 [new service]", "db new ->1 [new service]", "api new ->1 [new service]"}},
		{"unchanged", head, nil, nil},
		{"upgrade", head, func(s *Spec) { s.Services["db"].Version, s.Services["db"].Artifact = "2", blobB }, []string{
			"db upgrade 1->2 [version changed artifact changed]"}},
		{"artifact only", head, func(s *Spec) { s.Services["api"].Artifact = blobB }, []string{
			"api upgrade 1->1 [artifact changed]"}},
		{"settings only", head, func(s *Spec) { s.Services["db"].Settings["cache_mb"] = "1024" }, []string{
			"db settings 1->1 [settings changed]"}},
		{"settings added", head, func(s *Spec) { s.Services["cache"].Settings = map[string]string{"a": "b"} }, []string{
			"cache settings 1->1 [settings changed]"}},
		{"upgrade with settings", head, func(s *Spec) {
			s.Services["db"].Run = []string{"./db", "-v"}
			s.Services["db"].Settings = nil
		}, []string{"db upgrade 1->1 [run changed settings changed]"}},
		{"data change", head, func(s *Spec) { s.Services["cache"].Data = []string{blobC} }, []string{
			"cache upgrade 1->1 [data changed]"}},
		{"rollout-only fields", head, func(s *Spec) {
			s.Services["db"].Quorum = Quorum{Percent: 50}
			s.Services["db"].MaxParallel = 3
			s.Services["db"].Health = &Health{TCP: "h:1"}
			s.Services["db"].ReloadSignal = "SIGUSR1"
		}, nil},
		{"removed and new", head, func(s *Spec) {
			delete(s.Services, "api")
			delete(s.Services, "db")
			s.Services["web"] = &Service{Version: "9", Artifact: blobC, Run: []string{"./web"}, DependsOn: []string{"cache"}}
			s.Services["cache"].Version = "2" // same build: no restart
		}, []string{"cache settings 1->2 [version label 1 -> 2 with an identical build (same artifact, data and run): no restart; treated as settings-only]",
			"web new ->9 [new service]",
			"api removed 1-> [removed from spec]", "db removed 1-> [removed from spec]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := head.Clone()
			if tt.edit != nil {
				tt.edit(next)
			}
			changes, err := Plan(tt.head, next)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range changes {
				got = append(got, fmt.Sprintf("%s %s %s->%s %v", c.Service, c.Kind, c.From, c.To, c.Reasons))
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestPlanErrors(t *testing.T) {
	if _, err := Plan(nil, nil); err == nil {
		t.Error("nil next: no error")
	}
	if _, err := Plan(nil, deps("a:b", "b:a")); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: %v", err)
	}
}

// TestPlanVersions: a version label that changes with an identical build is a
// settings-only change (agents would otherwise wait for a restart that
// never comes); a build that goes back to an older version says "downgrade".
func TestPlanVersions(t *testing.T) {
	label := func(from, to string) string {
		return "version label " + from + " -> " + to + " with an identical build (same artifact, data and run): no restart; treated as settings-only"
	}
	tests := []struct {
		name     string
		from, to string // versions
		edit     func(s *Service)
		want     string // "kind from->to [reasons]"; "" for no change
	}{
		{"label only", "1.0.0", "1.0.1", nil, "settings 1.0.0->1.0.1 [" + label("1.0.0", "1.0.1") + "]"},
		{"label and settings", "1.0.0", "1.0.1", func(s *Service) { s.Settings["k"] = "w" },
			"settings 1.0.0->1.0.1 [" + label("1.0.0", "1.0.1") + " settings changed]"},
		{"label and health", "1.0.0", "1.0.1", func(s *Service) { s.Health = &Health{TCP: "h:1"} },
			"settings 1.0.0->1.0.1 [" + label("1.0.0", "1.0.1") + "]"},
		{"label back", "2.0.0", "1.0.0", nil, "settings 2.0.0->1.0.0 [" + label("2.0.0", "1.0.0") + "]"},
		{"label, empty data is no data", "1.0.0", "1.0.1", func(s *Service) { s.Data = []string{} },
			"settings 1.0.0->1.0.1 [" + label("1.0.0", "1.0.1") + "]"},
		{"same label, same build", "1.0.0", "1.0.0", func(s *Service) { s.Health = &Health{TCP: "h:1"} }, ""},
		{"upgrade", "1.0.0", "1.0.1", func(s *Service) { s.Artifact = blobB }, "upgrade 1.0.0->1.0.1 [version changed artifact changed]"},
		{"downgrade", "2.0.0", "1.0.0", func(s *Service) { s.Artifact = blobB },
			"upgrade 2.0.0->1.0.0 [downgrade 2.0.0 -> 1.0.0 artifact changed]"},
		{"downgrade, run and settings", "2.0.0", "1.0.0", func(s *Service) { s.Run, s.Settings = []string{"./db", "-old"}, nil },
			"upgrade 2.0.0->1.0.0 [downgrade 2.0.0 -> 1.0.0 run changed settings changed]"},
		{"downgrade numbers not text", "v1.10", "v1.9.5", func(s *Service) { s.Data = []string{blobC} },
			"upgrade v1.10->v1.9.5 [downgrade v1.10 -> v1.9.5 data changed]"},
		{"upgrade numbers not text", "1.9.0", "1.10.0", func(s *Service) { s.Artifact = blobB },
			"upgrade 1.9.0->1.10.0 [version changed artifact changed]"},
		{"release to pre-release", "1.0.0", "1.0.0-rc1", func(s *Service) { s.Artifact = blobB },
			"upgrade 1.0.0->1.0.0-rc1 [downgrade 1.0.0 -> 1.0.0-rc1 artifact changed]"},
		{"pre-release to release", "1.0.0-rc1", "1.0.0", func(s *Service) { s.Artifact = blobB },
			"upgrade 1.0.0-rc1->1.0.0 [version changed artifact changed]"},
		{"labels without order", "green", "blue", func(s *Service) { s.Artifact = blobB },
			"upgrade green->blue [version changed artifact changed]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head := &Spec{Name: "t", Services: map[string]*Service{"db": {
				Version: tt.from, Artifact: blobA, Run: []string{"./db"}, Settings: map[string]string{"k": "v"}}}}
			next := head.Clone()
			next.Services["db"].Version = tt.to
			if tt.edit != nil {
				tt.edit(next.Services["db"])
			}
			changes, err := Plan(head, next)
			if err != nil {
				t.Fatal(err)
			}
			var got string
			for _, c := range changes {
				got = fmt.Sprintf("%s %s->%s %v", c.Kind, c.From, c.To, c.Reasons)
			}
			if len(changes) > 1 || got != tt.want {
				t.Errorf("Plan = %q (%d changes), want %q", got, len(changes), tt.want)
			}
		})
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0.0", "1.0.1", -1},
		{"1.10.0", "1.9.0", 1},
		{"v2", "2.0.0", 0},
		{"1.2", "1.2.1", -1},
		{"1.0.0-rc1", "1.0.0", -1},
		{"1.0.0", "1.0.0-rc1", 1},
		{"1.0.0-rc1", "1.0.0-rc2", 0}, // pre-releases of one release: no order
		{"1.0.0-rc1", "1.0.1-rc1", -1},
		{"1.0.0+b1", "1.0.0+b2", 0},
		{"green", "blue", 0},
		{"1.x", "1.0", 0},
		{"1..0", "1.0", 0},
		{"1.0-", "1.0", 0},
		{"+1", "0", 0},
	}
	for _, tt := range tests {
		if got := compareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestBuildID pins the value: agent.BuildID computes the same one, and a
// change here would make every agent believe its build changed.
func TestBuildID(t *testing.T) {
	svc := &Service{Version: "1.0.0", Artifact: blobA, Data: []string{blobB}, Run: []string{"./db", "-v"},
		Settings: map[string]string{"k": "v"}}
	if got, want := svc.BuildID(), "1087d0ec23b4928c"; got != want {
		t.Errorf("BuildID = %s, want %s", got, want)
	}
	bare := &Service{Artifact: blobA, Run: []string{"./db"}}
	if got, want := bare.BuildID(), "980be3921812eba2"; got != want {
		t.Errorf("BuildID without data = %s, want %s", got, want)
	}
	other := *svc
	other.Version, other.Settings, other.Health, other.MaxParallel = "2.0.0", nil, &Health{TCP: "h:1"}, 3
	if other.BuildID() != svc.BuildID() {
		t.Error("BuildID depends on the version label, settings or rollout fields")
	}
	for _, edit := range []func(s *Service){
		func(s *Service) { s.Artifact = blobC },
		func(s *Service) { s.Data = nil },
		func(s *Service) { s.Run = []string{"./db -v"} },
	} {
		c := *svc
		edit(&c)
		if c.BuildID() == svc.BuildID() {
			t.Errorf("BuildID unchanged for %+v", c)
		}
	}
	if (*Service)(nil).BuildID() != "" {
		t.Error("nil service has a BuildID")
	}
}

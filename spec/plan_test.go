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
			s.Services["cache"].Version = "2"
		}, []string{"cache upgrade 1->2 [version changed]", "web new ->9 [new service]",
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

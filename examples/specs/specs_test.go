package specs_test

import (
	"path/filepath"
	"strings"
	"testing"

	"dcroll/spec"
)

// TestDemoSpecsParse checks that the demo specs are valid and say what the
// demo relies on: web depends on store, hello health on ${DCROLL_PORT},
// placeholder artifacts that make demo rewrites.
func TestDemoSpecsParse(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"demo-v1.yaml": "1.0.0", "demo-v2.yaml": "2.0.0", "demo-v3-broken.yaml": "3.0.0-broken"}
	if len(files) != len(want) {
		t.Fatalf("found %v, want %d specs", files, len(want))
	}
	ids := map[string]bool{}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			s, err := spec.Load(f)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			ids[s.ID()] = true
			if got := s.Names(); strings.Join(got, ",") != "store,web" {
				t.Fatalf("services %v, want store,web", got)
			}
			for name, svc := range s.Services {
				if svc.Version != want[f] {
					t.Errorf("%s version %q, want %q", name, svc.Version, want[f])
				}
				if !strings.HasPrefix(svc.Artifact, "sha256:000000") {
					t.Errorf("%s artifact %q is not a placeholder", name, svc.Artifact)
				}
				if svc.Health == nil || !strings.Contains(svc.Health.HTTP, "${DCROLL_PORT}") || svc.Health.MinHealthy.Duration.Seconds() != 1 {
					t.Errorf("%s health %+v", name, svc.Health)
				}
			}
			if d := s.Services["web"].DependsOn; len(d) != 1 || d[0] != "store" {
				t.Errorf("web depends_on %v, want [store]", d)
			}
			if q := s.Services["store"].Quorum; q.Min(3) != 2 {
				t.Errorf("store quorum %v", q)
			}
			if q := s.Services["web"].Quorum; q.String() != "50%" {
				t.Errorf("web quorum %v", q)
			}
		})
	}
	if len(ids) != len(files) {
		t.Errorf("specs share an id: %v", ids)
	}
}

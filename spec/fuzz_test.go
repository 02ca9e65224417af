package spec

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that Parse never panics and that whatever it accepts
// survives the canonical round trips with the same ID.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(minimal))
	f.Add([]byte(minimal + "    quorum: \"50%\"\n    health: {command: [./c], timeout: 1s}\n    settings: {k: \"v\\u0085\"}\n"))
	f.Add([]byte(`{"name":"j","services":{"a":{"version":"1","artifact":"sha256:` + hexA + `","run":["x"]}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("fuzz.yaml", data)
		if err != nil {
			if s != nil {
				t.Fatal("spec and error both returned")
			}
			return
		}
		c := s.Canonical()
		back, err := FromCanonical(c)
		if err != nil {
			t.Fatalf("FromCanonical(Canonical()) failed: %v\n%s", err, c)
		}
		if back.ID() != s.ID() {
			t.Fatalf("ID changed through FromCanonical:\n%s\n%s", c, back.Canonical())
		}
		again, err := Parse("canonical.json", c)
		if err != nil {
			t.Fatalf("Parse(Canonical()) failed: %v\n%s", err, c)
		}
		if again.ID() != s.ID() {
			t.Fatalf("ID changed through Parse:\n%s\n%s", c, again.Canonical())
		}
		if _, err := s.Order(); err != nil {
			t.Fatalf("valid spec has no order: %v", err)
		}
	})
}

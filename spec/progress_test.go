package spec

import (
	"strings"
	"testing"
	"time"
)

const progressBase = `name: p
services:
  db:
    version: "1"
    artifact: sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
    run: ["./db"]
`

// TestProgressDeadline: parsed, defaulted by Deadline, omitted from the
// canonical form when default (old spec ids are unchanged), validated.
func TestProgressDeadline(t *testing.T) {
	plain, err := Parse("p.yaml", []byte(progressBase))
	if err != nil {
		t.Fatal(err)
	}
	if got := plain.Services["db"].Deadline(); got != DefaultProgressDeadline || DefaultProgressDeadline != 30*time.Minute {
		t.Fatalf("default deadline = %s", got)
	}
	if strings.Contains(string(plain.Canonical()), "progress_deadline") {
		t.Fatalf("canonical form names the default: %s", plain.Canonical())
	}
	explicitDefault, err := Parse("p.yaml", []byte(progressBase+"    progress_deadline: 30m\n"))
	if err != nil {
		t.Fatal(err)
	}
	if explicitDefault.ID() != plain.ID() {
		t.Error("progress_deadline: 30m changed the spec id")
	}
	short, err := Parse("p.yaml", []byte(progressBase+"    progress_deadline: 90s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := short.Services["db"].Deadline(); got != 90*time.Second {
		t.Fatalf("deadline = %s", got)
	}
	if short.ID() == plain.ID() || !strings.Contains(string(short.Canonical()), `"progress_deadline":"1m30s"`) {
		t.Fatalf("canonical = %s", short.Canonical())
	}
	back, err := FromCanonical(short.Canonical())
	if err != nil || back.ID() != short.ID() {
		t.Fatalf("FromCanonical: %v", err)
	}
	for in, want := range map[string]string{
		"0s":   `p.yaml:7: services.db.progress_deadline: "0s" must be positive`,
		"soon": `p.yaml:7: services.db.progress_deadline: "soon" is not a duration`,
	} {
		_, err := Parse("p.yaml", []byte(progressBase+"    progress_deadline: "+in+"\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("progress_deadline %s: %v, want %s", in, err, want)
		}
	}
	hand := plain.Clone()
	hand.Services["db"].ProgressDeadline = Duration{-time.Second}
	if err := hand.Validate(); err == nil || !strings.Contains(err.Error(), "services.db.progress_deadline") {
		t.Errorf("negative deadline: %v", err)
	}
}

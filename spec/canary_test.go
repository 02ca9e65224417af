package spec

import (
	"strings"
	"testing"
	"time"
)

// TestCanary: parsed, kept by the canonical form (and FromCanonical),
// absent from the canonical form when not set (old spec ids unchanged),
// validated with line-precise errors.
func TestCanary(t *testing.T) {
	plain, err := Parse("p.yaml", []byte(progressBase))
	if err != nil {
		t.Fatal(err)
	}
	if plain.Services["db"].Canary != nil || strings.Contains(string(plain.Canonical()), "canary") {
		t.Fatalf("no canary expected: %s", plain.Canonical())
	}
	sp, err := Parse("p.yaml", []byte(progressBase+"    canary: {machines: 2, bake: 10m}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := sp.Services["db"].Canary
	if c == nil || c.Machines != 2 || c.Bake.Duration != 10*time.Minute {
		t.Fatalf("canary = %+v", c)
	}
	if !strings.Contains(string(sp.Canonical()), `"canary":{"machines":2,"bake":"10m0s"}`) {
		t.Fatalf("canonical = %s", sp.Canonical())
	}
	back, err := FromCanonical(sp.Canonical())
	if err != nil || back.ID() != sp.ID() {
		t.Fatalf("FromCanonical: %v", err)
	}
	if cl := sp.Clone(); cl.Services["db"].Canary == c {
		t.Error("Clone shares the canary")
	}
	manual, err := Parse("p.yaml", []byte(progressBase+"    canary:\n      machines: 1\n"))
	if err != nil || manual.Services["db"].Canary.Bake.Duration != 0 {
		t.Fatalf("canary without bake: %v", err)
	}
	for in, want := range map[string]string{
		"{machines: 0}":            `p.yaml:7: services.db.canary.machines: must be at least 1, got 0`,
		"{machines: 1, bake: 0s}":  `p.yaml:7: services.db.canary.bake: "0s" must be positive`,
		"{machines: 1, bak: 10m}":  `did you mean "bake"?`,
		"{machines: 1, bake: two}": `"two" is not a duration`,
	} {
		_, err := Parse("p.yaml", []byte(progressBase+"    canary: "+in+"\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("canary %s: %v, want %s", in, err, want)
		}
	}
}

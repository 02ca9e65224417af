package spec

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestCanonicalIDStable(t *testing.T) {
	a := mustParse(t, `
name: n
services:
  db:
    version: "1.0"
    artifact: sha256:`+hexA+`
    run: [./db, -v]
    settings: {b: "2", a: "1"}
    depends_on: [x, cache]
  cache: {version: "2", artifact: "sha256:`+hexB+`", run: [./c]}
  x: {version: "3", artifact: "sha256:`+hexC+`", run: [./x]}
`)
	// Same spec: other key order, JSON, defaults spelled out, other duration spelling.
	b := mustParse(t, `{"services": {
  "x": {"run": ["./x"], "artifact": "sha256:`+hexC+`", "version": "3", "quorum": 1, "max_parallel": 1},
  "cache": {"version": "2", "run": ["./c"], "artifact": "sha256:`+hexB+`", "reload_signal": "SIGHUP"},
  "db": {"depends_on": ["cache", "x"], "settings": {"a": "1", "b": "2"}, "version": "1.0",
         "artifact": "sha256:`+hexA+`", "run": ["./db", "-v"], "data": []}},
 "name": "n"}`)
	if a.ID() != b.ID() {
		t.Errorf("IDs differ:\n%s\n%s", a.Canonical(), b.Canonical())
	}
	c := mustParse(t, strings.Replace(string(a.Canonical()), `"-v"`, `"-vv"`, 1))
	if c.ID() == a.ID() {
		t.Error("different run, same ID")
	}
	if len(a.ID()) != 64 || ShortID(a.ID()) != a.ID()[:12] || ShortID("abc") != "abc" {
		t.Errorf("ID %q / ShortID %q", a.ID(), ShortID(a.ID()))
	}
}

func TestCanonicalDurationsAndDefaults(t *testing.T) {
	a := mustParse(t, minimal+"    health: {tcp: \"h:1\", deadline: 120s, timeout: 5000ms}\n")
	b := mustParse(t, minimal+"    health: {tcp: \"h:1\"}\n")
	if a.ID() != b.ID() {
		t.Errorf("IDs differ:\n%s\n%s", a.Canonical(), b.Canonical())
	}
	var doc map[string]any
	if err := json.Unmarshal(a.Canonical(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc["schema"] != float64(SchemaVersion) {
		t.Errorf("schema = %v", doc["schema"])
	}
}

func TestCanonicalRoundTrip(t *testing.T) {
	s, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	back, err := FromCanonical(s.Canonical())
	if err != nil {
		t.Fatal(err)
	}
	if back.ID() != s.ID() || string(back.Canonical()) != string(s.Canonical()) {
		t.Errorf("round trip changed the spec:\n%s\n%s", s.Canonical(), back.Canonical())
	}
	// The canonical JSON is a valid spec file too.
	again := mustParse(t, string(s.Canonical()))
	if again.ID() != s.ID() {
		t.Errorf("Parse(Canonical) changed the ID")
	}
	// Canonical does not modify the spec; hand-built specs get defaults.
	hand := &Spec{Name: "test", Services: map[string]*Service{"db": {Version: "1.0", Artifact: blobA, Run: []string{"./db"}, Quorum: Quorum{Count: 1}}}}
	if hand.ID() != mustParse(t, minimal).ID() {
		t.Errorf("hand-built spec:\n%s\n%s", hand.Canonical(), mustParse(t, minimal).Canonical())
	}
	if hand.Services["db"].MaxParallel != 0 {
		t.Error("Canonical modified the spec")
	}
}

func TestFromCanonicalErrors(t *testing.T) {
	good := string(mustParse(t, minimal).Canonical())
	tests := []struct{ name, src, want string }{
		{"not json", "name: x", "malformed JSON"},
		{"trailing", good + "{}", "unexpected data"},
		{"no schema", strings.Replace(good, `"schema":1,`, "", 1), "schema: missing"},
		{"newer schema", strings.Replace(good, `"schema":1`, `"schema":2`, 1), "upgrade dcroll"},
		{"unknown field", strings.Replace(good, `"name"`, `"extra":1,"name"`, 1), `unknown field "extra"`},
		{"invalid", strings.Replace(good, `"run":["./db"]`, `"run":[]`, 1), "services.db.run: missing command"},
		{"bad quorum", strings.Replace(good, `"quorum":1`, `"quorum":"x"`, 1), "percentage"},
		{"bad duration", strings.Replace(good, `"run":["./db"]`, `"run":["./db"],"health":{"tcp":"h:1","timeout":"5"}`, 1), `"5" is not a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FromCanonical([]byte(tt.src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("FromCanonical(%s) = %v, want %q", tt.src, err, tt.want)
			}
		})
	}
}

func TestQuorum(t *testing.T) {
	tests := []struct {
		q     Quorum
		total int
		want  int
	}{
		{Quorum{Count: 2}, 5, 2},
		{Quorum{Count: 2}, 1, 1}, // never more than total
		{Quorum{Count: 0}, 5, 0},
		{Quorum{Count: 3}, 0, 0},
		{Quorum{Percent: 60}, 5, 3},
		{Quorum{Percent: 60}, 4, 3}, // 2.4 rounds up
		{Quorum{Percent: 50}, 3, 2},
		{Quorum{Percent: 100}, 7, 7},
		{Quorum{Percent: 1}, 1000, 10},
		{Quorum{Percent: 1}, 1, 1},
		{Quorum{Percent: 33}, 0, 0},
	}
	for _, tt := range tests {
		if got := tt.q.Min(tt.total); got != tt.want {
			t.Errorf("%v.Min(%d) = %d, want %d", tt.q, tt.total, got, tt.want)
		}
	}
	for src, want := range map[string]Quorum{"2": {Count: 2}, `"60%"`: {Percent: 60}, `"0%"`: {}, `" 5 % "`: {Percent: 5}} {
		var q Quorum
		if err := json.Unmarshal([]byte(src), &q); err != nil || q != want {
			t.Errorf("unmarshal %s = %+v, %v; want %+v", src, q, err, want)
		}
		b, _ := json.Marshal(want)
		var back Quorum
		if err := json.Unmarshal(b, &back); err != nil || back != want {
			t.Errorf("round trip %+v via %s = %+v", want, b, back)
		}
	}
}

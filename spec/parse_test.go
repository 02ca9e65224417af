package spec

import (
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var (
	hexA  = strings.Repeat("a", 64)
	hexB  = strings.Repeat("b", 64)
	hexC  = strings.Repeat("c", 64)
	blobA = "sha256:" + hexA
	blobB = "sha256:" + hexB
	blobC = "sha256:" + hexC
)

// minimal is a valid spec with one service; tests append to or edit it.
const minimal = `name: test
services:
  db:
    version: "1.0"
    artifact: sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
    run: ["./db"]
`

func mustParse(t testing.TB, src string) *Spec {
	t.Helper()
	s, err := Parse("spec.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return s
}

func TestParseGood(t *testing.T) {
	s, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "nightly-2026-11-22" || s.Window == nil || s.Window.Timezone != "Europe/Paris" {
		t.Errorf("name/window: %+v %+v", s.Name, s.Window)
	}
	db := s.Services["db"]
	if db.Health.Deadline.Duration.Seconds() != 60 || db.Quorum != (Quorum{Count: 2}) || db.Settings["cache_mb"] != "512" {
		t.Errorf("db: %+v %+v", db, db.Health)
	}
	cache := s.Services["cache"]
	if cache.Quorum != (Quorum{Percent: 60}) || cache.MaxParallel != 2 || cache.Health.Timeout.Duration != DefaultHealthTimeout {
		t.Errorf("cache: %+v %+v", cache, cache.Health)
	}
	api := s.Services["api"]
	if api.Quorum != (Quorum{Count: 1}) || api.MaxParallel != 1 || api.ReloadSignal != "SIGHUP" ||
		api.Settings["workers"] != "8" || strings.Join(api.DependsOn, ",") != "cache,db" {
		t.Errorf("api defaults: %+v", api)
	}
	if got := s.Blobs(); len(got) != 4 || got[0] != blobA || got[3] != "sha256:"+strings.Repeat("d", 64) {
		t.Errorf("Blobs = %v", got)
	}
}

// TestYAMLTags checks that the struct tags agree with Parse: strict yaml.v3
// decoding of good.yaml gives the same canonical spec.
func TestYAMLTags(t *testing.T) {
	want, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(out)))
	dec.KnownFields(true)
	var got Spec
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode marshaled spec: %v\n%s", err, out)
	}
	if got.ID() != want.ID() {
		t.Errorf("yaml.v3 round trip changed the spec:\n%s\n%s", got.Canonical(), want.Canonical())
	}
}

func TestParseErrors(t *testing.T) {
	svc := func(extra string) string { return minimal + extra }
	tests := []struct {
		name string
		src  string
		want []string // substrings of the error message
	}{
		{"empty", "", []string{"spec.yaml", "empty spec"}},
		{"comments only", "# nothing\n", []string{"empty spec"}},
		{"not a mapping", "- a\n- b\n", []string{"spec.yaml:1", "expected a mapping"}},
		{"malformed", "name: x\nservices: [\n", []string{"spec.yaml:", "malformed YAML"}},
		{"tab indent", "name: x\nservices:\n\tdb: {}\n", []string{"spec.yaml:3", "malformed YAML"}},
		{"two documents", minimal + "---\nname: other\n", []string{"spec.yaml:7", "more than one YAML document"}},
		{"unknown top field", "nmae: x\n" + minimal[len("name: test\n"):], []string{"spec.yaml:1", `unknown field "nmae"`, `did you mean "name"`}},
		{"unknown service field", strings.Replace(minimal, "version:", "versoin:", 1), []string{"spec.yaml:4", "services.db", `unknown field "versoin"`, `"version"`}},
		{"unknown health field", svc("    health: {http: \"http://x:1/\", retries: 3}\n"), []string{"spec.yaml:7", "services.db.health", `unknown field "retries"`, "known: http, tcp"}},
		{"duplicate key", svc("    run: [\"./other\"]\n"), []string{"spec.yaml:7", "services.db", `"run" is defined twice (first at line 6)`}},
		{"merge key", strings.Replace(minimal, "  db:\n", "  db: &d\n", 1) + "  db2:\n    <<: *d\n", []string{"spec.yaml:8", "services.db2", "merge keys (<<) are not supported"}},
		{"missing name", minimal[len("name: test\n"):], []string{"name: missing"}},
		{"missing services", "name: x\n", []string{"services: missing"}},
		{"empty services", "name: x\nservices: {}\n", []string{"spec.yaml:2", "services: no services"}},
		{"services is a list", "name: x\nservices: [db]\n", []string{"spec.yaml:2", "services: expected a mapping"}},
		{"bad service name", strings.Replace(minimal, "  db:", "  DB.main:", 1), []string{"spec.yaml:3", "services.DB.main", "invalid service name"}},
		{"service name too long", strings.Replace(minimal, "  db:", "  "+strings.Repeat("x", 64)+":", 1), []string{"invalid service name"}},
		{"missing version", strings.Replace(minimal, "    version: \"1.0\"\n", "", 1), []string{"spec.yaml:3", "services.db.version: missing"}},
		{"version with slash", strings.Replace(minimal, `"1.0"`, `"1/0"`, 1), []string{"spec.yaml:4", "services.db.version", `must not contain "/"`}},
		{"version control char", strings.Replace(minimal, `"1.0"`, `"1\u0007"`, 1), []string{"services.db.version", "non-printable"}},
		{"version is a list", strings.Replace(minimal, `"1.0"`, `[1]`, 1), []string{"spec.yaml:4", "services.db.version", "expected a string"}},
		{"missing artifact", strings.Replace(minimal, "    artifact: sha256:"+hexA+"\n", "", 1), []string{"services.db.artifact: missing"}},
		{"artifact uppercase", strings.Replace(minimal, hexA, strings.ToUpper(hexA), 1), []string{"spec.yaml:5", "services.db.artifact", "lowercase"}},
		{"artifact no prefix", strings.Replace(minimal, "sha256:"+hexA, hexA, 1), []string{"services.db.artifact", "add the prefix"}},
		{"artifact short", strings.Replace(minimal, hexA, "abc", 1), []string{"services.db.artifact", "not a blob reference", "64 lowercase hex"}},
		{"bad data blob", svc("    data:\n      - " + blobB + "\n      - sha256:xyz\n"), []string{"spec.yaml:9", "services.db.data", `"sha256:xyz"`}},
		{"duplicate data blob", svc("    data: [" + blobB + ", " + blobB + "]\n"), []string{"services.db.data", "listed twice"}},
		{"data not a list", svc("    data: " + blobB + "\n"), []string{"spec.yaml:7", "services.db.data", "expected a list"}},
		{"missing run", strings.Replace(minimal, "    run: [\"./db\"]\n", "", 1), []string{"services.db.run", "missing command"}},
		{"empty run", strings.Replace(minimal, `["./db"]`, `[]`, 1), []string{"spec.yaml:6", "services.db.run", "missing command"}},
		{"run is a string", strings.Replace(minimal, `["./db"]`, `./db --port 1`, 1), []string{"spec.yaml:6", "services.db.run", "expected a list"}},
		{"health none", svc("    health: {timeout: 1s}\n"), []string{"spec.yaml:7", "services.db.health", "exactly one of http, tcp or command"}},
		{"health two", svc("    health: {http: \"http://h:1/\", tcp: \"h:1\"}\n"), []string{"services.db.health", "http and tcp"}},
		{"health bad url", svc("    health: {http: \"ftp://h/\"}\n"), []string{"services.db.health.http", "not an http://"}},
		{"health bad tcp", svc("    health: {tcp: \"localhost\"}\n"), []string{"services.db.health.tcp", `"host:port"`}},
		{"health bad port", svc("    health: {tcp: \"localhost:99999\"}\n"), []string{"services.db.health.tcp"}},
		{"bad duration", svc("    health: {tcp: \"h:1\", timeout: 5}\n"), []string{"spec.yaml:7", "services.db.health.timeout", `"5" is not a duration`, `"5s"`}},
		{"negative duration", svc("    health: {tcp: \"h:1\", deadline: -1m}\n"), []string{"services.db.health.deadline", "must be positive"}},
		{"timeout over deadline", svc("    health: {tcp: \"h:1\", timeout: 3m}\n"), []string{"services.db.health.timeout", "longer than the deadline"}},
		{"quorum over 100%", svc("    quorum: \"120%\"\n"), []string{"spec.yaml:7", "services.db.quorum", `"120%" is not a percentage between 0% and 100%`}},
		{"quorum negative percent", svc("    quorum: \"-5%\"\n"), []string{"services.db.quorum", `"-5%" is not a percentage`}},
		{"quorum negative", svc("    quorum: -1\n"), []string{"services.db.quorum", "0 or more"}},
		{"quorum word", svc("    quorum: most\n"), []string{"services.db.quorum", `"most"`, "percentage"}},
		{"quorum float percent", svc("    quorum: \"50.5%\"\n"), []string{"services.db.quorum", "whole percentage"}},
		{"quorum string count", svc("    quorum: \"2\"\n"), []string{"services.db.quorum", `"2"`}},
		{"max_parallel zero", svc("    max_parallel: 0\n"), []string{"spec.yaml:7", "services.db.max_parallel", "at least 1"}},
		{"max_parallel string", svc("    max_parallel: two\n"), []string{"services.db.max_parallel", "whole number"}},
		{"settings not strings", svc("    settings: {a: [1, 2]}\n"), []string{"services.db.settings.a", "expected a string"}},
		{"settings null value", svc("    settings: {a: }\n"), []string{"services.db.settings", `"a" has no value`}},
		{"reload signal", svc("    reload_signal: SIGFOO\n"), []string{"spec.yaml:7", "services.db.reload_signal", `unknown signal "SIGFOO"`, "SIGHUP"}},
		{"reload signal hint", svc("    reload_signal: hup\n"), []string{"services.db.reload_signal", `did you mean "SIGHUP"`}},
		{"unknown dependency", svc("    depends_on: [dbx]\n") + "  cache:\n    version: \"1\"\n    artifact: " + blobB + "\n    run: [\"./c\"]\n",
			[]string{"spec.yaml:7", "services.db.depends_on", `unknown service "dbx" (known: cache)`}},
		{"self dependency", svc("    depends_on: [db]\n"), []string{"services.db.depends_on", "depends on itself"}},
		{"cycle", svc("    depends_on: [b]\n") +
			"  b:\n    version: \"1\"\n    artifact: " + blobB + "\n    run: [\"./b\"]\n    depends_on: [c]\n" +
			"  c:\n    version: \"1\"\n    artifact: " + blobC + "\n    run: [\"./c\"]\n    depends_on: [db]\n",
			[]string{"spec.yaml:", "dependency cycle: b -> c -> db -> b"}},
		{"window bad start", svc("window: {start: \"25:00\", end: \"05:00\"}\n"), []string{"spec.yaml:7", "window.start", `"25:00"`}},
		{"window bad format", svc("window: {start: \"1am\", end: \"05:00\"}\n"), []string{"window.start", `"HH:MM"`}},
		{"window equal", svc("window: {start: \"05:00\", end: \"05:00\"}\n"), []string{"window.end", "equals start"}},
		{"window missing end", svc("window: {start: \"05:00\"}\n"), []string{"window.end", "not a time of day"}},
		{"window bad tz", svc("window: {start: \"01:00\", end: \"05:00\", timezone: Europe/Pariss}\n"), []string{"spec.yaml:7", "window.timezone", `unknown timezone "Europe/Pariss"`}},
		{"window local tz", svc("window: {start: \"01:00\", end: \"05:00\", timezone: Local}\n"), []string{"window.timezone", "differs between machines"}},
		{"schema newer", "schema: 2\n" + minimal, []string{"spec.yaml:1", "schema", "upgrade dcroll"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse("spec.yaml", []byte(tt.src))
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q\n%s", tt.want, s.Canonical())
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T is not a *ValidationError: %v", err, err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("message is not one line: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q\ndoes not contain %q", msg, w)
				}
			}
		})
	}
}

func TestParseCollectsAllProblems(t *testing.T) {
	_, err := Load("testdata/bad_many.yaml")
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v", err)
	}
	all := ve.All()
	if len(all) != 6 || !strings.HasSuffix(err.Error(), "(and 5 more problems)") {
		t.Fatalf("got %d problems: %v", len(all), err)
	}
	for i, want := range []string{"window.start", "window.timezone", "services.db.artifact", "services.db.run", "services.db.quorum", "services.api.depends_on"} {
		if all[i].Field != want || all[i].Line == 0 || all[i].File != "testdata/bad_many.yaml" {
			t.Errorf("problem %d = %+v, want field %s with a line", i, all[i], want)
		}
	}
}

func TestCycleErrorUnwraps(t *testing.T) {
	_, err := Load("testdata/bad_cycle.yaml")
	var ce *CycleError
	if !errors.As(err, &ce) || strings.Join(ce.Cycle, " ") != "api db api" {
		t.Fatalf("got %v (%#v)", err, ce)
	}
	if want := "testdata/bad_cycle.yaml:7: services.api.depends_on: dependency cycle: api -> db -> api"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %q, want prefix %q", err, want)
	}
}

func TestParseAliases(t *testing.T) {
	s := mustParse(t, minimal+"    data: &shared ["+blobB+"]\n  cache:\n    version: \"1\"\n    artifact: "+blobC+"\n    run: [\"./c\"]\n    data: *shared\n")
	if got := s.Services["cache"].Data; len(got) != 1 || got[0] != blobB {
		t.Errorf("alias not resolved: %v", got)
	}
}

func TestParseNullMeansAbsent(t *testing.T) {
	s := mustParse(t, minimal+"    health:\n    quorum: ~\nwindow: null\n")
	db := s.Services["db"]
	if db.Health != nil || db.Quorum != (Quorum{Count: 1}) || s.Window != nil {
		t.Errorf("nulls not treated as absent: %+v %+v", db, s.Window)
	}
}

func TestValidationErrorFormat(t *testing.T) {
	tests := []struct {
		e    ValidationError
		want string
	}{
		{ValidationError{File: "f.yaml", Line: 3, Field: "a.b", Msg: "bad"}, "f.yaml:3: a.b: bad"},
		{ValidationError{File: "f.yaml", Msg: "bad"}, "f.yaml: bad"},
		{ValidationError{Line: 2, Msg: "bad"}, "line:2: bad"},
		{ValidationError{Field: "name", Msg: "missing"}, "name: missing"},
		{ValidationError{File: "f", Msg: "x", More: []*ValidationError{{Msg: "y"}}}, "f: x (and 1 more problem)"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

package buildinfo

import (
	"runtime"
	"testing"
)

func TestGetIsComplete(t *testing.T) {
	bi := Get()
	if bi.Version == "" || bi.Commit == "" || bi.GoVersion == "" {
		t.Fatalf("Get() = %+v: empty field", bi)
	}
	if bi.GoVersion != runtime.Version() {
		t.Errorf("GoVersion = %q, want %q", bi.GoVersion, runtime.Version())
	}
}

func TestLdflagsOverride(t *testing.T) {
	defer func(v, c string) { Version, Commit = v, c }(Version, Commit)
	Version, Commit = "v9.9.9", "abc123"
	if bi := Get(); bi.Version != "v9.9.9" || bi.Commit != "abc123" {
		t.Fatalf("Get() = %+v, want the -X values", bi)
	}
}

package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st, err := LoadState(dir, "web")
	if err != nil || st.Current != nil || st.Service != "web" {
		t.Fatalf("LoadState of an empty dir = %+v, %v; want an empty state", st, err)
	}
	verDir := t.TempDir()
	cur := &Release{Version: "2.0.0", Build: "b2", SpecID: "s2", Dir: verDir, Run: []string{"./hello"}, Settings: map[string]string{"k": "v"}}
	prev := &Release{Version: "1.0.0", Build: "b1", SpecID: "s1", Dir: filepath.Join(verDir, "gone")}
	st.Current, st.Previous = cur, prev
	st.InFlight = &Step{From: "1.0.0", To: "2.0.0", SpecID: "s2"}
	st.remember(cur)
	st.remember(prev)
	if err := st.Save(dir, time.Unix(100, 0)); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(dir, "web")
	if err != nil {
		t.Fatal(err)
	}
	if got.Current.Version != "2.0.0" || got.Current.Settings["k"] != "v" || got.Previous.Version != "1.0.0" ||
		got.InFlight == nil || got.InFlight.To != "2.0.0" || !got.Updated.Equal(time.Unix(100, 0)) {
		t.Errorf("round trip = %+v", got)
	}
	// Only unpacked releases are offered as known versions.
	if k := got.knownVersions(); len(k) != 1 || k["2.0.0"] != "s2" {
		t.Errorf("knownVersions = %v, want only 2.0.0 (1.0.0's directory is gone)", k)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("Save left temporary files: %v", entries)
	}
}

func TestStateRefusesNewerSchemaAndGarbage(t *testing.T) {
	for name, content := range map[string]string{
		"newer":   `{"v": 99}`,
		"garbage": `{"v": 1, "current": 12`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := LoadState(dir, "web")
			if err == nil || !strings.Contains(err.Error(), "state") {
				t.Errorf("LoadState = %v, want an error naming the state file", err)
			}
		})
	}
}

func TestStatePruneKeepsCurrentAndPrevious(t *testing.T) {
	st := &State{}
	for _, v := range []string{"1", "2", "3", "4", "5"} {
		st.remember(&Release{Version: v})
	}
	st.Current, st.Previous = st.Known["1"], st.Known["2"]
	st.prune(3)
	if len(st.Known) != 3 || st.Known["1"] == nil || st.Known["2"] == nil {
		t.Errorf("prune kept %v, want 3 including current 1 and previous 2", st.Known)
	}
}

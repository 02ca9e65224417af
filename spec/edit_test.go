package spec

import (
	"strings"
	"testing"
)

func TestSetArtifacts(t *testing.T) {
	in := `# nightly
name: n
services:
  db:
    version: "2"
    artifact: sha256:0000000000000000000000000000000000000000000000000000000000000001 # placeholder
    run: [./db]
  api:
    version: "2"
    artifact: "sha256:0000000000000000000000000000000000000000000000000000000000000001"
    run: [./api]
    depends_on: [db]
`
	db := "sha256:" + strings.Repeat("d", 64)
	api := "sha256:" + strings.Repeat("a", 64)
	out, err := SetArtifacts("n.yaml", []byte(in), map[string]string{"db": db, "api": api})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := Parse("n.yaml", out)
	if err != nil {
		t.Fatal(err)
	}
	if sp.Services["db"].Artifact != db || sp.Services["api"].Artifact != api {
		t.Fatalf("artifacts not set: %s", out)
	}
	if !strings.Contains(string(out), "# nightly") {
		t.Errorf("comments lost:\n%s", out)
	}
	if _, err := SetArtifacts("n.yaml", []byte(in), map[string]string{"dbx": db}); err == nil || !strings.Contains(err.Error(), "dbx") {
		t.Errorf("unknown service: %v", err)
	}
	if _, err := SetArtifacts("n.yaml", []byte(in), map[string]string{"db": "nope"}); err == nil || !strings.Contains(err.Error(), "artifact") {
		t.Errorf("bad id accepted: %v", err)
	}
}

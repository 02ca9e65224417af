package agent

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"dcroll/internal/sign"
	"dcroll/znodes"
)

// TestHeadGate: with trusted keys, HEAD must be signed by one of them for
// this root; a lower sequence (or the same with another spec) is a replay,
// also after a restart; without keys everything passes.
func TestHeadGate(t *testing.T) {
	dir := t.TempDir()
	keyA, keyB := filepath.Join(dir, "a.key"), filepath.Join(dir, "b.key")
	for _, k := range []string{keyA, keyB} {
		if _, err := sign.GenerateKey(k); err != nil {
			t.Fatal(err)
		}
	}
	sa, err := sign.LoadSigner(keyA)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := sign.LoadSigner(keyB)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Root: "/dc", DataDir: filepath.Join(dir, "agent"), Trust: []string{keyA + ".pub"}}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	g, err := newHeadGate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	head := func(specID string, seq uint64, s *sign.Signer, root string) *znodes.Head {
		h := &znodes.Head{SpecID: specID, Seq: seq}
		if s != nil {
			h.Signature = s.Sign(root, specID, seq)
		}
		return h
	}
	tampered := head("s2", 2, sa, "/dc")
	tampered.SpecID = "s9"
	for _, tc := range []struct {
		name string
		h    *znodes.Head
		want error
	}{
		{"unsigned", head("s1", 1, nil, ""), sign.ErrUnsigned},
		{"untrusted key", head("s1", 1, sb, "/dc"), sign.ErrUntrustedKey},
		{"signed for another root", head("s1", 1, sa, "/other"), sign.ErrBadSignature},
		{"spec swapped under the signature", tampered, sign.ErrBadSignature},
		{"seq 2 accepted", head("s2", 2, sa, "/dc"), nil},
		{"seq 2 again", head("s2", 2, sa, "/dc"), nil},
		{"seq 2 with another spec", head("s3", 2, sa, "/dc"), sign.ErrReplayed},
		{"seq 1 replayed", head("s1", 1, sa, "/dc"), sign.ErrReplayed},
		{"seq 5 accepted", head("s5", 5, sa, "/dc"), nil},
	} {
		if err := g.check(tc.h); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A restarted agent remembers seq 5.
	g2, err := newHeadGate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := g2.check(head("s2", 2, sa, "/dc")); !errors.Is(err, sign.ErrReplayed) {
		t.Fatalf("after restart: %v, want a replay", err)
	}
	// No trusted keys: the unsecured default.
	open, err := newHeadGate(Config{Root: "/dc", DataDir: cfg.DataDir})
	if err != nil || open.check(head("s1", 1, nil, "")) != nil {
		t.Fatalf("no keys: %v", err)
	}
	// A world-readable private key is refused.
	if err := os.Chmod(keyA, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := sign.LoadSigner(keyA); err == nil {
		t.Fatal("a world-readable signing key was accepted")
	}
}

package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dcroll/coordinator"
	"dcroll/integration/zktest"
	"dcroll/internal/sign"
	"dcroll/znodes"
)

// TestSignedHeads: in a secured tree (dcroll init: ACLs per role; the
// coordinator, agents and operator each with their own credential),
// agents started with --trust run only HEADs signed by their key. An unsigned HEAD, one signed by another key, one whose
// signature does not match, an older signed HEAD written back (a replay)
// and a signed HEAD naming a stored spec whose content was altered are all
// refused: no service instance ever starts the version they name (judged
// from the services' own event log), every instance keeps serving what it
// served, and every agent says why.
func TestSignedHeads(t *testing.T) {
	if testing.Short() {
		t.Skip("signed HEADs: ZooKeeper ensemble and agent processes")
	}
	c := NewCluster(t)
	dir := t.TempDir()
	keys := map[string]*sign.Signer{}
	for _, name := range []string{"release", "rogue"} {
		path := filepath.Join(dir, name+".key")
		if _, err := sign.GenerateKey(path); err != nil {
			t.Fatal(err)
		}
		s, err := sign.LoadSigner(path)
		if err != nil {
			t.Fatal(err)
		}
		keys[name] = s
	}
	s := c.NewScenario(t, "trust", Options{Secure: true, Trust: []string{filepath.Join(dir, "release.key.pub")}, Signer: keys["release"]})
	defer func() {
		if t.Failed() {
			s.Dump(t)
		}
	}()
	s.Bootstrap()
	p := s.Conn.Paths()
	oldHead, _, err := s.Conn.ZK().Get(p.Head())
	if err != nil {
		t.Fatal(err)
	}

	// refused waits until every agent says why it refuses HEAD, then
	// checks that nothing started version and every instance still serves
	// serving.
	refused := func(what, reason, version string, serving map[string]string, mark int64) {
		t.Helper()
		zktest.WaitFor(t, 30*time.Second, what+": every agent refuses HEAD", func() (bool, error) {
			for _, svc := range Services {
				f, err := s.Conn.ReadFleet(svc) // the agents' own registrations
				if err != nil {
					return false, err
				}
				if len(f.Current) != len(s.Machines) {
					return false, fmt.Errorf("%s: %d registrations", svc, len(f.Current))
				}
				for _, cur := range f.Current {
					if !strings.Contains(cur.Detail, "HEAD refused") || !strings.Contains(cur.Detail, reason) {
						return false, fmt.Errorf("%s/%s: %q", svc, cur.Machine, cur.Detail)
					}
				}
			}
			return true, nil
		})
		for _, svc := range Services {
			if tried := s.Tried(mark, svc, version); len(tried) > 0 {
				t.Errorf("%s: %s %s started on %v", what, svc, version, tried)
			}
		}
		s.WaitServing(10*time.Second, serving)
		t.Logf("%s: refused by every agent (%s)", what, reason)
	}
	v1 := map[string]string{"store": Version("v1"), "web": Version("v1")}

	mark := s.EventMark()
	s.MustPush(s.Spec("v2-unsigned", both("v2", "v2")), coordinator.PushOptions{})
	refused("unsigned", "HEAD is not signed", Version("v2"), v1, mark)

	mark = s.EventMark()
	s.MustPush(s.Spec("v4-rogue", both("v4", "v4")), coordinator.PushOptions{Supersede: true, Signer: keys["rogue"]})
	refused("untrusted key", "does not trust", Version("v4"), v1, mark)

	// A valid signature of another spec copied onto HEAD.
	mark = s.EventMark()
	forged := &znodes.Head{SpecID: s.Head(), Seq: 99, Action: znodes.ActionPush, By: "attacker", At: time.Now().UTC()}
	forged.Signature = keys["release"].Sign(p.Root, "0000000000000000000000000000000000000000000000000000000000000000", 99)
	if _, err := s.Conn.ZK().Set(p.Head(), znodes.MustEncode(forged), -1); err != nil {
		t.Fatal(err)
	}
	refused("bad signature", "does not verify", Version("v4"), v1, mark)

	// A signed v2 rolls out; then the old signed v1 HEAD is written back.
	s.MustPush(s.Spec("v2-signed", both("v2", "v2")), coordinator.PushOptions{Supersede: true, Signer: keys["release"]})
	s.WaitCompleted(Converge)
	v2 := map[string]string{"store": Version("v2"), "web": Version("v2")}
	s.WaitServing(30*time.Second, v2)
	mark = s.EventMark()
	if _, err := s.Conn.ZK().Set(p.Head(), oldHead, -1); err != nil {
		t.Fatal(err)
	}
	refused("replayed", "replayed", Version("v1"), v2, mark)

	// Without credentials: refused, one line, nothing changed.
	head := s.Head()
	file := filepath.Join(dir, "v4.json")
	if err := os.WriteFile(file, s.Spec("v4-anonymous", both("v4", "v4")).Canonical(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(c.Binary(), "--zk", c.ConnectString(), "--root", s.Root, "push", "--supersede", file)
	cmd.Env = append(os.Environ(), "DCROLL_ZK_AUTH=")
	out, err := cmd.CombinedOutput()
	msg := strings.TrimSpace(string(out))
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 || strings.Count(msg, "\n") != 0 ||
		!strings.Contains(msg, "not authorized to push") || !strings.Contains(msg, "run with the release credentials") {
		t.Errorf("anonymous push: exit %d, output %q", code, msg)
	}
	if h := s.Head(); h != head {
		t.Errorf("anonymous push moved HEAD %s -> %s", head, h)
	}
	t.Logf("anonymous push: %s", msg)

	// The stored spec a signed HEAD names is altered before the push: its
	// content no longer hashes to its id.
	v4 := s.Spec("v4-signed", both("v4", "v4"))
	altered := s.Spec("v3-altered", both("v3", "v3"))
	if _, err := s.Conn.Create(p.Spec(v4.ID()), altered.Canonical(), 0); err != nil {
		t.Fatal(err)
	}
	mark = s.EventMark()
	s.MustPush(v4, coordinator.PushOptions{Supersede: true, Signer: keys["release"]})
	refused("altered spec", "the stored spec was altered", Version("v4"), v2, mark)
	for _, b := range []string{"v3", "v4"} {
		for _, svc := range Services {
			if tried := s.Tried(mark, svc, Version(b)); len(tried) > 0 {
				t.Errorf("altered spec: %s %s started on %v", svc, Version(b), tried)
			}
		}
	}
	s.WaitServing(10*time.Second, v2)

}

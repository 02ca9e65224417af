package znodes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"testing"

	"github.com/go-zookeeper/zk"
)

// secureWorld secures root for a fresh set of role credentials and returns
// a connection per role plus an anonymous one.
func secureWorld(t *testing.T, root string, private bool) (map[string]*Conn, *ACLTable) {
	t.Helper()
	addr := startZK(t)
	creds := map[string]string{}
	table := &ACLTable{Roles: map[string]string{}, Private: private, By: "test"}
	for _, r := range Roles {
		cred, err := NewCredential(r)
		if err != nil {
			t.Fatal(err)
		}
		creds[r], table.Roles[r] = cred, DigestID(cred)
	}
	dial := func(auth ...string) *Conn {
		c, err := Dial(context.Background(), Options{Servers: addr, Root: root, SessionTimeout: testSession,
			Auth: auth, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	conns := map[string]*Conn{}
	conns[RoleAdmin] = dial(creds[RoleAdmin])
	// A node an old dcroll created, world-writable: init converts it.
	if err := conns[RoleAdmin].EnsurePath(root + "/current/store"); err != nil {
		t.Fatal(err)
	}
	n, err := conns[RoleAdmin].SecureTree(table)
	if err != nil {
		t.Fatal(err)
	}
	if n < len(conns[RoleAdmin].Paths().Skeleton()) {
		t.Fatalf("secured %d nodes", n)
	}
	for _, r := range Roles[1:] {
		conns[r] = dial(creds[r])
	}
	conns["anonymous"] = dial()
	return conns, table
}

func noAuth(err error) bool { return errors.Is(err, zk.ErrNoAuth) }

// TestSecureTreeRefusesOutsiders: after dcroll init, an anonymous client
// can neither create, set nor delete anything under the root (every
// top-level child tried), an agent can write only machine and step nodes,
// and the coordinator only its records.
func TestSecureTreeRefusesOutsiders(t *testing.T) {
	root := "/acl-outsiders"
	conns, _ := secureWorld(t, root, false)
	admin := conns[RoleAdmin]
	top, _, err := admin.ZK().Children(root)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(top)
	if len(top) < 15 {
		t.Fatalf("top-level children: %v", top)
	}
	anon := conns["anonymous"].ZK()
	if _, err := anon.Create(root+"/evil", nil, 0, zk.WorldACL(zk.PermAll)); !noAuth(err) {
		t.Errorf("anonymous create under the root: %v", err)
	}
	for _, name := range top {
		p := root + "/" + name
		if _, err := anon.Create(p+"/evil", nil, 0, zk.WorldACL(zk.PermAll)); !noAuth(err) {
			t.Errorf("anonymous create under %s: %v", p, err)
		}
		if _, err := anon.Set(p, []byte("{}"), -1); !noAuth(err) {
			t.Errorf("anonymous set %s: %v", p, err)
		}
		if err := anon.Delete(p, -1); !noAuth(err) && !errors.Is(err, zk.ErrNotEmpty) {
			t.Errorf("anonymous delete %s: %v", p, err)
		}
		if _, _, err := anon.Get(p); err != nil {
			t.Errorf("anonymous read %s (world-readable tree): %v", p, err)
		}
	}

	// What each role may and may not do.
	agent, release, coord := conns[RoleAgent], conns[RoleRelease], conns[RoleCoordinator]
	p := admin.Paths()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	refused := func(what string, err error) {
		t.Helper()
		if !noAuth(err) {
			t.Errorf("%s: %v, want not authorized", what, err)
		}
	}
	_, err = release.Create(p.Head(), MustEncode(&Head{SpecID: "s1"}), 0)
	must("release creates HEAD", err)
	must("agent registers", agent.EnsurePath(p.Current("web")))
	_, err = agent.Create(p.CurrentMachine("web", "m1"), MustEncode(&Current{Machine: "m1"}), zk.FlagEphemeral)
	must("agent creates its registration", err)
	must("agent joins as member", agent.EnsurePath(p.Members("web")))
	_, err = agent.Create(p.Member("web", "m1"), MustEncode(&Member{Machine: "m1"}), 0)
	must("agent creates its member record", err)
	_, err = agent.Create(p.Budget("web"), MustEncode(&Budget{Service: "web"}), 0)
	must("agent creates the budget node", err)
	_, err = agent.ZK().Set(p.Budget("web"), MustEncode(&Budget{Service: "web", Last: "m1"}), -1)
	must("agent spends", err)
	_, err = agent.Create(p.Bad("b1"), MustEncode(&BadBuild{Key: "b1"}), 0)
	must("agent records a bad build", err)
	must("agent joins a blob's recovering set", agent.EnsurePath(p.Recovering("abc")))
	_, err = agent.Create(p.RecoveringMachine("abc", "m1"), nil, zk.FlagEphemeral)
	must("agent marks itself recovering", err)
	must("agent leaves the recovering set", agent.ZK().Delete(p.RecoveringMachine("abc", "m1"), -1))
	_, err = agent.ZK().Set(p.Head(), []byte("{}"), -1)
	refused("agent sets HEAD", err)
	_, err = agent.ZK().Set(p.Control(), []byte("{}"), -1)
	refused("agent lifts a pause", err)
	_, err = agent.Create(p.Spec("x"), []byte("{}"), 0)
	refused("agent stores a spec", err)
	_, err = agent.Create(p.DeployEntry("d-9"), []byte("{}"), 0)
	refused("agent queues an entry", err)
	_, err = agent.Create(p.Blob("x"), []byte("{}"), 0)
	refused("agent publishes a blob", err)
	_, err = agent.ZK().Set(p.Rollout(), []byte("{}"), -1)
	refused("agent writes the night record", err)
	_, err = agent.ZK().Set(p.ACL(), []byte("{}"), -1)
	refused("agent rewrites the ACL table", err)
	_, err = agent.ZK().SetACL(p.Head(), zk.WorldACL(zk.PermAll), -1)
	refused("agent opens HEAD", err)
	refused("agent deletes the bad-build record", agent.ZK().Delete(p.Bad("b1"), -1))

	_, err = release.ZK().Set(p.Head(), MustEncode(&Head{SpecID: "s2"}), -1)
	must("release moves HEAD", err)
	must("release deletes a bad-build record (resume)", release.ZK().Delete(p.Bad("b1"), -1))
	must("release removes a machine", release.ZK().Delete(p.Member("web", "m1"), -1))
	_, err = release.ZK().Set(p.Rollout(), []byte("{}"), -1)
	refused("release writes the night record", err)
	_, err = release.ZK().Set(p.ACL(), []byte("{}"), -1)
	refused("release rewrites the ACL table", err)

	_, err = coord.ZK().Set(p.Rollout(), MustEncode(&Rollout{State: NightIdle}), -1)
	must("coordinator writes the night record", err)
	_, err = coord.ZK().Set(p.Head(), []byte("{}"), -1)
	refused("coordinator moves HEAD", err)
	must("coordinator joins the election", coord.EnsurePath(p.Election("coordinator")))

	// Nodes created by the roles carry the table's ACL too.
	for _, path := range []string{p.CurrentMachine("web", "m1"), p.Budget("web"), p.Head(), p.Election("coordinator")} {
		checkACL(t, admin, path)
	}

	// A tree secured before the recovering set existed: agents and
	// coordinators, who may not create it, still start.
	must("admin drops the recovering set's container", admin.ZK().Delete(p.Recovering("abc"), -1))
	must("admin drops the recovering root", admin.ZK().Delete(p.RecoveringRoot(), -1))
	must("agent ensures the skeleton without the recovering root", agent.EnsureSkeleton())
	must("coordinator ensures the skeleton without the recovering root", coord.EnsureSkeleton())
	must("release ensures the skeleton, creating the recovering root", release.EnsureSkeleton())
	checkACL(t, admin, p.RecoveringRoot())
}

// TestSecureTreeACLsReadBack: every node's ACL, read back from the server,
// is the documented table's (RolePerms); the identity that secured a tree
// is the only one that may secure it again.
func TestSecureTreeACLsReadBack(t *testing.T) {
	root := "/acl-readback"
	conns, table := secureWorld(t, root, true)
	admin := conns[RoleAdmin]
	p := admin.Paths()
	for _, path := range append(p.Skeleton(), p.Control(), p.Rollout(), p.ACL(), root+"/current/store") {
		checkACL(t, admin, path)
	}
	// The documented table, spot-checked in its own words.
	for _, tc := range []struct{ path, role, perms string }{
		{p.Head(), RoleRelease, "rw"}, {p.Head(), RoleAgent, "r"}, {p.Root, RoleRelease, "cr"},
		{p.DeployEntry("d-1"), RoleAgent, "rw"}, {p.Deploy(), RoleCoordinator, "dr"},
		{p.Current("web"), RoleAgent, "cdr"}, {p.Rollout(), RoleCoordinator, "rw"}, {p.ACL(), RoleRelease, "r"},
		{p.ACL(), RoleAdmin, "cdrwa"}, {p.Election("coordinator"), RoleCoordinator, "cdr"},
	} {
		if got := PermString(RolePerms(root, tc.path)[tc.role]); got != tc.perms {
			t.Errorf("%s on %s: %s, want %s", tc.role, tc.path, got, tc.perms)
		}
	}
	// Private: anonymous reads nothing, the reader everything.
	if _, _, err := conns["anonymous"].ZK().Get(p.Head()); !noAuth(err) {
		if _, _, err2 := conns["anonymous"].ZK().Get(p.Control()); !noAuth(err2) {
			t.Errorf("anonymous read of a private tree: %v", err2)
		}
	}
	if _, _, err := conns[RoleReader].ZK().Get(p.Control()); err != nil {
		t.Errorf("reader read: %v", err)
	}
	// Again, by the admin: idempotent. By another identity: refused.
	if _, err := admin.SecureTree(table); err != nil {
		t.Fatalf("secure again: %v", err)
	}
	other := *table
	other.Roles = map[string]string{}
	for k, v := range table.Roles {
		other.Roles[k] = v
	}
	other.Roles[RoleAdmin] = table.Roles[RoleRelease]
	if _, err := conns[RoleRelease].SecureTree(&other); err == nil || !strings.Contains(err.Error(), "already secured by admin dcroll-admin") {
		t.Fatalf("secure by another identity: %v", err)
	}
}

// checkACL compares the ACL of path on the server with the table's.
func checkACL(t *testing.T, c *Conn, path string) {
	t.Helper()
	got, _, err := c.ZK().GetACL(path)
	if err != nil {
		t.Errorf("getAcl %s: %v", path, err)
		return
	}
	want := c.ACLTable().ACL(c.Paths().Root, path)
	if fmt.Sprint(mergeACL(got)) != fmt.Sprint(want) {
		t.Errorf("ACL of %s:\n got %v\nwant %v", path, got, want)
	}
}

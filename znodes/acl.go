package znodes

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
)

// Roles of a secured tree (dcroll init). Each is one ZooKeeper digest
// identity; a client proves it with --zk-auth FILE (or DCROLL_ZK_AUTH).
const (
	// RoleAdmin may do anything, ACL changes included: the identity that
	// ran dcroll init first.
	RoleAdmin = "admin"
	// RoleRelease moves HEAD (push, rollback), pauses and resumes,
	// publishes blobs, removes machines and clears their steps.
	RoleRelease = "release"
	// RoleCoordinator writes the night record, marks entries done or
	// halted, and runs the election.
	RoleCoordinator = "coordinator"
	// RoleAgent registers machines and their services, stages, takes
	// turns, spends the budget, records steps and halts entries.
	RoleAgent = "agent"
	// RoleReader reads everything, for dashboards of a --private tree.
	RoleReader = "reader"
)

// Roles lists the roles in the order dcroll init hands them out.
var Roles = []string{RoleAdmin, RoleRelease, RoleCoordinator, RoleAgent, RoleReader}

// ACLTable is a secured tree's identities, at Paths.ACL (world-readable:
// it holds password digests, not passwords; dcroll init generates long
// random passwords). Every client reads it when it connects and gives each
// node it creates the ACL of aclRules for its path.
type ACLTable struct {
	V int `json:"v"`
	// Roles maps a role to its digest id, "user:base64(sha1(user:password))".
	Roles map[string]string `json:"roles"`
	// Private: only the roles (reader among them) may read; otherwise
	// anyone may read (dashboards need no credential).
	Private bool      `json:"private"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

func (x *ACLTable) setV() { x.V = SchemaVersion }

// DigestID is the ZooKeeper digest id of credential user:password.
func DigestID(cred string) string {
	user, _, _ := strings.Cut(cred, ":")
	sum := sha1.Sum([]byte(cred))
	return user + ":" + base64.StdEncoding.EncodeToString(sum[:])
}

// NewCredential returns a fresh user:password for role (user dcroll-ROLE,
// a 32-byte random password).
func NewCredential(role string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate a %s credential: %w", role, err)
	}
	return "dcroll-" + role + ":" + hex.EncodeToString(b), nil
}

// Permission letters of the documented table (zkCli's getAcl spells them
// the same way, in the order cdrwa).
const (
	permR = zk.PermRead
	permW = zk.PermWrite
	permC = zk.PermCreate
	permD = zk.PermDelete
)

// aclRule gives the roles' permissions on the nodes whose path (relative to
// the root, "" for the root itself) matches pattern: segments separated by
// "/", where "*" matches any one segment and "a|b" either name.
type aclRule struct {
	pattern string
	perms   map[string]int32
}

// aclRules is the role table, documented in docs/security.md. Besides
// these, admin has every permission on every node, and everyone (or, for a
// private tree, every role) may read. A permission to delete a node is the
// DELETE permission of its parent, as ZooKeeper checks it.
var aclRules = []aclRule{
	{"", map[string]int32{RoleRelease: permC}}, // the first push creates head
	{"acl", nil},
	{"head", map[string]int32{RoleRelease: permW}},
	{"control", map[string]int32{RoleRelease: permW}},
	{"rollout", map[string]int32{RoleCoordinator: permW}},
	{"specs|history|blobs", map[string]int32{RoleRelease: permC | permD}},
	{"specs/*|history/*|blobs/*", map[string]int32{RoleRelease: permW}},
	{"deploy", map[string]int32{RoleRelease: permC | permD, RoleCoordinator: permD}},
	{"deploy/*", map[string]int32{RoleRelease: permW, RoleCoordinator: permW, RoleAgent: permW}},
	{"bad", map[string]int32{RoleRelease: permC | permD, RoleAgent: permC}},
	{"bad/*", map[string]int32{RoleRelease: permW, RoleAgent: permW}},
	{"budget", map[string]int32{RoleRelease: permC | permD, RoleAgent: permC}},
	{"budget/*", map[string]int32{RoleRelease: permW, RoleAgent: permW}},
	{"current|staging|turns|members|down|up", map[string]int32{RoleRelease: permC | permD, RoleAgent: permC}},
	{"current/*|staging/*|turns/*|members/*|down/*|up/*", map[string]int32{RoleRelease: permC | permD, RoleAgent: permC | permD}},
	{"current/*/*|staging/*/*|turns/*/*|members/*/*|down/*/*|up/*/*", map[string]int32{RoleRelease: permW, RoleAgent: permW}},
	{"agents|progress", map[string]int32{RoleRelease: permC | permD, RoleAgent: permC | permD}},
	{"agents/*|progress/*", map[string]int32{RoleRelease: permW, RoleAgent: permW}},
	{"recovering", map[string]int32{RoleRelease: permC | permD, RoleAgent: permC}},
	{"recovering/*", map[string]int32{RoleRelease: permC | permD, RoleAgent: permC | permD}},
	{"recovering/*/*", map[string]int32{RoleRelease: permW, RoleAgent: permW}},
	{"election", map[string]int32{RoleCoordinator: permC}},
	{"election/*", map[string]int32{RoleCoordinator: permC | permD}},
	{"election/*/*", map[string]int32{RoleCoordinator: permW}},
}

func (r aclRule) matches(segs []string) bool {
	for _, alt := range strings.Split(r.pattern, "|") {
		var p []string
		if alt != "" {
			p = strings.Split(alt, "/")
		}
		if len(p) != len(segs) {
			continue
		}
		ok := true
		for i := range p {
			if p[i] != "*" && p[i] != segs[i] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// relSegments splits p below root into its segments; ok is false when p is
// not root or under it.
func relSegments(root, p string) ([]string, bool) {
	if p == root {
		return nil, true
	}
	rest, ok := strings.CutPrefix(p, root+"/")
	if !ok {
		return nil, false
	}
	return strings.Split(rest, "/"), true
}

// RolePerms returns each role's permissions on the node at p (p under
// root), from the role table: admin all, read for every role (and for
// anyone unless private). Nodes outside the table (a path dcroll never
// creates) are the admin's alone.
func RolePerms(root, p string) map[string]int32 {
	out := map[string]int32{RoleAdmin: zk.PermAll}
	for _, r := range []string{RoleRelease, RoleCoordinator, RoleAgent, RoleReader} {
		out[r] = permR
	}
	segs, ok := relSegments(root, p)
	if !ok {
		return out
	}
	for _, rule := range aclRules {
		if rule.matches(segs) {
			for role, perm := range rule.perms {
				out[role] |= perm
			}
			break
		}
	}
	return out
}

// ACL returns the ZooKeeper ACL of the node at p (under root) for table t:
// one digest entry per role with its permissions, plus world read unless
// the tree is private.
func (t *ACLTable) ACL(root, p string) []zk.ACL {
	perms := RolePerms(root, p)
	var acl []zk.ACL
	for _, role := range Roles {
		id, ok := t.Roles[role]
		if !ok || perms[role] == 0 {
			continue
		}
		acl = append(acl, zk.ACL{Perms: perms[role], Scheme: "digest", ID: id})
	}
	if !t.Private {
		acl = append(acl, zk.ACL{Perms: permR, Scheme: "world", ID: "anyone"})
	}
	return mergeACL(acl)
}

// mergeACL folds entries of the same id (two roles given one identity).
func mergeACL(acl []zk.ACL) []zk.ACL {
	by := map[string]int{}
	var out []zk.ACL
	for _, a := range acl {
		k := a.Scheme + ":" + a.ID
		if i, ok := by[k]; ok {
			out[i].Perms |= a.Perms
			continue
		}
		by[k] = len(out)
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Scheme+out[i].ID < out[j].Scheme+out[j].ID })
	return out
}

// PermString spells permissions as zkCli does: a subset of "cdrwa".
func PermString(p int32) string {
	var b strings.Builder
	for _, x := range []struct {
		bit int32
		c   byte
	}{{zk.PermCreate, 'c'}, {zk.PermDelete, 'd'}, {zk.PermRead, 'r'}, {zk.PermWrite, 'w'}, {zk.PermAdmin, 'a'}} {
		if p&x.bit != 0 {
			b.WriteByte(x.c)
		}
	}
	return b.String()
}

// loadACLTable reads the tree's identities (nil: an open tree, created
// before dcroll init or without it).
func (c *Conn) loadACLTable() (*ACLTable, error) {
	b, _, err := c.zk.Get(c.paths.ACL())
	if errors.Is(err, zk.ErrNoNode) || errors.Is(err, zk.ErrNoAuth) {
		return nil, nil // open tree; or private and we are nobody: we create nothing
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", c.paths.ACL(), err)
	}
	var t ACLTable
	if err := Decode(b, &t); err != nil {
		return nil, fmt.Errorf("read %s: %w", c.paths.ACL(), err)
	}
	return &t, nil
}

// ACLTable returns the identities read when the connection was made (nil:
// an open tree).
func (c *Conn) ACLTable() *ACLTable {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acl
}

// SetACLTable makes the connection create nodes for table t (dcroll init,
// right after writing it).
func (c *Conn) SetACLTable(t *ACLTable) {
	c.mu.Lock()
	c.acl = t
	c.mu.Unlock()
}

// ErrNotAuthorized wraps ZooKeeper's refusals of a write (NOAUTH).
var ErrNotAuthorized = errors.New("not authorized")

// IsNoAuth reports whether err is ZooKeeper refusing the client's identity.
func IsNoAuth(err error) bool {
	return errors.Is(err, zk.ErrNoAuth) || errors.Is(err, ErrNotAuthorized)
}

// maxSecureNodes bounds SecureTree's walk of an existing tree.
const maxSecureNodes = 2_000_000

// SecureTree makes the tree under the root a secured one for table t:
// it writes t at Paths.ACL, creates the skeleton and the night record if
// missing, and gives every node under the root the ACL of the role table
// (acl.go). The connection must be authenticated as t's admin (the first
// identity to secure a tree becomes its admin; afterwards only that
// identity may run it again). It is idempotent, and returns how many nodes
// it set an ACL on.
func (c *Conn) SecureTree(t *ACLTable) (int, error) {
	root := c.paths.Root
	if err := c.EnsurePath(root); err != nil {
		return 0, err
	}
	old, err := c.loadACLTable()
	if err != nil {
		return 0, err
	}
	if old != nil && old.Roles[RoleAdmin] != t.Roles[RoleAdmin] {
		admin, _, _ := strings.Cut(old.Roles[RoleAdmin], ":")
		return 0, fmt.Errorf("%s is already secured by admin %s: run dcroll init with that identity's credentials (--zk-auth)", root, admin)
	}
	t.At = time.Now().UTC()
	c.SetACLTable(t)
	if err := c.EnsureSkeleton(); err != nil {
		return 0, fmt.Errorf("secure %s: %w", root, err)
	}
	for p, v := range map[string]any{c.paths.Rollout(): &Rollout{State: NightIdle}} {
		if _, err := c.Create(p, MustEncode(v), 0); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return 0, fmt.Errorf("secure %s: %w", root, err)
		}
	}
	data := MustEncode(t)
	if _, err := c.zk.Create(c.paths.ACL(), data, 0, t.ACL(root, c.paths.ACL())); errors.Is(err, zk.ErrNodeExists) {
		_, err = c.zk.Set(c.paths.ACL(), data, -1)
		if err != nil {
			return 0, fmt.Errorf("secure %s: write %s: %w", root, c.paths.ACL(), err)
		}
	} else if err != nil {
		return 0, fmt.Errorf("secure %s: write %s: %w", root, c.paths.ACL(), err)
	}
	n := 0
	queue := []string{root}
	for len(queue) > 0 {
		if n >= maxSecureNodes {
			return n, fmt.Errorf("secure %s: more than %d nodes: not a dcroll tree?", root, maxSecureNodes)
		}
		p := queue[0]
		queue = queue[1:]
		if _, err := c.zk.SetACL(p, t.ACL(root, p), -1); err != nil {
			if errors.Is(err, zk.ErrNoNode) {
				continue // an ephemeral that went away meanwhile
			}
			return n, fmt.Errorf("secure %s: set the ACL of %s: %w", root, p, err)
		}
		n++
		kids, _, err := c.zk.Children(p)
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("secure %s: list %s: %w", root, p, err)
		}
		sort.Strings(kids)
		for _, k := range kids {
			queue = append(queue, p+"/"+k)
		}
	}
	return n, nil
}
